"""What each hardware kind answers to a default-format read: one record builder per object.

A reader returns the codec record the meter sends (:mod:`flowsd.emop.records`; the codec
encodes it, as it decodes it on the daemon's side), or an int: the NAK code to answer.
Model values are brought into the wire's range here (registers wrap at 2^32, readings
saturate) so encoding never fails. The simulator's tests compare what the daemon's codec
decodes with the ground truth of :mod:`flowsd.sim.truth`, which does not go through here.
"""

from __future__ import annotations

from collections.abc import Callable

from flowsd.emop import NakCode, object_id, record_type
from flowsd.emop.objects import EVENT_LOG_OBJECT_ID
from flowsd.emop.records import (
    ActivePower,
    ClockTime,
    CsqNetOp,
    Event,
    EventLog,
    FirmwareVersion,
    Fitted,
    Flag,
    HardwareVersion,
    MeterType,
    MiddleOutputTerminals,
    PrepayBalance,
    RawPayload,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThresholdMask,
    ThresholdValues,
    TransactionCount,
    TransactionDetails,
    U8Value,
    U32Value,
    Voltage,
)
from flowsd.emop.records.eventlog import EVENTS_PER_BLOCK
from flowsd.sim.clock import from_emop
from flowsd.sim.events import Event as SimEvent
from flowsd.sim.model import ElementRegisters, MeterModel
from flowsd.sim.tariffs import Tariff

Answer = Record | int  # the record to send, or a NAK code
Reader = Callable[[MeterModel, float], Answer]

_EMPTY_SLOT = Event(0, 0, 0)
SERIAL_WIDTH = 16  # 13 characters padded with spaces, as real meters send them


def _u16(v: int) -> int:
    return min(max(v, 0), 0xFFFF)


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


def _s32(v: int) -> int:
    return max(-(2**31), min(2**31 - 1, v))


def _raw_u16(v: int) -> RawPayload:
    """An object the codec leaves undecoded, which the simulator fills with a u16le."""
    return RawPayload(_u16(v).to_bytes(2, "little"))


def _raw_u32(v: int) -> RawPayload:
    return RawPayload(_u32(v).to_bytes(4, "little"))


def clock_record(meter_time: float) -> ClockTime:
    return ClockTime.from_datetime(from_emop(int(meter_time)))


def event_block(events: list[SimEvent], index: int) -> EventLog:
    """One event-log block: the echoed object id and index, ten slots (empty ones zero)."""
    records = [Event(e.timestamp, int(e.event_id), e.event_set) for e in events]
    records += [_EMPTY_SLOT] * (EVENTS_PER_BLOCK - len(records))
    return EventLog(EVENT_LOG_OBJECT_ID.to_bytes(3, "big"), index, tuple(records))


def _registers(r: ElementRegisters) -> Registers:
    return Registers(
        _u32(r.import_active), _u32(r.export_active), _u32(r.import_reactive),
        _u32(r.export_reactive),
    )  # fmt: skip


def _transaction_details(m: MeterModel, t: float) -> TransactionDetails:
    done = m.transactions(t)
    if not done:
        return TransactionDetails(bytes(8), 0, 0)
    last = done[-1]
    return TransactionDetails(
        (len(done) - 1).to_bytes(8, "little"), _u32(int(last.time)), _s32(last.amount)
    )


def _threshold_mask(mask: int) -> ThresholdMask:
    return ThresholdMask.decode(bytes((mask & 0xFF,)))


def _thresholds(tariff: Tariff) -> ThresholdValues:
    return ThresholdValues(*(_u16(v) for v in tariff.threshold_values))


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


def _tariff(m: MeterModel, t: float, active: bool) -> Tariff:
    return m.active_tariff(t) if active else m.future_tariff(t)[1]


def _tariff_field(active: bool, name: str) -> Reader:
    return lambda m, t: U32Value(_u32(int(getattr(_tariff(m, t, active), name))))


def _bank_price(active: bool, oid: int) -> Reader:
    # Active and future banks share the offsets: the active bank sits 0x100 above.
    slot = oid - (0x100 if active else 0)
    return lambda m, t: U32Value(_u32(_tariff(m, t, active).price(slot)))


def _flag(oid: int, default: Callable[[MeterModel], int]) -> Reader:
    return lambda m, t: Flag(m.flag(oid, default(m)) & 0xFF)


def _setting(oid: int, default: bytes) -> Reader:
    """A setting the operator may write: what was written, decoded by the object's record."""
    decode = record_type(oid).decode
    return lambda m, t: decode(m.setting(oid, default))


def _raw_demand(channel: int) -> Reader:
    """The last completed half hour's average demand on one channel (quadrants read 0)."""

    def read(m: MeterModel, t: float) -> Answer:
        start = int(t // 1800) * 1800 - 1800
        _, found = m.three_phase_intervals(start, start + 1, t, 1)
        if not found or channel >= 4:
            return _raw_u32(0)
        d = found[0]
        return _raw_u32(
            (d.active_import, d.active_export, d.reactive_import, d.reactive_export)[channel]
        )

    return read


def _hardware_config(m: MeterModel) -> ThreePhaseHardwareConfiguration:
    ax = m.identity.hardware.value == "P1.ax"
    return ThreePhaseHardwareConfiguration(
        meter_type=MeterType.AX_WHOLE_CURRENT if ax else MeterType.CX_CT_OPERATED,
        middle_output_terminals=MiddleOutputTerminals.AUXILIARY_RELAY_FITTED,
        disconnect_switch=Fitted.FITTED,
        gsm_communications=Fitted.FITTED,
        real_time_clock=Fitted.FITTED,
        magnetic_detection=Fitted.FITTED,
        terminal_cover_tamper_switch=Fitted.NOT_FITTED,
        top_cover_tamper_switch=Fitted.NOT_FITTED,
    )


def _serial(m: MeterModel, t: float) -> Serial:
    return Serial(m.identity.serial.ljust(SERIAL_WIDTH))


def _common_readers() -> dict[int, Reader]:
    oid = object_id
    return {
        oid("firmware_version"): lambda m, t: FirmwareVersion(tuple(m.identity.firmware)),
        oid("time"): lambda m, t: clock_record(m.clock(t)),
        oid("csq_net_op"): lambda m, t: CsqNetOp(m.identity.network_operator, m.csq(t)),
        oid("backlight"): _setting(oid("backlight"), b"\x00"),
        oid("instantaneous_active_power"): lambda m, t: ActivePower(
            _u16(m.power("A", t) + m.power("B", t))
        ),
        oid("instantaneous_reactive_power"): lambda m, t: _raw_u16(m.power("A", t) // 8),
        oid("instantaneous_current"): lambda m, t: _raw_u16(m.power("A", t) * 1000 // 240),
        oid("average_current"): lambda m, t: _raw_u16(m.power("A", t) * 1000 // 240),
        oid("average_voltage"): lambda m, t: _raw_u16(m.voltage(t - 900)),
        oid("instantaneous_power_factor"): lambda m, t: _raw_u16(970),
        oid("instantaneous_frequency"): lambda m, t: _raw_u16(5_000),
        oid("average_frequency"): lambda m, t: _raw_u16(5_000),
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
        oid("serial"): _serial,
        oid("hardware_version"): lambda m, t: HardwareVersion(m.identity.hardware.version_string),
        oid("instantaneous_voltage"): lambda m, t: Voltage(_u16(m.voltage(t))),
        oid("element_a_instantaneous_active_power_import"): lambda m, t: ActivePower(
            _u16(m.power("A", t))
        ),
        oid("element_b_instantaneous_active_power_import"): lambda m, t: ActivePower(
            _u16(m.power("B", t))
        ),
        oid("prepay_balance"): lambda m, t: PrepayBalance(_s32(m.balance(t))),
        oid("prepay_token_send"): lambda m, t: NakCode.SECURITY_NOT_GRANTED,
        oid("read_element_a"): lambda m, t: _registers(m.element("A", t)),
        oid("read_element_b"): lambda m, t: _registers(m.element("B", t)),
        oid("monetary_info_transaction_count"): lambda m, t: TransactionCount(
            _u16(len(m.transactions(t)) - 1)
        ),
        oid("monetary_info_transaction_details"): _transaction_details,
        oid("tariff_active_threshold_mask"): lambda m, t: _threshold_mask(
            m.active_tariff(t).threshold_mask
        ),
        oid("tariff_future_threshold_mask"): lambda m, t: _threshold_mask(
            m.future_tariff(t)[1].threshold_mask
        ),
        oid("tariff_active_threshold_values"): lambda m, t: _thresholds(m.active_tariff(t)),
        oid("tariff_future_threshold_values"): lambda m, t: _thresholds(m.future_tariff(t)[1]),
        oid("tariff_future_activation_datetime"): lambda m, t: U32Value(
            _u32(m.future_tariff(t)[0])
        ),
        oid("tariff_active_price"): lambda m, t: U32Value(_u32(m.active_tariff(t).unit_rate_a)),
        oid("tariff_active_element_b_price"): lambda m, t: U32Value(
            _u32(m.active_tariff(t).unit_rate_b)
        ),
        oid("tariff_active_block_rate"): lambda m, t: U8Value(7),
        oid("tariff_active_tou_rate"): lambda m, t: U8Value(0),
        oid("tariff_active_price_index_current"): lambda m, t: U8Value(0),
        oid("tariff_active_element_b_tou_rate"): lambda m, t: U8Value(0),
        oid("tariff_active_element_b_price_index_current"): lambda m, t: U8Value(0),
        oid("tariff_active_tou_flag"): lambda m, t: RawPayload(
            bytes((m.active_tariff(t).tou_flag & 0xFF,))
        ),
        oid("tariff_future_tou_flag"): lambda m, t: U8Value(m.future_tariff(t)[1].tou_flag & 0xFF),
        # A default-format read of the event log: the newest block's events, no header.
        oid("event_log"): lambda m, t: RawPayload(event_block(m.event_page(t, 0), 0).encode()[4:]),
    })  # fmt: skip
    settings = (
        ("load_switch", b"\x00"),
        ("tariff_time_switch_element_a_or_single", bytes(80)),
        ("tariff_time_switch_element_b", bytes(80)),
        ("decimal_places_displayed_in_energy_registers", b"\x02"),
    )
    for name, default in settings:
        readers[oid(name)] = _setting(oid(name), default)
    for name, default_flag in _FLAG_DEFAULTS.items():
        readers[oid(name)] = _flag(oid(name), default_flag)
    for bank, active in (
        (_ACTIVE_PRICE_BANK, True),
        (FUTURE_PRICE_BANK, False),
        (_ACTIVE_B_BANK, True),
        (FUTURE_B_BANK, False),
    ):
        for price_id in bank:
            readers[price_id] = _bank_price(active, price_id)
    for name, (active_name, future_name) in _TARIFF_U32.items():
        readers[oid(active_name)] = _tariff_field(True, name)
        readers[oid(future_name)] = _tariff_field(False, name)
    return readers


def _total(key: str) -> Reader:
    return lambda m, t: U32Value(m.three_phase_totals(t)[key])


def _phase_voltage(phase: int) -> Reader:
    def read(m: MeterModel, t: float) -> Answer:
        if m.phase_voltage_naks(t, phase):
            return NakCode.OBJECT_NOT_RECOGNISED
        return Voltage(_u16(m.voltage(t, phase)))

    return read


def _three_phase_readers() -> dict[int, Reader]:
    oid = object_id
    readers = _common_readers()
    readers.update({
        oid("three_phase_serial"): _serial,
        oid("hardware_version"): lambda m, t: (
            NakCode.OBJECT_NOT_RECOGNISED if m.identity.hardware_version_naks
            else HardwareVersion("")
        ),
        oid("three_phase_hardware_configuration"): lambda m, t: _hardware_config(m),
        oid("three_phase_read"): lambda m, t: RawPayload(b"\x00"),
        oid("three_phase_initiate_read"): lambda m, t: RawPayload(b"\x00"),
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
