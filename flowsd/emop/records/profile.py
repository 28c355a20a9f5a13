"""Profile logs 1 and 2 (formats 03 and 04, SPEC §8): half-hourly cumulative registers.

The body after the format byte is the request's timestamp echoed (u32 big-endian), then
80 bytes of records. Like the reference, a fixed number of records is decoded (4 for log 1,
3 for single-element log 2, 2 for twin-element log 2); the bytes after them are kept in
``extra`` so that a body re-encodes byte for byte. Encoding takes as many records as fit in
the 80 bytes, so a meter's answer can carry the 5 log-1 records real meters send (the
fifth then decodes into ``extra``).
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Self

import msgspec

from flowsd.emop.errors import EncodeError
from flowsd.emop.records.base import Record, StatusFlags, need, pack
from flowsd.emop.units import from_emop_seconds

RECORDS_AREA = 80
PROFILE_LOG_1_RECORDS = 4
PROFILE_LOG_2_SINGLE_RECORDS = 3
PROFILE_LOG_2_TWIN_RECORDS = 2

_TIMESTAMP_BE = struct.Struct(">I")
_LOG1 = struct.Struct("<I2sII")
_LOG2_SINGLE = struct.Struct("<I2sIIII")
_LOG2_TWIN = struct.Struct("<I2sIIIIIII")


class ProfileStatus(StatusFlags, frozen=True):
    """Record status, 16 flags in wire order (byte 0 bit 7 first)."""

    unused_4: bool = False
    unused_5: bool = False
    unused_6: bool = False
    unused_7: bool = False
    unused_8: bool = False
    unused_9: bool = False
    unused_10: bool = False
    reset: bool = False
    valid_data: bool = False
    power_fail: bool = False
    minor_time_error: bool = False
    major_time_error: bool = False
    comms_error: bool = False
    unused_1: bool = False
    unused_2: bool = False
    unused_3: bool = False


VALID = ProfileStatus(valid_data=True)


class _HalfHour(msgspec.Struct, frozen=True):
    """A record stamped with the end of its half hour (seconds since 2000) and a status."""

    timestamp: int
    status: ProfileStatus

    @property
    def datetime(self) -> datetime:
        return from_emop_seconds(self.timestamp)


class ProfileLog1Record(_HalfHour, frozen=True):
    """One half hour of import registers (Wh, cumulative)."""

    import_a: int
    import_b: int


class ProfileLog2SingleRecord(_HalfHour, frozen=True):
    """One half hour of export/reactive registers and voltage, single-element layout."""

    active_export_a: int
    reactive_import_a: int
    reactive_export_a: int
    voltage: int

    is_twin_element = False


class ProfileLog2TwinRecord(_HalfHour, frozen=True):
    """One half hour of export/reactive registers and voltage, twin-element layout."""

    active_export_a: int
    reactive_import_a: int
    reactive_export_a: int
    voltage: int
    active_export_b: int
    reactive_import_b: int
    reactive_export_b: int

    is_twin_element = True


ProfileLog2Record = ProfileLog2SingleRecord | ProfileLog2TwinRecord


def _split_body(payload: bytes, record_size: int, count: int, what: str) -> tuple[int, bytes]:
    need(payload, 4 + record_size * count, what)
    return _TIMESTAMP_BE.unpack_from(payload)[0], bytes(payload[4 + record_size * count :])


def _padding(used: int, extra: bytes | None) -> bytes:
    return bytes(max(0, RECORDS_AREA - used)) if extra is None else extra


def _check_fits(records: tuple[object, ...], record_size: int, what: str) -> None:
    most = RECORDS_AREA // record_size
    if len(records) > most:
        raise EncodeError(f"{what} carries at most {most} records, got {len(records)}")


class ProfileLog1(Record, frozen=True):
    """A profile-log-1 response body: the echoed timestamp and its records (4 decoded)."""

    request_timestamp: int
    records: tuple[ProfileLog1Record, ...]
    extra: bytes = b""

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        size, count = _LOG1.size, PROFILE_LOG_1_RECORDS
        stamp, extra = _split_body(payload, size, count, "profile log 1")
        records = []
        for i in range(count):
            ts, status, a, b = _LOG1.unpack_from(payload, 4 + i * size)
            records.append(ProfileLog1Record(ts, ProfileStatus.from_bytes(status), a, b))
        return cls(stamp, tuple(records), extra)

    @classmethod
    def padded(
        cls,
        request_timestamp: int,
        records: tuple[ProfileLog1Record, ...],
        extra: bytes | None = None,
    ) -> Self:
        """A body whose record area is filled to 80 bytes with zeros (or with ``extra``)."""
        return cls(request_timestamp, records, _padding(_LOG1.size * len(records), extra))

    def encode(self) -> bytes:
        _check_fits(self.records, _LOG1.size, "profile log 1")
        out = bytearray(pack(_TIMESTAMP_BE, "request timestamp", self.request_timestamp))
        for r in self.records:
            status = r.status.to_bytes()
            out += pack(_LOG1, "profile log 1 record", r.timestamp, status, r.import_a, r.import_b)
        return bytes(out + self.extra)


class ProfileLog2(Record, frozen=True):
    """A profile-log-2 response body in the single- or twin-element layout."""

    is_twin_element: bool
    request_timestamp: int
    records: tuple[ProfileLog2Record, ...]
    extra: bytes = b""

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls.decode_layout(payload, twin=False)

    @classmethod
    def decode_layout(cls, payload: bytes, *, twin: bool) -> Self:
        layout = _LOG2_TWIN if twin else _LOG2_SINGLE
        count = PROFILE_LOG_2_TWIN_RECORDS if twin else PROFILE_LOG_2_SINGLE_RECORDS
        stamp, extra = _split_body(payload, layout.size, count, "profile log 2")
        records: list[ProfileLog2Record] = []
        for i in range(count):
            ts, status, *values = layout.unpack_from(payload, 4 + i * layout.size)
            record_type = ProfileLog2TwinRecord if twin else ProfileLog2SingleRecord
            records.append(record_type(ts, ProfileStatus.from_bytes(status), *values))
        return cls(twin, stamp, tuple(records), extra)

    @classmethod
    def padded(
        cls,
        request_timestamp: int,
        records: tuple[ProfileLog2Record, ...],
        *,
        twin: bool,
        extra: bytes | None = None,
    ) -> Self:
        """A body whose record area is filled to 80 bytes with zeros (or with ``extra``)."""
        layout = _LOG2_TWIN if twin else _LOG2_SINGLE
        return cls(twin, request_timestamp, records, _padding(layout.size * len(records), extra))

    def encode(self) -> bytes:
        twin = self.is_twin_element
        layout = _LOG2_TWIN if twin else _LOG2_SINGLE
        _check_fits(self.records, layout.size, "profile log 2")
        out = bytearray(pack(_TIMESTAMP_BE, "request timestamp", self.request_timestamp))
        for r in self.records:
            if r.is_twin_element != twin:
                raise EncodeError("profile log 2: records do not match the element layout")
            values = [r.active_export_a, r.reactive_import_a, r.reactive_export_a, r.voltage]
            if isinstance(r, ProfileLog2TwinRecord):
                values += [r.active_export_b, r.reactive_import_b, r.reactive_export_b]
            status = r.status.to_bytes()
            out += pack(layout, "profile log 2 record", r.timestamp, status, *values)
        return bytes(out + self.extra)
