"""Pure conversions from codec records to event bodies (one object read, one body).

Objects that only make sense together (tariffs, identity, flags, three-phase voltages and
totals) are listed in :data:`GROUPS` and built by :mod:`flowsd.ingest.assembly`; the
functions here handle the objects that stand alone, the half-hourly profile records and the
three-phase interval records.
"""

from __future__ import annotations

from decimal import Decimal

from flowsd.emop.hardware import hardware_of
from flowsd.emop.objects import (
    FLAG_OBJECT_IDS,
    OBJECTS,
    THREE_PHASE_REGISTER_OBJECTS,
    THREE_PHASE_VOLTAGE_OBJECTS,
)
from flowsd.emop.records import (
    Backlight,
    BacklightSetting,
    CsqNetOp,
    IntervalStatus,
    LoadSwitch,
    LoadSwitchSetting,
    PrepayBalance,
    ProfileLog1Record,
    ProfileLog2TwinRecord,
    ProfileStatus,
    Record,
    Registers,
    Voltage,
)
from flowsd.emop.records import ProfileLog2Record as WireProfileLog2Record
from flowsd.events import types
from flowsd.meters.observations import ThreePhaseInterval
from flowsd.meters.plan import TARIFFS_ACTIVE, TARIFFS_FUTURE

IDENTITY_OBJECTS = (
    "serial",
    "three_phase_serial",
    "hardware_version",
    "firmware_version",
    "three_phase_hardware_configuration",
)
FLAG_OBJECTS = tuple(o.name for o in OBJECTS if o.id in FLAG_OBJECT_IDS)

# Group name -> its member objects. A group with a fixed membership is complete (and built at
# once) when all members arrived; otherwise it is built at the end of the poll.
GROUPS: dict[str, tuple[str, ...]] = {
    "active_tariff": TARIFFS_ACTIVE,
    "future_tariff": TARIFFS_FUTURE,
    "identity": IDENTITY_OBJECTS,
    "flags": FLAG_OBJECTS,
    "three_phase_voltage": THREE_PHASE_VOLTAGE_OBJECTS,
    "three_phase_registers": THREE_PHASE_REGISTER_OBJECTS,
}
COMPLETE_WHEN_ALL_READ = frozenset({"active_tariff", "future_tariff", "three_phase_voltage"})
GROUP_OF: dict[str, str] = {obj: group for group, members in GROUPS.items() for obj in members}

# Read for its drift (a ClockDrift observation), not stored as a reading of its own.
CLOCK_OBJECT = "time"

_DECIVOLT = Decimal("0.1")


def is_three_phase(hardware: str | None) -> bool:
    known = hardware_of(hardware)
    return known is not None and known.three_phase


def counts_per_kwh(hardware: str | None) -> int:
    """Scale of three-phase totals: 0.1 Wh on CT-operated meters (P1.cx), else Wh."""
    known = hardware_of(hardware)
    return 1000 if known is None else known.counts_per_kwh


def volts(raw_decivolts: int) -> Decimal:
    return Decimal(raw_decivolts) * _DECIVOLT


def backlight_setting(raw: BacklightSetting | int, hardware: str | None) -> str | None:
    """The production name of a backlight value (0 means different things per family)."""
    if not isinstance(raw, BacklightSetting):
        return None
    if raw is BacklightSetting.NORMAL_SP_OR_ALWAYS_OFF_3P:
        return "always_off_3p" if is_three_phase(hardware) else "normal_sp"
    return raw.name.lower()


def load_switch_setting(raw: int) -> str | None:
    try:
        return LoadSwitchSetting(raw).name.lower()
    except ValueError:
        return None


def element_of(object_name: str, hardware: str | None) -> types.Element:
    """Which element a register read belongs to: A/B on twin meters, else SINGLE for A."""
    if object_name == "read_element_b":
        return "B"
    known = hardware_of(hardware)
    return "A" if known is not None and known.twin_element else "SINGLE"


def standalone_body(object_name: str, record: Record, hardware: str | None) -> types.AnyBody | None:
    """The body for an object read on its own; None for grouped, clock or unmapped objects."""
    match record:
        case PrepayBalance():
            return types.BalanceRead(balance_gbp=record.gbp)
        case CsqNetOp():
            return types.SignalQualityRead(csq=record.csq, network_operator=record.network_operator)
        case Voltage() if object_name == "instantaneous_voltage":
            return types.VoltageRead(voltage_v=volts(record.voltage))
        case Registers() if object_name in ("read_element_a", "read_element_b"):
            return types.RegisterRead(
                element=element_of(object_name, hardware),
                import_active_wh=record.import_active,
                export_active_wh=record.export_active,
                import_reactive_varh=record.import_reactive,
                export_reactive_varh=record.export_reactive,
            )
        case Backlight():
            return types.BacklightRead(
                raw=int(record.setting), setting=backlight_setting(record.setting, hardware)
            )
        case LoadSwitch():
            raw = int(record.setting)
            return types.LoadSwitchRead(raw=raw, setting=load_switch_setting(raw))
    return None


def status_word(status: ProfileStatus | IntervalStatus) -> int:
    """The two status bytes as one integer, byte 0 high (the layout the event types test)."""
    return int.from_bytes(status.to_bytes(), "big")


def profile_log_1_body(record: ProfileLog1Record, *, twin: bool) -> types.ProfileLog1Record:
    return types.ProfileLog1Record(
        status=status_word(record.status),
        import_a_wh=record.import_a,
        import_b_wh=record.import_b if twin else None,
    )


def profile_log_2_body(record: WireProfileLog2Record) -> types.ProfileLog2Record:
    twin = record if isinstance(record, ProfileLog2TwinRecord) else None
    return types.ProfileLog2Record(
        status=status_word(record.status),
        export_a_wh=record.active_export_a,
        reactive_import_a_varh=record.reactive_import_a,
        reactive_export_a_varh=record.reactive_export_a,
        voltage_raw=record.voltage,
        export_b_wh=twin.active_export_b if twin else None,
        reactive_import_b_varh=twin.reactive_import_b if twin else None,
        reactive_export_b_varh=twin.reactive_export_b if twin else None,
    )


def three_phase_interval_body(
    interval: ThreePhaseInterval, hardware: str | None
) -> types.ThreePhaseIntervalRecord:
    """A three-phase interval record; its raw values keep the meter's scale, named by
    ``counts_per_kwh`` (1000: W and Wh on P1.ax, 10000: 0.1 W and 0.1 Wh on P1.cx)."""
    return types.ThreePhaseIntervalRecord(
        profile=interval.profile,
        interval_minutes=interval.interval_minutes,
        status=status_word(interval.status),
        counts_per_kwh=counts_per_kwh(hardware),
        values={f"{channel:06x}": value for channel, value in interval.channels.items()},
    )
