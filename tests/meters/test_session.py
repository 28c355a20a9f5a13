"""A session against simulated meters: every object per hardware kind, time, faults."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from flowsd.emop.frame import Format
from flowsd.emop.hardware import HardwareFamily
from flowsd.emop.records import ClockTime, CsqNetOp, PrepayBalance, Serial
from flowsd.emop.units import to_emop_seconds
from flowsd.meters.observations import (
    ClockDrift,
    EventLogScanned,
    IntervalGap,
    IntervalRecord,
    MeterLogEntry,
    ReadFailure,
    Reading,
    SessionOutcome,
    ThreePhaseInterval,
)
from flowsd.meters.plan import ObjectRead
from flowsd.meters.target import MeterResume

from .conftest import (
    Collector,
    fleet_of,
    plan_of,
    production_plan,
    session_for,
    settings,
    targets_for,
)

HARDWARE = ["C1.w", "B1.w", "EMA1.w", "P1.ax", "P1.cx"]


@pytest.mark.parametrize("hardware_known", [True, False])
async def test_a_poll_reads_every_planned_object_for_each_hardware_kind(
    hardware_known: bool,
) -> None:
    plan = production_plan()
    config = settings(read_timeout_seconds=2.0)
    async with fleet_of(len(HARDWARE), hardware=HARDWARE) as fleet:
        now = datetime.now(UTC)
        resume = MeterResume(
            profile_log_1_last=now - timedelta(hours=3), profile_log_2_last=now - timedelta(hours=3)
        )
        for target, meter in zip(
            targets_for(fleet, hardware_known=hardware_known, resume=lambda _: resume),
            fleet.meters,
            strict=True,
        ):
            sink = Collector()
            session = session_for(target, config, plan, sink)
            await session.poll(plan.cadence_names())
            family: HardwareFamily = "three_phase" if meter.three_phase else "single_phase"
            wanted = {
                i.name for c in plan.cadences(family) for i in c.items if isinstance(i, ObjectRead)
            }
            read = {r.object_name for r in sink.of(Reading)}
            naks = {f.object_name for f in sink.of(ReadFailure) if f.reason == "nak"}
            assert not [f for f in sink.of(ReadFailure) if f.reason != "nak"]
            # Three-phase meters refuse hardware_version, and L2/L3 voltages now and then.
            allowed_naks = {
                "hardware_version",
                "three_phase_instantaneous_voltage_l2",
                "three_phase_instantaneous_voltage_l3",
            }
            assert naks <= (allowed_naks if meter.three_phase else set()), meter.hardware
            assert read | naks == wanted, meter.hardware
            truth = fleet.truth(meter.index)
            serials = [r.record for r in sink.of(Reading) if isinstance(r.record, Serial)]
            if not meter.three_phase:
                assert [s.value for s in serials] == [truth.serial]
                balance = [
                    r.record for r in sink.of(Reading) if isinstance(r.record, PrepayBalance)
                ]
                assert len(balance) == 1
                assert sink.of(EventLogScanned)
                intervals = sink.of(IntervalRecord)
                assert {i.log for i in intervals} == {1, 2}
                assert len(intervals) >= 2 * 5
            else:
                assert not sink.of(IntervalRecord) and not sink.of(MeterLogEntry)
            (outcome,) = sink.of(SessionOutcome)
            assert outcome.ok and outcome.online and outcome.kind == "poll"
            assert session.family == family
            assert session.hardware == meter.hardware  # learned from the meter when unknown


async def test_clock_reading_keeps_meter_time_and_measures_drift() -> None:
    plan = plan_of(["time"])
    async with fleet_of(1, hardware=["B1.w"]) as fleet:
        (target,) = targets_for(fleet)
        sink = Collector()
        await session_for(target, settings(), plan, sink).poll(["fast"])
        (reading,) = sink.of(Reading)
        (drift,) = sink.of(ClockDrift)
        assert isinstance(reading.record, ClockTime)
        assert reading.meter_time == reading.record.to_datetime() == drift.meter_time
        assert reading.read_at.tzinfo is not None and reading.read_at.utcoffset() == timedelta(0)
        truth = fleet.truth(0)
        expected = (truth.meter_clock - truth.at).total_seconds()
        assert abs(drift.drift_seconds - expected) <= drift.uncertainty_seconds + 0.1
        assert abs(expected) > 1.0  # the simulated meter's clock is off: drift is visible


async def test_profile_records_carry_the_meters_own_timestamps_and_match_truth() -> None:
    # An hourly cadence: back-fill yields once the meter's next run is due, which for a new
    # schedule comes within 0.9 of a period (half a second would cut the reading short).
    plan = plan_of(["profile_logs"], period=3600.0)
    async with fleet_of(1, hardware=["C1.w"]) as fleet:
        now = datetime.now(UTC)
        last = now - timedelta(hours=4)
        resume = MeterResume(profile_log_1_last=last, profile_log_2_last=last)
        (target,) = targets_for(fleet, resume=lambda _: resume)
        sink = Collector()
        await session_for(target, settings(), plan, sink).poll(["fast"])
        log1 = [r for r in sink.of(IntervalRecord) if r.log == 1]
        # Up to now, after the poll: a half hour may have ended while it ran.
        truth = {t.end: t for t in fleet.intervals(0, last, datetime.now(UTC))}
        assert len(log1) >= 7
        for record in log1:
            assert record.interval_at.minute in (0, 30) and record.interval_at > last
            expected = truth[record.interval_at]
            assert (record.record.import_a, record.record.import_b) == expected.registers_at_end[:2]  # type: ignore[union-attr]


@pytest.mark.parametrize("hardware", ["P1.ax", "P1.cx"])
async def test_three_phase_intervals_are_read_from_the_resume_point_and_match_truth(
    hardware: str,
) -> None:
    """The interval profile in 4-hour windows: each record stamped with its start, every
    completed half hour after the last stored one, once; demand is the half hour's Wh × 2
    (× 20 on the CT-operated P1.cx, whose values count 0.1 W)."""
    plan = plan_of(three=["profile_logs"], period=60.0)
    async with fleet_of(1, hardware=[hardware]) as fleet:
        now = datetime.now(UTC)
        last = now - timedelta(hours=5)  # within the horizon: two windows of 4 hours
        resume = MeterResume(three_phase_interval_last=last)
        (target,) = targets_for(fleet, resume=lambda _: resume)
        sink = Collector()
        await session_for(target, settings(), plan, sink).poll(["fast"])
        now = datetime.now(UTC)  # after the poll: a half hour may have ended while it ran
        intervals = sink.of(ThreePhaseInterval)
        starts = [i.interval_at for i in intervals]
        assert starts == sorted(set(starts)) and len(starts) >= 8
        assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(starts))
        assert starts[0] > last and starts[0] - last <= timedelta(minutes=30)
        assert starts[-1] + timedelta(minutes=30) <= now
        scale = 20 if hardware == "P1.cx" else 2
        truth = {t.start: t for t in fleet.intervals(0, last, now)}
        for interval in intervals:
            assert interval.profile == 0 and interval.interval_minutes == 30
            expected = truth[interval.interval_at]
            assert interval.channels[0xD79600] == expected.import_a * scale
            assert interval.channels[0xD79601] == expected.export_a * scale
            assert interval.status.valid_data == expected.status.valid_data


def _half_hour(at: datetime) -> int:
    return to_emop_seconds(at) // 1800 * 1800


async def test_a_hole_in_the_interval_profile_is_passed_as_a_gap_not_asked_for_forever() -> None:
    """Seven hours the meter holds no intervals for (one 4-hour window wholly inside them):
    the poll reports the hole as gaps and goes on to the intervals after it."""
    plan = plan_of(three=["profile_logs"], period=60.0)
    async with fleet_of(1, hardware=["P1.ax"]) as fleet:
        now = datetime.now(UTC)
        last = now - timedelta(hours=14)
        hole = (_half_hour(now - timedelta(hours=12)), _half_hour(now - timedelta(hours=5)))
        fleet.state.writable(0).interval_holes.append(hole)
        resume = MeterResume(three_phase_interval_last=last)
        (target,) = targets_for(fleet, resume=lambda _: resume)
        sink = Collector()
        config = settings(backfill_horizon_hours=24)
        await session_for(target, config, plan, sink).poll(["fast"])
        starts = [to_emop_seconds(i.interval_at) for i in sink.of(ThreePhaseInterval)]
        gaps = [(to_emop_seconds(g.start), to_emop_seconds(g.end)) for g in sink.of(IntervalGap)]
    assert not [s for s in starts if hole[0] <= s < hole[1]]
    assert max(starts) >= _half_hour(now) - 3600  # the intervals after the hole arrived
    assert gaps and gaps[0][0] == hole[0] and gaps[-1][1] == hole[1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(gaps))  # the hole, once, whole


async def test_a_profile_that_is_not_half_hourly_is_not_asked_again_at_every_poll() -> None:
    plan = plan_of(three=["profile_logs"], period=60.0)
    async with fleet_of(1, hardware=["P1.ax"]) as fleet:
        fleet.state.writable(0).interval_minutes = 15
        fleet.journal = []
        resume = MeterResume(three_phase_interval_last=datetime.now(UTC) - timedelta(hours=2))
        (target,) = targets_for(fleet, resume=lambda _: resume)
        sink = Collector()
        session = session_for(target, settings(), plan, sink)
        for _ in range(3):
            await session.poll(["fast"])
        asked = [e for e in fleet.journal if e.request[0] == Format.THREE_PHASE_INTERVALS]
    assert len(asked) == 1
    assert not sink.of(ThreePhaseInterval)


FAULT_CASES = [
    ("refuse=1", {"reset", "refused", "closed"}),
    ("blackhole=1", {"read_timeout"}),
    ("slow=1:2s", {"read_timeout"}),
    ("badcrc=1", {"crc"}),
    ("truncate=1", {"truncated"}),
    ("garbage=1", {"bad_delimiter"}),
    ("trickle=1:0.2s", {"read_timeout"}),
    ("nak=1", {"nak"}),
    ("nak=1:2", {"nak"}),
    ("offline=1:1h", {"refused"}),
]


@pytest.mark.parametrize(("faults", "reasons"), FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
async def test_faults_give_their_reason_and_never_raise(faults: str, reasons: set[str]) -> None:
    plan = plan_of(["csq_net_op", "prepay_balance"])
    config = settings(read_timeout_seconds=0.4, request_attempts=2)
    async with fleet_of(1, hardware=["B1.w"], faults=faults) as fleet:
        (target,) = targets_for(fleet)
        sink = Collector()
        session = session_for(target, config, plan, sink)
        await session.poll(["fast"])
        failures = sink.of(ReadFailure)
        assert failures and {f.reason for f in failures} <= reasons, failures
        (outcome,) = sink.of(SessionOutcome)
        if "nak" in reasons:
            assert outcome.ok and len(failures) == 2 and session.breaker.consecutive_failures == 0
        else:
            assert not outcome.ok and outcome.reason in reasons
            assert session.breaker.consecutive_failures >= 1
        assert not sink.of(Reading)


@pytest.mark.parametrize("faults", ["split=1:4", "trickle=1:0.005s", "toosoon=1:0.01s"])
async def test_split_and_slow_but_complete_answers_are_read(faults: str) -> None:
    plan = plan_of(["csq_net_op", "prepay_balance"])
    config = settings(read_timeout_seconds=2.0, min_gap_seconds=0.05)
    async with fleet_of(1, hardware=["B1.w"], faults=faults) as fleet:
        (target,) = targets_for(fleet)
        sink = Collector()
        await session_for(target, config, plan, sink).poll(["fast"])
        assert not sink.of(ReadFailure)
        csq = [r.record for r in sink.of(Reading) if isinstance(r.record, CsqNetOp)]
        assert len(csq) == 1 and csq[0].csq == fleet.truth(0).csq
