"""What each hardware kind answers to a default-format read: one payload builder per object.

Payloads are packed here from the SPEC's layouts rather than with the codec's records, so
the tests that decode them with the codec check two independent readings of the SPEC
against each other. A reader returns the payload bytes, or an int: the NAK code to answer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from flowsd.emop import NakCode, object_id
from flowsd.sim.clock import from_emop
from flowsd.sim.events import Event
from flowsd.sim.model import MeterModel
from flowsd.sim.tariffs import Tariff

Payload = bytes | int  # bytes to send, or a NAK code
Reader = Callable[[MeterModel, float], Payload]

_EVENT = struct.Struct("<IBB")


def _u8(v: int) -> bytes:
    return bytes((v & 0xFF,))


def _u16(v: int) -> bytes:
    return (min(max(v, 0), 0xFFFF)).to_bytes(2, "little")


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _s32(v: int) -> bytes:
    return max(-(2**31), min(2**31 - 1, v)).to_bytes(4, "little", signed=True)


def clock_payload(meter_time: float) -> bytes:
    moment = from_emop(int(meter_time))
    return bytes(
        (moment.year - 2000, moment.month, moment.day, moment.hour, moment.minute,
         moment.second, (moment.weekday() + 1) % 7)
    )  # fmt: skip


def _registers(m: MeterModel, t: float, element: str) -> bytes:
    r = m.element(element, t)
    values = (r.import_active, r.export_active, r.import_reactive, r.export_reactive)
    return b"".join(u32(v) for v in values)


def _transaction_details(m: MeterModel, t: float) -> bytes:
    done = m.transactions(t)
    if not done:
        return bytes(16)
    last = done[-1]
    return (len(done) - 1).to_bytes(8, "little") + u32(int(last.time)) + _s32(last.amount)


def _transaction_count(m: MeterModel, t: float) -> bytes:
    return _u16(max(0, len(m.transactions(t)) - 1))


def _thresholds(tariff: Tariff) -> bytes:
    return b"".join(_u16(v) for v in tariff.threshold_values)


# Tariff fields readable as u32, by (active object, future object).
_TARIFF_U32 = {
    "standing_charge": ("tariff_active_standing_charge", "tariff_future_standing_charge"),
    "unit_rate_a": ("tariff_active_block_8_rate_1", "tariff_future_block_8_rate_1"),
    "unit_rate_b": ("tariff_active_element_b_tou_rate_1", "tariff_future_element_b_tou_rate_1"),
    "emergency_credit": (
        "tariff_active_prepayment_emergency_credit",
        "tariff_future_prepayment_emergency_credit",
    ),
    "ecredit_availability": (
        "tariff_active_prepayment_ecredit_availability",
        "tariff_future_prepayment_ecredit_availability",
    ),
    "debt_recovery_rate": (
        "tariff_active_prepayment_debt_recovery_rate",
        "tariff_future_prepayment_debt_recovery_rate",
    ),
    "gas": ("tariff_active_gas", "tariff_future_gas"),
}
FUTURE_FIELD_BY_ID = {object_id(future): name for name, (_, future) in _TARIFF_U32.items()}
_ACTIVE_PRICE_BANK = range(0xFFF901, 0xFFF941)
FUTURE_PRICE_BANK = range(0xFFF801, 0xFFF841)
_ACTIVE_B_BANK = range(0xFFF701, 0xFFF705)
FUTURE_B_BANK = range(0xFFF601, 0xFFF605)


def _tariff_field(active: bool, name: str) -> Reader:
    def read(m: MeterModel, t: float) -> Payload:
        tariff = m.active_tariff(t) if active else m.future_tariff(t)[1]
        return u32(int(getattr(tariff, name)))

    return read


def _bank_price(active: bool, oid: int) -> Reader:
    def read(m: MeterModel, t: float) -> Payload:
        tariff = m.active_tariff(t) if active else m.future_tariff(t)[1]
        return u32(tariff.price(oid - (0x100 if active else 0)))

    return read


def _flag(oid: int, default: Callable[[MeterModel], int]) -> Reader:
    return lambda m, t: _u8(m.flag(oid, default(m)))


def _setting(oid: int, default: bytes) -> Reader:
    return lambda m, t: m.setting(oid, default)


def _raw_demand(channel: int) -> Reader:
    """The last completed half hour's average demand on one channel (quadrants read 0)."""

    def read(m: MeterModel, t: float) -> Payload:
        start = int(t // 1800) * 1800 - 1800
        _, found = m.three_phase_intervals(start, start + 1, t, 1)
        if not found or channel >= 4:
            return u32(0)
        d = found[0]
        return u32(
            (d.active_import, d.active_export, d.reactive_import, d.reactive_export)[channel]
        )

    return read


def _hardware_config(m: MeterModel) -> bytes:
    ax = m.identity.hardware.value == "P1.ax"
    return bytes(((0x80 if ax else 0x00) | 0x3C, 0, 0, 0))


def _common_readers() -> dict[int, Reader]:
    oid = object_id
    return {
        oid("firmware_version"): lambda m, t: m.identity.firmware,
        oid("time"): lambda m, t: clock_payload(m.clock(t)),
        oid("csq_net_op"): lambda m, t: _u8((m.identity.network_operator << 5) | m.csq(t)),
        oid("backlight"): _setting(oid("backlight"), b"\x00"),
        oid("instantaneous_active_power"): lambda m, t: _u16(m.power("A", t) + m.power("B", t)),
        oid("instantaneous_reactive_power"): lambda m, t: _u16(m.power("A", t) // 8),
        oid("instantaneous_current"): lambda m, t: _u16(m.power("A", t) * 1000 // 240),
        oid("average_current"): lambda m, t: _u16(m.power("A", t) * 1000 // 240),
        oid("average_voltage"): lambda m, t: _u16(m.voltage(t - 900)),
        oid("instantaneous_power_factor"): lambda m, t: _u16(970),
        oid("instantaneous_frequency"): lambda m, t: _u16(5_000),
        oid("average_frequency"): lambda m, t: _u16(5_000),
    }


_FLAG_DEFAULTS: dict[str, Callable[[MeterModel], int]] = {
    "prepay_enabled_flag": lambda m: int(m.identity.prepay_enabled),
    "daylight_savings_correction_flag": lambda m: int(m.identity.dst_enabled),
    "prepay_no_debt_recovery_when_emergency_credit_flag": lambda m: 0,
    "prepay_no_standing_charge_when_power_fail_flag": lambda m: 1,
}


def _single_phase_readers() -> dict[int, Reader]:
    oid = object_id
    readers = _common_readers()
    readers.update({
        oid("serial"): lambda m, t: m.identity.serial.encode().ljust(16),
        oid("hardware_version"): lambda m, t: m.identity.hardware.version_string,
        oid("instantaneous_voltage"): lambda m, t: _u16(m.voltage(t)),
        oid("element_a_instantaneous_active_power_import"): lambda m, t: _u16(m.power("A", t)),
        oid("element_b_instantaneous_active_power_import"): lambda m, t: _u16(m.power("B", t)),
        oid("prepay_balance"): lambda m, t: _s32(m.balance(t)),
        oid("prepay_token_send"): lambda m, t: NakCode.SECURITY_NOT_GRANTED,
        oid("read_element_a"): lambda m, t: _registers(m, t, "A"),
        oid("read_element_b"): lambda m, t: _registers(m, t, "B"),
        oid("load_switch"): _setting(oid("load_switch"), b"\x00"),
        oid("tariff_time_switch_element_a_or_single"): _setting(
            oid("tariff_time_switch_element_a_or_single"), bytes(80)
        ),
        oid("tariff_time_switch_element_b"): _setting(
            oid("tariff_time_switch_element_b"), bytes(80)
        ),
        oid("decimal_places_displayed_in_energy_registers"): _setting(
            oid("decimal_places_displayed_in_energy_registers"), b"\x02"
        ),
        oid("monetary_info_transaction_count"): _transaction_count,
        oid("monetary_info_transaction_details"): _transaction_details,
        oid("tariff_active_threshold_mask"): lambda m, t: _u8(m.active_tariff(t).threshold_mask),
        oid("tariff_future_threshold_mask"): lambda m, t: _u8(m.future_tariff(t)[1].threshold_mask),
        oid("tariff_active_threshold_values"): lambda m, t: _thresholds(m.active_tariff(t)),
        oid("tariff_future_threshold_values"): lambda m, t: _thresholds(m.future_tariff(t)[1]),
        oid("tariff_future_activation_datetime"): lambda m, t: u32(m.future_tariff(t)[0]),
        oid("tariff_active_price"): lambda m, t: u32(m.active_tariff(t).unit_rate_a),
        oid("tariff_active_element_b_price"): lambda m, t: u32(m.active_tariff(t).unit_rate_b),
        oid("tariff_active_block_rate"): lambda m, t: _u8(7),
        oid("tariff_active_tou_rate"): lambda m, t: _u8(0),
        oid("tariff_active_price_index_current"): lambda m, t: _u8(0),
        oid("tariff_active_element_b_tou_rate"): lambda m, t: _u8(0),
        oid("tariff_active_element_b_price_index_current"): lambda m, t: _u8(0),
        oid("tariff_active_tou_flag"): lambda m, t: _u8(m.active_tariff(t).tou_flag),
        oid("tariff_future_tou_flag"): lambda m, t: _u8(m.future_tariff(t)[1].tou_flag),
        oid("event_log"): lambda m, t: events_payload(m.event_page(t, 0)),
    })  # fmt: skip
    for name, default in _FLAG_DEFAULTS.items():
        readers[oid(name)] = _flag(oid(name), default)
    for bank, active in ((_ACTIVE_PRICE_BANK, True), (FUTURE_PRICE_BANK, False)):
        for price_id in bank:
            readers[price_id] = _bank_price(active, price_id)
    for bank, active in ((_ACTIVE_B_BANK, True), (FUTURE_B_BANK, False)):
        for price_id in bank:
            readers[price_id] = _bank_price(active, price_id)
    for name, (active_name, future_name) in _TARIFF_U32.items():
        readers[oid(active_name)] = _tariff_field(True, name)
        readers[oid(future_name)] = _tariff_field(False, name)
    return readers


def _total(key: str) -> Reader:
    return lambda m, t: u32(m.three_phase_totals(t)[key])


def _phase_voltage(phase: int) -> Reader:
    def read(m: MeterModel, t: float) -> Payload:
        if m.phase_voltage_naks(t, phase):
            return NakCode.OBJECT_NOT_RECOGNISED
        return _u16(m.voltage(t, phase))

    return read


def _three_phase_readers() -> dict[int, Reader]:
    oid = object_id
    readers = _common_readers()
    readers.update({
        oid("three_phase_serial"): lambda m, t: m.identity.serial.encode().ljust(16),
        oid("hardware_version"): lambda m, t: (
            NakCode.OBJECT_NOT_RECOGNISED if m.identity.hardware_version_naks else b""
        ),
        oid("three_phase_hardware_configuration"): lambda m, t: _hardware_config(m),
        oid("three_phase_read"): lambda m, t: b"\x00",
        oid("three_phase_initiate_read"): lambda m, t: b"\x00",
    })  # fmt: skip
    totals = ("active_import", "active_export", "reactive_import", "reactive_export",
              "apparent_import", "apparent_export")  # fmt: skip
    for key in totals:
        readers[oid(f"three_phase_total_{key}")] = _total(key)
    for phase, name in enumerate(("l1", "l2", "l3"), start=1):
        readers[oid(f"three_phase_instantaneous_voltage_{name}")] = _phase_voltage(phase)
    for channel, name in enumerate(("active_import", "active_export", "reactive_import",
                                    "reactive_export", "reactive_energy_quadrant_1",
                                    "reactive_energy_quadrant_2", "reactive_energy_quadrant_3",
                                    "reactive_energy_quadrant_4")):  # fmt: skip
        readers[oid(f"{name}_demand")] = _raw_demand(channel)
    return readers


SINGLE_PHASE_READERS = _single_phase_readers()
THREE_PHASE_READERS = _three_phase_readers()


def events_payload(events: list[Event]) -> bytes:
    body = b"".join(_EVENT.pack(e.timestamp, e.event_id, e.event_set) for e in events)
    return body.ljust(60, b"\x00")
