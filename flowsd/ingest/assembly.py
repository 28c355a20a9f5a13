"""Readings that make one event only together, collected per meter and poll.

A tariff is 12 (active) or 9 (future) object reads, identity up to 5, flags 4, three-phase
voltages 3 and totals 6. Their pieces are kept per meter until the group is complete or the
poll ends (the engine's :class:`~flowsd.meters.observations.SessionOutcome`), then built into
one body. The event's ``observed_at`` is the first piece's arrival, ``read_at`` the last's.
A tariff whose money fields did not all arrive cannot be built; it is logged and counted in
``flowsd_ingest_incomplete_groups_total`` by cause: ``piece_missing`` (a read failed) or
``poll_stopped`` (the daemon stopped the poll between two plan items, or abandoned it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, get_args
from uuid import UUID

import structlog

from flowsd.emop.records import (
    FirmwareVersion,
    Flag,
    HardwareVersion,
    Record,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThresholdMask,
    ThresholdValues,
    U8Value,
    U32Value,
    Voltage,
)
from flowsd.events import types
from flowsd.ingest.mapping import (
    COMPLETE_WHEN_ALL_READ,
    GROUP_OF,
    GROUPS,
    counts_per_kwh,
    volts,
)
from flowsd.meters.observations import Reading

log = structlog.get_logger("flowsd.ingest")

Pieces = dict[str, Record]


@dataclass
class _Pending:
    first_read_at: datetime
    last_read_at: datetime
    serial: str | None = None  # for the log line of a group that cannot be built
    pieces: Pieces = field(default_factory=dict)


class IncompleteGroupError(Exception):
    """A group lacks a piece its body cannot do without."""


def _money(pieces: Pieces, name: str) -> Decimal:
    record = pieces.get(name)
    if not isinstance(record, U32Value):
        raise IncompleteGroupError(name)
    return record.gbp


def _money_or_none(pieces: Pieces, name: str) -> Decimal | None:
    record = pieces.get(name)
    return record.gbp if isinstance(record, U32Value) else None


def _u8(pieces: Pieces, name: str) -> int | None:
    record = pieces.get(name)
    return record.value if isinstance(record, U8Value) else None


def _mask(pieces: Pieces, name: str) -> tuple[bool, ...]:
    record = pieces.get(name)
    if not isinstance(record, ThresholdMask):
        return ()
    return (
        record.rate1,
        record.rate2,
        record.rate3,
        record.rate4,
        record.rate5,
        record.rate6,
        record.rate7,
        record.rate8,
    )


def _thresholds(pieces: Pieces, name: str) -> tuple[int, ...]:
    record = pieces.get(name)
    if not isinstance(record, ThresholdValues):
        return ()
    return (record.th1, record.th2, record.th3, record.th4, record.th5, record.th6, record.th7)


def active_tariff(pieces: Pieces) -> types.ActiveTariff:
    """The active tariff from the ``tariffs_active`` reads (element A's price is the active
    price; block 8 rate 1 stands in when the price itself was not read)."""
    price = _money_or_none(pieces, "tariff_active_price")
    block_8 = _money_or_none(pieces, "tariff_active_block_8_rate_1")
    unit_rate_a = price if price is not None else block_8
    if unit_rate_a is None:
        raise IncompleteGroupError("tariff_active_price")
    return types.ActiveTariff(
        standing_charge_gbp=_money(pieces, "tariff_active_standing_charge"),
        unit_rate_a_gbp=unit_rate_a,
        unit_rate_b_gbp=_money(pieces, "tariff_active_element_b_price"),
        emergency_credit_gbp=_money(pieces, "tariff_active_prepayment_emergency_credit"),
        ecredit_availability_gbp=_money(pieces, "tariff_active_prepayment_ecredit_availability"),
        debt_recovery_rate_gbp=_money(pieces, "tariff_active_prepayment_debt_recovery_rate"),
        threshold_mask=_mask(pieces, "tariff_active_threshold_mask"),
        threshold_values=_thresholds(pieces, "tariff_active_threshold_values"),
        block_rate=_u8(pieces, "tariff_active_block_rate"),
        tou_rate=_u8(pieces, "tariff_active_tou_rate"),
        element_b_tou_rate=_u8(pieces, "tariff_active_element_b_tou_rate"),
        block_8_rate_1_gbp=block_8,
    )


def future_tariff(pieces: Pieces) -> types.FutureTariff:
    activation = pieces.get("tariff_future_activation_datetime")
    return types.FutureTariff(
        standing_charge_gbp=_money(pieces, "tariff_future_standing_charge"),
        unit_rate_a_gbp=_money(pieces, "tariff_future_block_8_rate_1"),
        unit_rate_b_gbp=_money(pieces, "tariff_future_element_b_tou_rate_1"),
        emergency_credit_gbp=_money(pieces, "tariff_future_prepayment_emergency_credit"),
        ecredit_availability_gbp=_money(pieces, "tariff_future_prepayment_ecredit_availability"),
        debt_recovery_rate_gbp=_money(pieces, "tariff_future_prepayment_debt_recovery_rate"),
        # The meter's own setting: kept naive, as the meter holds it.
        activation_datetime=(
            activation.datetime.replace(tzinfo=None) if isinstance(activation, U32Value) else None
        ),
        threshold_mask=_mask(pieces, "tariff_future_threshold_mask"),
        threshold_values=_thresholds(pieces, "tariff_future_threshold_values"),
    )


def identity(pieces: Pieces) -> types.IdentityRead:
    serial = pieces.get("serial") or pieces.get("three_phase_serial")
    version = pieces.get("hardware_version")
    configuration = pieces.get("three_phase_hardware_configuration")
    firmware = pieces.get("firmware_version")
    hardware: str | None = None
    raw: str | None = None
    if isinstance(version, HardwareVersion):
        raw = version.hardware.replace("\0", "").strip()
        hardware = None if version.model == "THREE_PHASE" else version.model
    if isinstance(configuration, ThreePhaseHardwareConfiguration):
        hardware = configuration.model
    elif hardware is None and isinstance(version, HardwareVersion):
        hardware = "THREE_PHASE_UNKNOWN"
    return types.IdentityRead(
        serial=serial.value if isinstance(serial, Serial) else None,
        hardware=hardware,
        hardware_raw=raw,
        firmware_version=firmware.text if isinstance(firmware, FirmwareVersion) else None,
    )


def _flag(pieces: Pieces, name: str) -> bool | None:
    record = pieces.get(name)
    return record.enabled if isinstance(record, Flag) else None


def flags(pieces: Pieces) -> types.FlagsRead:
    return types.FlagsRead(
        prepay_enabled=_flag(pieces, "prepay_enabled_flag"),
        daylight_savings_correction_enabled=_flag(pieces, "daylight_savings_correction_flag"),
        no_debt_recovery_in_emergency_credit=_flag(
            pieces, "prepay_no_debt_recovery_when_emergency_credit_flag"
        ),
        no_standing_charge_in_power_fail=_flag(
            pieces, "prepay_no_standing_charge_when_power_fail_flag"
        ),
    )


def _phase(pieces: Pieces, name: str) -> Decimal | None:
    record = pieces.get(name)
    return volts(record.voltage) if isinstance(record, Voltage) else None


def three_phase_voltage(pieces: Pieces) -> types.ThreePhaseVoltageRead:
    return types.ThreePhaseVoltageRead(
        l1_v=_phase(pieces, "three_phase_instantaneous_voltage_l1"),
        l2_v=_phase(pieces, "three_phase_instantaneous_voltage_l2"),
        l3_v=_phase(pieces, "three_phase_instantaneous_voltage_l3"),
    )


def _count(pieces: Pieces, name: str) -> int | None:
    record = pieces.get(name)
    return record.value if isinstance(record, U32Value) else None


def three_phase_registers(pieces: Pieces, hardware: str | None) -> types.ThreePhaseRegisterRead:
    return types.ThreePhaseRegisterRead(
        counts_per_kwh=counts_per_kwh(hardware),
        active_import=_count(pieces, "three_phase_total_active_import"),
        active_export=_count(pieces, "three_phase_total_active_export"),
        reactive_import=_count(pieces, "three_phase_total_reactive_import"),
        reactive_export=_count(pieces, "three_phase_total_reactive_export"),
        apparent_import=_count(pieces, "three_phase_total_apparent_import"),
        apparent_export=_count(pieces, "three_phase_total_apparent_export"),
    )


def build(group: str, pieces: Pieces, hardware: str | None) -> types.AnyBody:
    """The body for a group's pieces; raises :class:`IncompleteGroupError`."""
    match group:
        case "active_tariff":
            return types.ActiveTariffRead(tariff=active_tariff(pieces))
        case "future_tariff":
            return types.FutureTariffRead(tariff=future_tariff(pieces))
        case "identity":
            return identity(pieces)
        case "flags":
            return flags(pieces)
        case "three_phase_voltage":
            return three_phase_voltage(pieces)
        case "three_phase_registers":
            return three_phase_registers(pieces, hardware)
    raise ValueError(f"unknown group {group!r}")


HardwareOf = Callable[[UUID], "str | None"]
IncompleteCause = Literal["piece_missing", "poll_stopped"]


# Pieces are kept per (meter, lane): the poll's own reads (lane None), each command's reads,
# and single reads served to clients, so a command served between two plan items never mixes
# its pieces with the poll's.
Lane = tuple[UUID, "UUID | None"]


class PollAssembler:
    """Pieces of grouped reads per meter and lane, until their group is complete or the poll
    (or command) ends."""

    def __init__(self) -> None:
        self._pending: dict[Lane, dict[str, _Pending]] = {}
        # Groups not stored because a piece was missing, by cause.
        self.incomplete: dict[IncompleteCause, int] = dict.fromkeys(get_args(IncompleteCause), 0)

    @staticmethod
    def handles(object_name: str) -> bool:
        return object_name in GROUP_OF

    def add(self, reading: Reading, hardware: str | None) -> types.Event | None:
        """Keep one piece; returns the group's event when this piece completed it."""
        group = GROUP_OF[reading.object_name]
        lane = (reading.meter_id, reading.lane)
        groups = self._pending.setdefault(lane, {})
        pending = groups.get(group)
        if pending is None:
            pending = groups[group] = _Pending(reading.read_at, reading.read_at, reading.serial)
        pending.pieces[reading.object_name] = reading.record
        pending.last_read_at = reading.read_at
        if group in COMPLETE_WHEN_ALL_READ and len(pending.pieces) == len(GROUPS[group]):
            del groups[group]
            if not groups:
                del self._pending[lane]
            return self._event(reading.meter_id, group, pending, hardware, "piece_missing")
        return None

    def finish(
        self,
        meter_id: UUID,
        hardware: str | None,
        *,
        stopped: bool = False,
        lane: UUID | None = None,
        keep_waiting: bool = False,
    ) -> list[types.Event]:
        """Build whatever the meter's poll (or a command, ``lane``) left pending, at its
        end; ``stopped``: the poll was cut short by a stop, not by a failed read.
        ``keep_waiting``: groups that are built only once complete (a tariff) stay pending
        for the pieces still to come (single reads for clients arrive one per request)."""
        groups = self._pending.pop((meter_id, lane), None)
        if not groups:
            return []
        cause: IncompleteCause = "poll_stopped" if stopped else "piece_missing"
        events = []
        kept: dict[str, _Pending] = {}
        for group, pending in groups.items():
            if keep_waiting and group in COMPLETE_WHEN_ALL_READ:
                kept[group] = pending
                continue
            event = self._event(meter_id, group, pending, hardware, cause)
            if event is not None:
                events.append(event)
        if kept:
            self._pending[(meter_id, lane)] = kept
        return events

    def finish_all(self, hardware_of: HardwareOf) -> list[types.Event]:
        """Build everything pending (at shutdown, when polls were abandoned)."""
        events: list[types.Event] = []
        for meter_id, lane in list(self._pending):
            hardware = hardware_of(meter_id)
            events.extend(self.finish(meter_id, hardware, stopped=True, lane=lane))
        return events

    def forget(self, meter_id: UUID) -> None:
        for lane in [key for key in self._pending if key[0] == meter_id]:
            del self._pending[lane]

    @property
    def pending_meters(self) -> int:
        return len({meter_id for meter_id, _ in self._pending})

    def _event(
        self,
        meter_id: UUID,
        group: str,
        pending: _Pending,
        hardware: str | None,
        cause: IncompleteCause,
    ) -> types.Event | None:
        try:
            body = build(group, pending.pieces, hardware)
        except IncompleteGroupError as missing:
            self.incomplete[cause] += 1
            log.info(
                "incomplete read not stored",
                meter_serial=pending.serial,
                meter_id=str(meter_id),
                group=group,
                cause=cause,
                missing=str(missing),
                pieces=len(pending.pieces),
            )
            return None
        return types.Event(
            meter_id=meter_id,
            observed_at=pending.first_read_at,
            read_at=pending.last_read_at,
            body=body,
        )
