"""Conversions between events and their stored forms (table columns, spill records)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pgproto.pgproto import UUID as FastUUID  # noqa: N811 (a class)

from flowsd.events.types import (
    AnyBody,
    Event,
    EventBody,
    MeterCache,
    MeterLogEntry,
    RecordedEvent,
    UnknownBody,
    body_class_for,
    epoch_microseconds,
    idempotency_key_bytes,
)

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(Event)
_body_decoders: dict[type[EventBody], msgspec.json.Decoder[Any]] = {}


def payload_json(body: EventBody) -> str | None:
    """The ``payload`` column: the body's JSON, or None for meter-native entries."""
    if isinstance(body, MeterLogEntry):
        return None
    return _json_encoder.encode(body).decode()


def event_set_of(body: EventBody) -> int | None:
    return body.event_set if isinstance(body, MeterLogEntry) else None


# One staged row: ordinal, meter, observed, type, event_set, read_at, payload, key.
StagedRow = tuple[int, UUID, datetime, int, int | None, datetime | None, str | None, UUID]


def to_staged_rows(events: Sequence[Event]) -> list[StagedRow]:
    """A batch as rows for the unnest insert, in order, without in-batch duplicates.

    ``ordinal`` is the event's index in ``events``; an event whose key appeared earlier in the
    batch is left out.
    """
    rows: list[StagedRow] = []
    seen: set[UUID] = set()
    encode = _json_encoder.encode
    for ordinal, event in enumerate(events):
        body = event.body
        key = event.idempotency_key()
        if key in seen:
            continue
        seen.add(key)
        if isinstance(body, MeterLogEntry):
            type_id, event_set, payload = body.emlite_type_id, body.event_set, None
        else:
            type_id, event_set, payload = body.TYPE_ID, None, encode(body).decode()
        rows.append(
            (
                ordinal,
                event.meter_id,
                event.observed_at,
                type_id,
                event_set,
                event.read_at,
                payload,
                key,
            )
        )
    return rows


# --- binary COPY into the log -------------------------------------------------------------
#
# PostgreSQL's binary COPY format, written here rather than by asyncpg's record encoder:
# that one converts every datetime through astimezone() (half of the Python time of an
# append), while the microsecond counts are computed here anyway, for the keys.

COPY_COLUMNS = (
    "meter_id",
    "timestamp",
    "event_type",
    "event_set",
    "read_at",
    "payload",
    "idempotency_key",
)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
COPY_TRAILER = b"\xff\xff"
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, the zero of timestamptz
_NULL = b"\xff\xff\xff\xff"
# Field count and the length of meter_id; then (length, value) of timestamp, event_type and
# event_set, or of the first two and event_set's NULL.
_FIELDS_AND_UUID_LENGTH = struct.pack(">hi", len(COPY_COLUMNS), 16)
_MIDDLE = struct.Struct(">iqiiii").pack
_MIDDLE_NO_SET = struct.Struct(">iqiii").pack
_TIMESTAMP = struct.Struct(">iq").pack
_JSONB_HEADER = struct.Struct(">ib").pack  # length, then jsonb's binary format version 1
_KEY_HEADER = b"\x00\x00\x00\x10"


def _row_start_of(meter_id: UUID) -> bytes:
    """A row's field count and its ``meter_id`` field."""
    return _FIELDS_AND_UUID_LENGTH + meter_id.bytes


_row_start: Callable[[UUID], bytes] = MeterCache(_row_start_of).__getitem__


@dataclass(slots=True)
class KeyedBatch:
    """A batch's keys, without in-batch duplicates: row ``i`` is ``events[ordinals[i]]``, its
    key is ``keys[i]`` (``key_bytes[i]`` its 16 bytes) and its observed time
    ``observed_us[i]`` (microseconds since 1970)."""

    events: Sequence[Event]
    ordinals: list[int] = field(default_factory=list)
    keys: list[UUID] = field(default_factory=list)
    key_bytes: list[bytes] = field(default_factory=list)
    observed_us: list[int] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)

    def key(self, start: int, stop: int) -> int:
        """Add the rows of ``events[start:stop]`` whose key is not in the batch yet, in order
        (a batch may be keyed in parts); the number of rows after them."""
        part = self.events[start:stop]
        keys: list[bytes] = []
        observed: list[int] = []
        idempotency_key_bytes(
            ((e.meter_id, (b := e.body).type_id(), e.observed_at, b.discriminator()) for e in part),
            keys,
            observed,
        )
        seen = self._seen
        fresh = set(keys)
        if len(fresh) == len(keys) and seen.isdisjoint(fresh):  # all new: the usual case
            seen |= fresh
            self.ordinals.extend(range(start, start + len(keys)))
            self.keys.extend(map(FastUUID, keys))
            self.key_bytes.extend(keys)
            self.observed_us.extend(observed)
            return len(self.ordinals)
        for offset, key in enumerate(keys):
            if key in seen:
                continue
            seen.add(key)
            self.ordinals.append(start + offset)
            self.keys.append(FastUUID(key))
            self.key_bytes.append(key)
            self.observed_us.append(observed[offset])
        return len(self.ordinals)

    def copy_data(self, skip: frozenset[int], rows: int = 400) -> Iterator[bytes]:
        """Binary COPY data (columns :data:`COPY_COLUMNS`) of every row whose index is not in
        ``skip``, in pieces of about ``rows`` rows (about 64 kB), encoded as they are asked for (so
        that encoding overlaps the server's work on the previous piece). Naive datetimes are
        taken as UTC, as in the keys."""
        encode = _json_encoder.encode
        events = self.events
        observed_us = self.observed_us
        key_bytes = self.key_bytes
        pending = [COPY_HEADER]
        add = pending.append
        for index, ordinal in enumerate(self.ordinals):
            if index in skip:
                continue
            event = events[ordinal]
            body = event.body
            observed = observed_us[index] - _POSTGRES_EPOCH_US
            read_at = event.read_at
            if read_at is None:
                read = _NULL
            elif read_at is event.observed_at:
                read = _TIMESTAMP(8, observed)
            else:
                read = _TIMESTAMP(8, epoch_microseconds(read_at) - _POSTGRES_EPOCH_US)
            add(_row_start(event.meter_id))
            if isinstance(body, MeterLogEntry):
                add(_MIDDLE(8, observed, 4, body.emlite_type_id, 4, body.event_set))
                add(read)
                add(_NULL)
            else:
                add(_MIDDLE_NO_SET(8, observed, 4, body.TYPE_ID, -1))
                add(read)
                document = encode(body)
                add(_JSONB_HEADER(len(document) + 1, 1))
                add(document)
            add(_KEY_HEADER)
            add(key_bytes[index])
            if len(pending) >= rows * 7:  # 6 or 7 parts a row
                yield b"".join(pending)
                pending.clear()
        add(COPY_TRAILER)
        yield b"".join(pending)


def key_batch(events: Sequence[Event]) -> KeyedBatch:
    """The keys of ``events``; an event whose key appeared earlier in the batch is left out."""
    batch = KeyedBatch(events)
    batch.key(0, len(events))
    return batch


def decode_body(
    event_type: int, event_set: int | None, payload: str | None
) -> AnyBody | UnknownBody:
    """The body of a stored event; :class:`UnknownBody` for a type this version does not know
    and for a payload that does not decode as its type (every reader of the log, projectors
    included, takes it so: an unknown body is skipped, never a crash)."""
    cls = body_class_for(event_type)
    if cls is MeterLogEntry:
        return MeterLogEntry(emlite_type_id=event_type, event_set=event_set or 0)
    if cls is None or payload is None:
        return UnknownBody(
            type_id=event_type, payload=None if payload is None else payload.encode()
        )
    try:
        return decode_payload(cls, payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return UnknownBody(type_id=event_type, payload=payload.encode())


def decode_payload(cls: type[EventBody], payload: str) -> AnyBody:
    """The stored JSON ``payload`` as a ``cls`` body; raises msgspec's ``DecodeError`` or
    ``ValidationError`` when it is not one (:func:`decode_body` reads that as unknown)."""
    decoder = _body_decoders.get(cls)
    if decoder is None:
        decoder = _body_decoders[cls] = msgspec.json.Decoder(cls)
    body: AnyBody = decoder.decode(payload)
    return body


def decode_row(row: asyncpg.Record) -> RecordedEvent:
    """A ``meter_event_log`` row (columns as selected by :mod:`flowsd.events.reader`)."""
    return RecordedEvent(
        position=row["position"],
        recorded_at=row["recorded_at"],
        meter_id=row["meter_id"],
        observed_at=row["timestamp"],
        read_at=row["read_at"],
        body=decode_body(row["event_type"], row["event_set"], row["payload"]),
        idempotency_key=row["idempotency_key"],
    )


def encode_for_spill(event: Event) -> bytes:
    return _msgpack_encoder.encode(event)


def decode_from_spill(data: bytes) -> Event:
    return _event_decoder.decode(data)
