"""Writes a meter accepts: clock set, top-up token, flags, settings and the future tariff.

Each returns the NAK code to answer (0 = accepted); accepted writes land in the meter's
overrides, from where the model reads them on every later request. A payload must be
exactly as long as the object's value (NAK 3 otherwise) and is decoded with the codec's
records.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from flowsd.emop import NakCode, PayloadError, object_id
from flowsd.emop.objects import FLAG_OBJECT_IDS
from flowsd.emop.records import ClockTime, ThresholdValues, U32Value
from flowsd.sim.clock import to_emop
from flowsd.sim.events import EventId
from flowsd.sim.model import MeterModel
from flowsd.sim.overrides import ClockSet, Credit
from flowsd.sim.readers import (
    FUTURE_B_BANK,
    FUTURE_FIELD_BY_ID,
    FUTURE_PRICE_BANK,
    SINGLE_PHASE_READERS,
    THREE_PHASE_READERS,
)
from flowsd.sim.state import FleetState
from flowsd.sim.tariffs import write_future_field
from flowsd.sim.tokens import token_value

_FUTURE_MASK = object_id("tariff_future_threshold_mask")
_FUTURE_VALUES = object_id("tariff_future_threshold_values")
_FUTURE_TOU_FLAG = object_id("tariff_future_tou_flag")
_FUTURE_ACTIVATION = object_id("tariff_future_activation_datetime")
_CLOCK = object_id("time")
_TOKEN = object_id("prepay_token_send")
_BACKLIGHT = object_id("backlight")
CLOCK_LENGTH = 7
U32_LENGTH = 4
THRESHOLDS_LENGTH = 14
_SETTINGS = {
    object_id("load_switch"): 1,
    object_id("decimal_places_displayed_in_energy_registers"): 1,
    object_id("tariff_time_switch_element_a_or_single"): 80,
    object_id("tariff_time_switch_element_b"): 80,
}


class WriteTarget(NamedTuple):
    """The meter a write is for."""

    state: FleetState
    meter: int
    model: MeterModel


def apply_write(target: WriteTarget, oid: int, payload: bytes, now: float) -> int:
    """Apply a write; the NAK code (0 = accepted)."""
    state, index, model = target
    three_phase = model.identity.hardware.three_phase
    readers = THREE_PHASE_READERS if three_phase else SINGLE_PHASE_READERS
    if oid not in readers:
        return NakCode.OBJECT_NOT_RECOGNISED
    if oid == _CLOCK:
        return _write_clock(state, index, payload, now)
    if oid == _BACKLIGHT:
        if len(payload) != 1:
            return NakCode.FRAME_LENGTH_INCORRECT
        state.writable(index).settings[oid] = payload
        return NakCode.OK
    if three_phase:
        return NakCode.SECURITY_NOT_GRANTED
    if oid == _TOKEN:
        return _apply_token(state, index, payload, now)
    if oid in FLAG_OBJECT_IDS:
        if len(payload) != 1:
            return NakCode.FRAME_LENGTH_INCORRECT
        state.writable(index).flags[oid] = payload[0]
        return NakCode.OK
    if oid in _SETTINGS:
        if len(payload) != _SETTINGS[oid]:
            return NakCode.FRAME_LENGTH_INCORRECT
        state.writable(index).settings[oid] = payload
        return NakCode.OK
    return _write_future_tariff(target, oid, payload, now)


def _write_clock(state: FleetState, index: int, payload: bytes, now: float) -> int:
    if len(payload) != CLOCK_LENGTH:
        return NakCode.FRAME_LENGTH_INCORRECT
    try:
        moment = ClockTime.decode(payload).to_datetime()
    except PayloadError:  # not a calendar date and time
        return NakCode.FORMAT_ERROR
    state.writable(index).clock_set = ClockSet(set_at=now, value=to_emop(moment))
    return NakCode.OK


def _apply_token(state: FleetState, index: int, payload: bytes, now: float) -> int:
    value = token_value(payload)
    overrides = state.writable(index)
    token = payload.decode("ascii", "replace")
    if value is None or any(c.token == token for c in overrides.tokens):
        return NakCode.SECURITY_NOT_GRANTED
    overrides.tokens.append(Credit(time=now, amount=value, token=token))
    overrides.events.append((int(now), EventId.TOKEN_APPLIED, 0))
    return NakCode.OK


def _write_future_tariff(target: WriteTarget, oid: int, payload: bytes, now: float) -> int:
    state, index, model = target
    change: dict[str, object]
    if oid in FUTURE_FIELD_BY_ID or oid == _FUTURE_ACTIVATION:
        if len(payload) != U32_LENGTH:
            return NakCode.FRAME_LENGTH_INCORRECT
        value = U32Value.decode(payload).value
        change = (
            {"activation": value} if oid == _FUTURE_ACTIVATION else {FUTURE_FIELD_BY_ID[oid]: value}
        )
    elif oid in (_FUTURE_MASK, _FUTURE_TOU_FLAG):
        if len(payload) != 1:
            return NakCode.FRAME_LENGTH_INCORRECT
        change = {"threshold_mask" if oid == _FUTURE_MASK else "tou_flag": payload[0]}
    elif oid == _FUTURE_VALUES:
        if len(payload) != THRESHOLDS_LENGTH:
            return NakCode.FRAME_LENGTH_INCORRECT
        values = ThresholdValues.decode(payload)
        change = {"threshold_values": msgspec.structs.astuple(values)}
    elif oid in FUTURE_PRICE_BANK or oid in FUTURE_B_BANK:
        if len(payload) != U32_LENGTH:
            return NakCode.FRAME_LENGTH_INCORRECT
        current = dict(model.future_tariff(now)[1].other_prices)
        current[oid] = U32Value.decode(payload).value
        change = {"other_prices": tuple(sorted(current.items()))}
    else:
        return NakCode.SECURITY_NOT_GRANTED
    overrides = state.writable(index)
    view = state.model(index).tariffs
    write_future_field(view, overrides.tariffs, now, change)
    return NakCode.OK
