"""Tariff records: plain u32/u8 values, threshold mask and values, time switches.

Prices, charges and credit amounts are :class:`U32Value` in 1e-5 GBP; which objects are
money is recorded in the catalogue (:class:`flowsd.emop.objects.Quantity`).
"""

from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal
from typing import Self

from flowsd.emop.errors import EncodeError
from flowsd.emop.records.base import (
    PackedRecord,
    Record,
    bits_msb_first,
    byte_from_bits_msb_first,
    need,
)
from flowsd.emop.units import from_emop_seconds, gbp

_U32 = struct.Struct("<I")
_U8 = struct.Struct("<B")
_THRESHOLDS = struct.Struct("<7H")
TIME_SWITCHES_LENGTH = 80


class U32Value(PackedRecord, frozen=True):
    """A u32le value: a price (1e-5 GBP), a timestamp or a register, per the object."""

    value: int
    layout, what = _U32, "u32 value"

    @property
    def gbp(self) -> Decimal:
        return gbp(self.value)

    @property
    def datetime(self) -> datetime:
        return from_emop_seconds(self.value)


class U8Value(PackedRecord, frozen=True):
    """A u8 value (rate and price indices, TOU flag)."""

    value: int
    layout, what = _U8, "u8 value"


class ThresholdMask(Record, frozen=True):
    """Threshold mask: one byte, bit 7 = rate 8 ... bit 0 = rate 1."""

    rate8: bool
    rate7: bool
    rate6: bool
    rate5: bool
    rate4: bool
    rate3: bool
    rate2: bool
    rate1: bool

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, 1, "threshold mask")
        return cls(*bits_msb_first(payload[0]))

    def encode(self) -> bytes:
        bits = [self.rate8, self.rate7, self.rate6, self.rate5]
        bits += [self.rate4, self.rate3, self.rate2, self.rate1]
        return bytes((byte_from_bits_msb_first(bits),))


class ThresholdValues(PackedRecord, frozen=True):
    """Block thresholds th1..th7, u16le each (unit not documented)."""

    th1: int
    th2: int
    th3: int
    th4: int
    th5: int
    th6: int
    th7: int
    layout, what = _THRESHOLDS, "threshold values"


class TimeSwitches(Record, frozen=True):
    """Tariff time switches of one element: 80 opaque bytes (all zero = all switches off)."""

    switch_settings: bytes

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        need(payload, TIME_SWITCHES_LENGTH, "time switches")
        return cls(bytes(payload[:TIME_SWITCHES_LENGTH]))

    def encode(self) -> bytes:
        if len(self.switch_settings) != TIME_SWITCHES_LENGTH:
            raise EncodeError(f"time switches are {TIME_SWITCHES_LENGTH} bytes")
        return self.switch_settings
