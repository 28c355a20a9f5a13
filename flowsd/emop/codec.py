"""Which record type decodes which payload: by object (default format) or by format."""

from __future__ import annotations

from flowsd.emop.errors import PayloadError
from flowsd.emop.frame import Format
from flowsd.emop.objects import Layout, ObjectInfo, by_id
from flowsd.emop.records import (
    ActivePower,
    Backlight,
    ClockTime,
    CsqNetOp,
    EventLog,
    FirmwareVersion,
    Flag,
    HardwareVersion,
    LoadSwitch,
    PrepayBalance,
    ProfileLog1,
    ProfileLog2,
    RawPayload,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThreePhaseIntervals,
    ThresholdMask,
    ThresholdValues,
    TimeSwitches,
    TopUpToken,
    TransactionCount,
    TransactionDetails,
    U8Value,
    U32Value,
    Voltage,
)

RECORD_TYPES: dict[Layout, type[Record]] = {
    Layout.SERIAL: Serial,
    Layout.HARDWARE: HardwareVersion,
    Layout.FIRMWARE: FirmwareVersion,
    Layout.HARDWARE_CONFIG: ThreePhaseHardwareConfiguration,
    Layout.CLOCK: ClockTime,
    Layout.CSQ: CsqNetOp,
    Layout.VOLTAGE: Voltage,
    Layout.POWER: ActivePower,
    Layout.BALANCE: PrepayBalance,
    Layout.FLAG: Flag,
    Layout.BACKLIGHT: Backlight,
    Layout.LOAD_SWITCH: LoadSwitch,
    Layout.REGISTERS: Registers,
    Layout.U32: U32Value,
    Layout.U8: U8Value,
    Layout.THRESHOLD_MASK: ThresholdMask,
    Layout.THRESHOLD_VALUES: ThresholdValues,
    Layout.TRANSACTION_COUNT: TransactionCount,
    Layout.TRANSACTION_DETAILS: TransactionDetails,
    Layout.TIME_SWITCHES: TimeSwitches,
    Layout.TOKEN: TopUpToken,
    Layout.RAW: RawPayload,
}


def record_type(obj: ObjectInfo | int) -> type[Record]:
    """The record type of an object; ids outside the catalogue decode as raw bytes."""
    info = by_id(obj) if isinstance(obj, int) else obj
    return RawPayload if info is None else RECORD_TYPES[info.layout]


def decode_payload(object_id: int, payload: bytes) -> Record:
    """Decode a default-format payload (read response or write request) of an object."""
    return record_type(object_id).decode(payload)


def decode_body(fmt: int, body: bytes, *, twin: bool = False) -> Record:
    """Decode the data after the format byte of a profile-log, event-log or interval response.

    ``twin`` selects the twin-element layout of profile log 2 (hardware ``C1.w``).
    """
    if fmt == Format.PROFILE_LOG_1:
        return ProfileLog1.decode(body)
    if fmt == Format.PROFILE_LOG_2:
        return ProfileLog2.decode_layout(body, twin=twin)
    if fmt == Format.EVENT_LOG:
        return EventLog.decode(body)
    if fmt == Format.THREE_PHASE_INTERVALS:
        return ThreePhaseIntervals.decode(body)
    raise PayloadError(f"no body decoder for format {fmt:#04x}")
