"""Conversions between events and their stored forms (table columns, spill records)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from flowsd.events.types import (
    AnyBody,
    Event,
    EventBody,
    MeterLogEntry,
    RecordedEvent,
    UnknownBody,
    body_class_for,
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


class EventColumns(msgspec.Struct, frozen=True):
    """A batch as column arrays, the shape of the append statement's parameters."""

    meter_ids: list[UUID]
    observed_at: list[datetime]
    event_types: list[int]
    event_sets: list[int | None]
    read_at: list[datetime | None]
    payloads: list[str | None]
    keys: list[UUID]


def to_columns(events: Sequence[Event]) -> EventColumns:
    return EventColumns(
        meter_ids=[e.meter_id for e in events],
        observed_at=[e.observed_at for e in events],
        event_types=[e.type_id for e in events],
        event_sets=[event_set_of(e.body) for e in events],
        read_at=[e.read_at for e in events],
        payloads=[payload_json(e.body) for e in events],
        keys=[e.idempotency_key() for e in events],
    )


# One staged row: ordinal, meter, observed, type, event_set, read_at, payload, key.
StagedRow = tuple[int, UUID, datetime, int, int | None, datetime | None, str | None, UUID]


def to_staged_rows(events: Sequence[Event]) -> list[StagedRow]:
    """A batch as rows for the append's staging table, in order, without in-batch duplicates.

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


def decode_body(
    event_type: int, event_set: int | None, payload: str | None
) -> AnyBody | UnknownBody:
    """The body of a stored event; :class:`UnknownBody` for a type this version does not know."""
    cls = body_class_for(event_type)
    if cls is MeterLogEntry:
        return MeterLogEntry(emlite_type_id=event_type, event_set=event_set or 0)
    if cls is None or payload is None:
        return UnknownBody(
            type_id=event_type, payload=None if payload is None else payload.encode()
        )
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
