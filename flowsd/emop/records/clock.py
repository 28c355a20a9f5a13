"""The meter clock (``time``, SPEC §6.4): 7 bytes, read and written in the same layout."""

from __future__ import annotations

import enum
import struct
from datetime import UTC, datetime
from typing import Self

from flowsd.emop.errors import EncodeError, PayloadError
from flowsd.emop.records.base import Record, enum_or_int, pack, unpack

_LAYOUT = struct.Struct("<7B")


class DayOfWeek(enum.IntEnum):
    """Sunday is 0 on the wire."""

    SUNDAY = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6


class ClockTime(Record, frozen=True):
    """Year since 2000, month, day of month, hour, minute, second, day of week."""

    year: int
    month: int
    date: int
    hour: int
    minute: int
    second: int
    day_of_week: DayOfWeek | int

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        year, month, date, hour, minute, second, dow = unpack(_LAYOUT, payload, "clock")
        return cls(year, month, date, hour, minute, second, enum_or_int(DayOfWeek, dow))

    def encode(self) -> bytes:
        fields = (self.year, self.month, self.date, self.hour, self.minute, self.second)
        return pack(_LAYOUT, "clock", *fields, int(self.day_of_week))

    @classmethod
    def from_datetime(cls, moment: datetime) -> Self:
        """The clock-set payload for an aware datetime, converted to UTC (naive refused)."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise EncodeError("naive datetime: give a timezone-aware datetime")
        utc = moment.astimezone(UTC)
        if not 2000 <= utc.year <= 2255:
            raise EncodeError(f"year {utc.year} cannot be sent to a meter")
        sunday_first = (utc.weekday() + 1) % 7
        return cls(
            utc.year - 2000,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            DayOfWeek(sunday_first),
        )

    def to_datetime(self) -> datetime:
        """The clock as an aware UTC datetime (the day of week is ignored, as by the meter)."""
        try:
            return datetime(
                2000 + self.year,
                self.month,
                self.date,
                self.hour,
                self.minute,
                self.second,
                tzinfo=UTC,
            )
        except ValueError as exc:
            raise PayloadError(f"meter clock is not a valid date/time: {exc}") from None
