"""The writes of SPEC §7 as ready-made requests: future tariffs, top-up, clock, flags, settings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flowsd.emop.errors import EncodeError
from flowsd.emop.messages import WriteRequest
from flowsd.emop.objects import Layout, by_name, object_id
from flowsd.emop.records import (
    Backlight,
    BacklightSetting,
    ClockTime,
    Flag,
    LoadSwitch,
    LoadSwitchSetting,
    ThresholdMask,
    ThresholdValues,
    TimeSwitches,
    TopUpToken,
    U8Value,
    U32Value,
)
from flowsd.emop.records.tariffs import TIME_SWITCHES_LENGTH
from flowsd.emop.units import gbp_to_raw, to_emop_seconds

MAX_UNIT_PRICE = Decimal("1.00")
DEFAULT_EMERGENCY_CREDIT = Decimal("15.00")
DEFAULT_ECREDIT_AVAILABILITY = Decimal("10.00")
DEFAULT_DEBT_RECOVERY_RATE = Decimal("0.30")


def _write(name: str, record: U32Value | U8Value | ThresholdMask | ThresholdValues) -> WriteRequest:
    return WriteRequest(object_id(name), record.encode())


def _price(amount: Decimal | str, what: str) -> int:
    value = Decimal(amount)
    exponent = value.as_tuple().exponent
    if value > MAX_UNIT_PRICE or (isinstance(exponent, int) and exponent < -5):
        raise EncodeError(f"{what} must be at most £1.00 with at most 5 decimal places: {amount}")
    return gbp_to_raw(value)


def future_tariff_writes(
    *,
    unit_rate: Decimal | str,
    standing_charge: Decimal | str,
    activation: datetime,
    emergency_credit: Decimal | str = DEFAULT_EMERGENCY_CREDIT,
    ecredit_availability: Decimal | str = DEFAULT_ECREDIT_AVAILABILITY,
    debt_recovery_rate: Decimal | str = DEFAULT_DEBT_RECOVERY_RATE,
) -> list[WriteRequest]:
    """The 11 writes that set a future tariff, in the order the reference sends them."""
    rate = _price(unit_rate, "unit rate")
    standing = _price(standing_charge, "standing charge")
    no_mask = ThresholdMask(False, False, False, False, False, False, False, False)
    return [
        _write("tariff_future_threshold_mask", no_mask),
        _write("tariff_future_threshold_values", ThresholdValues(0, 0, 0, 0, 0, 0, 0)),
        _write("tariff_future_tou_flag", U8Value(0)),
        _write("tariff_future_block_8_rate_1", U32Value(rate)),
        _write("tariff_future_element_b_tou_rate_1", U32Value(rate)),
        _write("tariff_future_prepayment_emergency_credit", U32Value(gbp_to_raw(emergency_credit))),
        _write(
            "tariff_future_prepayment_ecredit_availability",
            U32Value(gbp_to_raw(ecredit_availability)),
        ),
        _write(
            "tariff_future_prepayment_debt_recovery_rate", U32Value(gbp_to_raw(debt_recovery_rate))
        ),
        _write("tariff_future_gas", U32Value(0)),
        _write("tariff_future_standing_charge", U32Value(standing)),
        _write("tariff_future_activation_datetime", U32Value(to_emop_seconds(activation))),
    ]


def top_up(token: str) -> WriteRequest:
    """Send a top-up token (ASCII digits)."""
    return WriteRequest(object_id("prepay_token_send"), TopUpToken(token).encode())


def set_clock(now: datetime) -> WriteRequest:
    """Set the meter clock to ``now`` (aware; sent as UTC calendar fields)."""
    return WriteRequest(object_id("time"), ClockTime.from_datetime(now).encode())


def set_flag(name: str, enabled: bool) -> WriteRequest:
    """Write one of the four flags (e.g. ``prepay_enabled_flag``) as 01 / 00."""
    info = by_name(name)
    if info.layout is not Layout.FLAG:
        raise EncodeError(f"{name} is not a flag object")
    return WriteRequest(info.id, Flag(1 if enabled else 0).encode())


def set_backlight(setting: BacklightSetting | int) -> WriteRequest:
    return WriteRequest(object_id("backlight"), Backlight(setting).encode())


def set_load_switch(setting: LoadSwitchSetting | int) -> WriteRequest:
    return WriteRequest(object_id("load_switch"), LoadSwitch(setting).encode())


def time_switches_off(element: str = "a") -> WriteRequest:
    """Turn all tariff time switches of element ``a`` (or single) or ``b`` off (80 zeros)."""
    name = {
        "a": "tariff_time_switch_element_a_or_single",
        "b": "tariff_time_switch_element_b",
    }.get(element)
    if name is None:
        raise EncodeError(f"element is 'a' or 'b', not {element!r}")
    return WriteRequest(object_id(name), TimeSwitches(bytes(TIME_SWITCHES_LENGTH)).encode())
