"""Observations to events: mapping, grouped reads, profile records across UK clock changes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from flowsd.emop.records import (
    ClockTime,
    CsqNetOp,
    FirmwareVersion,
    Flag,
    HardwareVersion,
    IntervalStatus,
    PrepayBalance,
    ProfileLog1Record,
    ProfileLog2TwinRecord,
    ProfileStatus,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThresholdMask,
    ThresholdValues,
    U8Value,
    U32Value,
    Voltage,
)
from flowsd.emop.records.identity import Fitted, MeterType, MiddleOutputTerminals
from flowsd.emop.units import to_emop_seconds
from flowsd.events import types
from flowsd.ingest.detector import ChangeDetector
from flowsd.ingest.pipeline import Ingest
from flowsd.ingest.sessions import SessionTracker
from flowsd.meters import observations as obs
from flowsd.meters.plan import TARIFFS_ACTIVE
from tests.ingest.helpers import METER, T0, at, of_type, outcome, reading

LONDON = ZoneInfo("Europe/London")


class Sink:
    def __init__(self) -> None:
        self.events: list[types.Event] = []

    async def __call__(self, events: Sequence[types.Event]) -> None:
        self.events.extend(events)


def ingest(hardware: str | None = "C1.w") -> tuple[Ingest, Sink]:
    sink = Sink()
    pipeline = Ingest(
        sink, ChangeDetector(clock_drift_threshold_seconds=20.0), tracker=SessionTracker()
    )
    pipeline.set_hardware(METER, hardware)
    return pipeline, sink


async def test_standalone_readings_become_events_with_read_time() -> None:
    pipeline, sink = ingest()
    await pipeline([reading("prepay_balance", PrepayBalance(1523456), t=1)])
    await pipeline([reading("csq_net_op", CsqNetOp(2, 17), t=2)])
    await pipeline([reading("instantaneous_voltage", Voltage(2398), t=3)])
    await pipeline([reading("read_element_a", Registers(100, 2, 3, 4), t=4)])
    await pipeline([reading("read_element_b", Registers(200, 5, 6, 7), t=5)])
    balance = of_type(sink.events, types.BalanceRead)[0]
    assert balance.body == types.BalanceRead(balance_gbp=Decimal("15.23456"))
    assert balance.observed_at == at(1) and balance.read_at == at(1)
    assert of_type(sink.events, types.SignalQualityRead)[0].body == types.SignalQualityRead(
        csq=17, network_operator=2
    )
    voltage = of_type(sink.events, types.VoltageRead)[0].body
    assert voltage == types.VoltageRead(voltage_v=Decimal("239.8"))
    registers = [e.body for e in of_type(sink.events, types.RegisterRead)]
    assert [r.element for r in registers] == ["A", "B"]  # type: ignore[union-attr]
    assert of_type(sink.events, types.BalanceChanged)  # the first balance is a change


async def test_single_element_meter_reads_are_single() -> None:
    pipeline, sink = ingest("EMA1.w")
    await pipeline([reading("read_element_a", Registers(100, 2, 3, 4))])
    body = sink.events[0].body
    assert isinstance(body, types.RegisterRead) and body.element == "SINGLE"


def _active_tariff_pieces() -> list[obs.Reading]:
    money = {
        "tariff_active_standing_charge": 55_000,
        "tariff_active_block_8_rate_1": 25_000,
        "tariff_active_price": 25_000,
        "tariff_active_element_b_price": 26_000,
        "tariff_active_prepayment_emergency_credit": 1_500_000,
        "tariff_active_prepayment_ecredit_availability": 500_000,
        "tariff_active_prepayment_debt_recovery_rate": 10_000,
    }
    pieces = []
    for i, name in enumerate(TARIFFS_ACTIVE):
        record: Record
        if name in money:
            record = U32Value(money[name])
        elif name == "tariff_active_threshold_mask":
            record = ThresholdMask(False, False, False, False, False, False, False, True)
        elif name == "tariff_active_threshold_values":
            record = ThresholdValues(0, 0, 0, 0, 0, 0, 0)
        else:
            record = U8Value(1)
        pieces.append(reading(name, record, t=i))
    return pieces


async def test_a_tariff_is_one_event_once_all_twelve_reads_arrived() -> None:
    pipeline, sink = ingest()
    pieces = _active_tariff_pieces()
    for piece in pieces[:-1]:
        await pipeline([piece])
    assert sink.events == []
    await pipeline([pieces[-1]])
    read = of_type(sink.events, types.ActiveTariffRead)
    assert len(read) == 1
    tariff = read[0].body.tariff  # type: ignore[union-attr]
    assert tariff.standing_charge_gbp == Decimal("0.55")
    assert tariff.unit_rate_b_gbp == Decimal("0.26")
    assert tariff.threshold_mask == (True, False, False, False, False, False, False, False)
    assert read[0].observed_at == at(0) and read[0].read_at == at(len(pieces) - 1)
    assert len(of_type(sink.events, types.TariffActivated)) == 1


async def test_an_incomplete_tariff_is_not_stored_at_the_end_of_the_poll() -> None:
    pipeline, sink = ingest()
    for piece in _active_tariff_pieces()[:5]:
        await pipeline([piece])
    await pipeline([outcome(ok=False, online=True, t=30, failed=1, reason="nak")])
    assert of_type(sink.events, types.ActiveTariffRead) == []
    assert pipeline.statistics().incomplete_groups == {"piece_missing": 1, "poll_stopped": 0}
    # Cut by a stop: the next poll reads the tariff whole; counted apart.
    for piece in _active_tariff_pieces()[:5]:
        await pipeline([piece])
    await pipeline([outcome(ok=False, online=True, t=60, reason="stopped")])
    for piece in _active_tariff_pieces()[:5]:
        await pipeline([piece])
    assert pipeline.pending_events() == []
    assert of_type(sink.events, types.ActiveTariffRead) == []
    assert pipeline.statistics().incomplete_groups == {"piece_missing": 1, "poll_stopped": 2}


async def test_meter_log_lines_carry_the_serial() -> None:
    pipeline, _ = ingest()
    gap = obs.IntervalGap(
        meter_id=METER, serial="EML0000000001", read_at=at(0), log=1, start=at(-7200), end=at(0)
    )
    with capture_logs() as logs:
        for piece in _active_tariff_pieces()[:5]:
            await pipeline([piece])
        await pipeline([outcome(ok=False, online=True, t=30, failed=1, reason="nak")])
        await pipeline([gap])
    about_meter = [e for e in logs if "meter_id" in e]
    assert {e["event"] for e in about_meter} == {
        "incomplete read not stored",
        "meter holds no profile data for a range",
    }
    assert all(e["meter_serial"] == "EML0000000001" for e in about_meter)


async def test_identity_and_flags_are_built_at_the_end_of_the_poll() -> None:
    pipeline, sink = ingest(None)
    await pipeline([reading("hardware_version", HardwareVersion("6Cw "), t=0)])
    await pipeline([reading("firmware_version", FirmwareVersion(tuple(b"3032")), t=1)])
    await pipeline([reading("serial", Serial("EML2137580826 "), t=2)])
    await pipeline([reading("prepay_enabled_flag", Flag(0), t=3)])
    await pipeline([reading("daylight_savings_correction_flag", Flag(1), t=4)])
    assert sink.events == []
    await pipeline([outcome(ok=True, online=True, t=5)])
    identity = of_type(sink.events, types.IdentityRead)[0].body
    assert identity == types.IdentityRead(
        serial="EML2137580826", hardware="C1.w", hardware_raw="6Cw", firmware_version="3_03_2"
    )
    flags = of_type(sink.events, types.FlagsRead)[0].body
    assert flags == types.FlagsRead(prepay_enabled=False, daylight_savings_correction_enabled=True)
    kinds = {type(e.body) for e in sink.events}
    assert {types.HardwareChanged, types.SerialChanged, types.FirmwareChanged} <= kinds
    assert {types.PrepayModeChanged, types.MeterCameOnline, types.HealthChanged} <= kinds


async def test_three_phase_identity_and_totals() -> None:
    pipeline, sink = ingest(None)
    configuration = ThreePhaseHardwareConfiguration(
        meter_type=MeterType.CX_CT_OPERATED,
        middle_output_terminals=MiddleOutputTerminals.PULSE_OUTPUT_FITTED,
        disconnect_switch=Fitted.NOT_FITTED,
        gsm_communications=Fitted.FITTED,
        real_time_clock=Fitted.FITTED,
        magnetic_detection=Fitted.FITTED,
        terminal_cover_tamper_switch=Fitted.FITTED,
        top_cover_tamper_switch=Fitted.FITTED,
    )
    await pipeline([reading("hardware_version", HardwareVersion(""))])
    await pipeline([reading("three_phase_hardware_configuration", configuration, t=1)])
    await pipeline([reading("three_phase_total_active_import", U32Value(123_456), t=2)])
    await pipeline([outcome(ok=True, online=True, t=3)])
    identity = of_type(sink.events, types.IdentityRead)[0].body
    assert isinstance(identity, types.IdentityRead) and identity.hardware == "P1.cx"
    totals = of_type(sink.events, types.ThreePhaseRegisterRead)[0].body
    assert isinstance(totals, types.ThreePhaseRegisterRead)
    assert totals.counts_per_kwh == 10_000 and totals.active_import == 123_456


def _log1(moment: datetime, value: int) -> obs.IntervalRecord:
    record = ProfileLog1Record(
        to_emop_seconds(moment), ProfileStatus(valid_data=True), value, value // 2
    )
    return obs.IntervalRecord(
        meter_id=METER,
        serial=None,
        read_at=T0,
        log=1,
        interval_at=moment,
        status=record.status,
        record=record,
    )


@pytest.mark.parametrize(("day", "half_hours"), [("2025-03-30", 46), ("2025-10-26", 50)])
async def test_profile_records_keep_utc_times_over_uk_clock_changes(
    day: str, half_hours: int
) -> None:
    pipeline, sink = ingest()
    local_midnight = datetime.fromisoformat(day).replace(tzinfo=LONDON)
    start = local_midnight.astimezone(UTC)
    end = (local_midnight + timedelta(days=1)).astimezone(UTC)
    records: list[obs.IntervalRecord] = []
    moment = start
    while moment < end:
        records.append(_log1(moment + timedelta(minutes=30), len(records) * 100))
        moment += timedelta(minutes=30)
    await pipeline(records)
    events = of_type(sink.events, types.ProfileLog1Record)
    assert len(events) == half_hours
    assert len({e.idempotency_key() for e in events}) == half_hours
    stamps = [e.observed_at for e in events]
    assert all(s.utcoffset() == timedelta(0) for s in stamps)
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(stamps))
    local_days = {s.astimezone(LONDON).date().isoformat() for s in stamps[:-1]}
    assert local_days == {day}
    body = events[0].body
    assert isinstance(body, types.ProfileLog1Record) and body.valid and body.import_b_wh == 0


async def test_profile_log_2_twin_layout() -> None:
    pipeline, sink = ingest()
    record = ProfileLog2TwinRecord(
        to_emop_seconds(T0), ProfileStatus(valid_data=True, power_fail=True), 1, 2, 3, 2400, 4, 5, 6
    )
    await pipeline(
        [
            obs.IntervalRecord(
                meter_id=METER, serial=None, read_at=at(9), log=2, interval_at=T0,
                status=record.status, record=record,
            )
        ]
    )  # fmt: skip
    event = sink.events[0]
    assert event.observed_at == T0 and event.read_at == at(9)
    assert event.body == types.ProfileLog2Record(
        status=0x00C0,
        export_a_wh=1,
        reactive_import_a_varh=2,
        reactive_export_a_varh=3,
        voltage_raw=2400,
        export_b_wh=4,
        reactive_import_b_varh=5,
        reactive_export_b_varh=6,
    )


@pytest.mark.parametrize(("hardware", "counts_per_kwh"), [("P1.ax", 1000), ("P1.cx", 10_000)])
async def test_three_phase_interval_keeps_its_start_raw_values_and_the_scale(
    hardware: str, counts_per_kwh: int
) -> None:
    pipeline, sink = ingest(hardware)
    status = IntervalStatus(valid_data=True, power_fail=True, log_reset=True)
    await pipeline(
        [
            obs.ThreePhaseInterval(
                meter_id=METER, serial=None, read_at=at(9), profile=0, interval_at=T0,
                interval_minutes=30, status=status, channels={0xD79600: 4_001, 0xD79601: 0},
            )
        ]
    )  # fmt: skip
    (event,) = sink.events
    assert event.observed_at == T0 and event.read_at == at(9)
    assert event.body == types.ThreePhaseIntervalRecord(
        profile=0,
        interval_minutes=30,
        status=0x01C0,  # log reset (byte 0 bit 0), valid, power fail: the profile logs' bits
        counts_per_kwh=counts_per_kwh,
        values={"d79600": 4_001, "d79601": 0},
    )


async def test_meter_log_entries_keep_meter_time_and_event_set() -> None:
    pipeline, sink = ingest()
    entry = obs.MeterLogEntry(
        meter_id=METER, serial=None, read_at=at(50), occurred_at=at(-3600), event_id=33,
        event_set=2, ordinal=0,
    )  # fmt: skip
    await pipeline([entry])
    assert sink.events == [
        types.Event(
            meter_id=METER,
            observed_at=at(-3600),
            read_at=at(50),
            body=types.MeterLogEntry(emlite_type_id=33, event_set=2),
        )
    ]


async def test_clock_drift_is_one_clock_read_and_the_raw_time_is_not_stored() -> None:
    pipeline, sink = ingest()
    drift = obs.ClockDrift(
        meter_id=METER, serial=None, read_at=at(1), meter_time=at(31), local_time=at(0.5),
        drift_seconds=30.5, uncertainty_seconds=0.6,
    )  # fmt: skip
    await pipeline([reading("time", ClockTime(26, 3, 10, 12, 0, 31, 2), t=1), drift])
    assert [type(e.body) for e in sink.events] == [
        types.ClockRead,
        types.ClockDriftThresholdCrossed,
    ]


async def test_the_session_tracker_sees_outcomes_and_failures() -> None:
    pipeline, _ = ingest()
    failure = obs.ReadFailure(
        meter_id=METER, serial="EML1", read_at=at(1), object_name="prepay_balance",
        reason="crc", detail="bad crc", attempts=1,
    )  # fmt: skip
    await pipeline([failure])
    await pipeline([outcome(ok=False, online=False, t=2, failed=1, failures=3, reason="crc")])
    tracker = pipeline.tracker
    assert tracker is not None
    row = tracker.rows[METER]
    assert not row.online and row.offline_since == at(2) and row.last_error == "crc"
    assert [r.meter_id for r in tracker.take_dirty()] == [METER]
    assert tracker.take_dirty() == []
