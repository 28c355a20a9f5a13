"""Conversions between wire integers and the values operators see (SPEC §1 unit table).

Money is an integer count of 1e-5 GBP on the wire and a :class:`~decimal.Decimal` in GBP here;
energy registers are Wh on the wire and kWh here; timestamps are seconds since
2000-01-01T00:00:00Z on the wire and aware UTC datetimes here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from flowsd.emop.errors import EncodeError, PayloadError

EMOP_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MONEY_SCALE = 100_000
U32_MAX = 0xFFFF_FFFF


def gbp(raw: int) -> Decimal:
    """1e-5 GBP units as GBP: 1523456 -> Decimal('15.23456'), 1500000 -> Decimal('15')."""
    return Decimal(raw) / MONEY_SCALE


def gbp_to_raw(amount: Decimal | str | int) -> int:
    """GBP as an unsigned wire amount, truncated to 1e-5 GBP as the reference does."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, ValueError, TypeError):
        raise EncodeError(f"not an amount of money: {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise EncodeError(f"amount must be a non-negative number of GBP: {amount!r}")
    raw = int(value * MONEY_SCALE)
    if raw > U32_MAX:
        raise EncodeError(f"amount too large for the wire: {amount!r}")
    return raw


def kwh(raw_wh: int, divisor: int = 1000) -> float:
    """A Wh register as kWh (use ``divisor=10000`` for P1.cx three-phase registers)."""
    return raw_wh / divisor


def volts(raw_decivolts: int) -> float:
    """A 0.1 V reading as volts (2398 -> 239.8)."""
    return raw_decivolts / 10


def from_emop_seconds(seconds: int) -> datetime:
    """Seconds since 2000-01-01 UTC as an aware UTC datetime."""
    return EMOP_EPOCH + timedelta(seconds=seconds)


def to_emop_seconds(moment: datetime) -> int:
    """An aware datetime as whole seconds since 2000-01-01 UTC (naive datetimes refused)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EncodeError("naive datetime: give a timezone-aware datetime")
    seconds = int((moment - EMOP_EPOCH).total_seconds())
    if not 0 <= seconds <= U32_MAX:
        raise EncodeError(f"{moment.isoformat()} is outside the u32 range of EMOP time")
    return seconds


def ascii_text(payload: bytes, what: str) -> str:
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError:
        raise PayloadError(f"{what} is not ASCII: {payload.hex()}") from None


def three_phase_kw(raw: int, *, ct_operated: bool) -> float:
    """A three-phase interval channel as kW: W on P1.ax, 0.1 W on P1.cx (CT operated)."""
    return raw / (10_000 if ct_operated else 1000)


def three_phase_kwh(raw: int, *, ct_operated: bool) -> float:
    """A three-phase total register as kWh: Wh on P1.ax, 0.1 Wh on P1.cx (CT operated)."""
    return raw / (10_000 if ct_operated else 1000)
