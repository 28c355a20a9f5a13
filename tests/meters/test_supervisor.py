"""The fleet supervisor against simulated fleets: breaker, caps, cadence, backfill,
back-pressure, watchdog, apply() and stop()."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from flowsd.config import PollConfig
from flowsd.errors import ConfigError
from flowsd.meters.observations import (
    IntervalGap,
    IntervalRecord,
    ReadFailure,
    Reading,
    SessionOutcome,
)
from flowsd.meters.plan import PollPlan
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import MeterResume
from flowsd.sim.clock import SimClock
from flowsd.sim.faults import FaultPlan
from tests.support import wait_until

from .conftest import (
    Collector,
    fleet_of,
    plan_of,
    running,
    settings,
    targets_for,
)


def _outcomes(sink: Collector, serial: str, kind: str | None = None) -> list[SessionOutcome]:
    return [o for o in sink.of(SessionOutcome, serial) if kind is None or o.kind == kind]


async def test_breaker_takes_a_dead_meter_offline_probes_cheaply_and_brings_it_back() -> None:
    plan = plan_of(["csq_net_op", "prepay_balance", "instantaneous_voltage"], period=0.3)
    config = settings(offline_after_failures=2, read_timeout_seconds=0.2, request_attempts=2)
    async with fleet_of(2, hardware=["B1.w", "B1.w"], faults="blackhole@1=1") as fleet:
        healthy, dead = (m.serial for m in fleet.meters)
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            await wait_until(lambda: len(_outcomes(sink, dead, "probe")) >= 3)
            went = [o for o in _outcomes(sink, dead) if o.transition == "went_offline"]
            assert len(went) == 1 and not went[0].online
            assert supervisor.status().offline == 1
            failing = supervisor.status().failing
            assert [f.serial for f in failing] == [dead] and failing[0].reason == "read_timeout"
            # Offline: only probes, one request each, no retries.
            after = _outcomes(sink, dead)[_outcomes(sink, dead).index(went[0]) + 1 :]
            assert after and all(o.kind == "probe" and o.requests == 1 for o in after)
            # The healthy meter kept its cadence meanwhile.
            assert len([o for o in _outcomes(sink, healthy) if o.ok]) >= 3
            fleet.plan = FaultPlan.parse(None)  # the meter answers again
            await wait_until(
                lambda: any(o.transition == "came_online" for o in _outcomes(sink, dead))
            )
            await wait_until(lambda: _outcomes(sink, dead)[-1].kind == "poll")
        assert supervisor.status().offline == 0
        assert supervisor.statistics().probes >= 3


async def test_global_caps_hold_and_healthy_meters_keep_cadence_while_others_fail() -> None:
    plan = plan_of(["csq_net_op", "prepay_balance"], period=0.5)
    config = settings(
        max_connections_in_flight=4,
        max_new_connections_per_second=40.0,
        new_connections_burst=4,
        read_timeout_seconds=0.2,
        request_attempts=1,
        offline_after_failures=100,  # keep the dead meters in the plan: worst case for slots
    )
    # Meters 0-9 answer after 50 ms (connections stay open), 10-14 never answer.
    async with fleet_of(15, seed=3, faults="slow=1:50ms,blackhole@10-14=1") as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        healthy = [m.serial for m in fleet.meters][:10]

        def polled() -> list[int]:
            return [len([o for o in _outcomes(sink, s) if o.ok]) for s in healthy]

        async with running(supervisor):
            await sink.wait_for(lambda: min(polled()) >= 2)
            await wait_until(lambda: supervisor.limiter.peak_in_flight == 4)
        limiter = supervisor.limiter
        assert limiter.peak_in_flight == 4  # reached, never exceeded
        assert limiter.max_connects_in_window(1.0) <= 4 + 40
        assert limiter.in_flight == 0
        dead = [m.serial for m in fleet.meters][10:]
        assert all(_outcomes(sink, s) for s in dead)
        assert all(not o.ok for s in dead for o in _outcomes(sink, s))


async def test_backfill_is_bounded_per_poll_and_completes() -> None:
    plan = plan_of(["profile_logs"], period=0.3)
    config = settings(backfill_max_requests_per_poll=3, backfill_horizon_hours=48)
    now = datetime.now(UTC)
    last = (now - timedelta(hours=10)).replace(minute=0, second=0, microsecond=0)
    resume = MeterResume(profile_log_1_last=last, profile_log_2_last=last)
    async with fleet_of(1, hardware=["C1.w"]) as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet, resume=lambda _: resume))
        wanted = {t.end for t in fleet.intervals(0, last, datetime.now(UTC) - timedelta(minutes=1))}

        def have(log: int) -> set[datetime]:
            return {r.interval_at for r in sink.of(IntervalRecord) if r.log == log}

        async with running(supervisor):
            await wait_until(lambda: wanted <= have(1) and wanted <= have(2), seconds=20)
        polls = _outcomes(sink, next(iter(fleet.meters)).serial)
        assert all(o.requests <= 3 for o in polls)
        # Log 1 gives 4 half hours per request, twin-element log 2 gives 2.
        needed = -(-len(wanted) // 4) + -(-len(wanted) // 2)
        assert sum(o.requests for o in polls) >= needed
        assert len(polls) >= needed // 3
        for log in (1, 2):
            records = [r.interval_at for r in sink.of(IntervalRecord) if r.log == log]
            assert len(records) == len(set(records)), "no half hour delivered twice"
        assert not sink.of(IntervalGap)


async def test_slow_sink_applies_back_pressure_and_nothing_is_lost() -> None:
    objects = ["csq_net_op", "prepay_balance"]
    plan = plan_of(objects, period=0.2)
    # Each sink call takes longer than the watchdog allows a stuck poll: waiting on it must
    # not count as being stuck. The exchanges themselves get ample time (a loaded machine
    # must not fire the watchdog or a read timeout), and stop() waits for in-flight polls
    # rather than abandoning a sink call.
    config = settings(watchdog_seconds=0.8, read_timeout_seconds=5.0, stop_deadline_seconds=30.0)
    async with fleet_of(3, hardware=["B1.w"] * 3) as fleet:
        sink = Collector(delay=1.0)
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            await sink.wait_for(lambda: len([o for o in sink.of(SessionOutcome) if o.ok]) >= 3)
            # Slow sink, so polls overran their slots instead of piling up.
            await wait_until(lambda: supervisor.statistics().skipped_slots > 0)
        assert supervisor.statistics().watchdog_cancellations == 0
        outcomes = sink.of(SessionOutcome)
        # Polls still running at stop() end early after their current request.
        assert all(o.ok or o.reason == "stopped" for o in outcomes), outcomes
        # Every answer read reached the sink: readings == successful requests.
        assert len(sink.of(Reading)) == supervisor.statistics().requests_ok
        complete = [o for o in outcomes if o.ok]
        assert len(complete) >= 3
        assert all(o.requests == len(objects) for o in complete)


async def test_watchdog_cancels_a_wedged_poll_and_counts_it() -> None:
    plan = plan_of(["csq_net_op"], period=0.3)
    config = settings(read_timeout_seconds=30.0, watchdog_seconds=0.3, offline_after_failures=5)
    async with fleet_of(1, faults="blackhole=1") as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            await wait_until(lambda: supervisor.statistics().watchdog_cancellations >= 2)
        watchdogged = [o for o in sink.of(SessionOutcome) if o.reason == "watchdog"]
        assert len(watchdogged) >= 2 and all(not o.ok for o in watchdogged)
        assert supervisor.limiter.in_flight == 0


async def test_apply_keeps_schedules_and_cursors_of_unchanged_and_updated_meters() -> None:
    plan = plan_of(["csq_net_op"], period=60.0)
    async with fleet_of(3) as fleet:
        supervisor = FleetSupervisor(settings(), plan, Collector())
        first = targets_for(fleet)
        assert supervisor.apply(first).added == 3
        sessions = dict(supervisor.sessions)
        due = {k: s.next_wake() for k, s in sessions.items()}
        moved = msgspec.structs.replace(first[1], ip_address="127.78.250.9", hardware="C1.w")
        result = supervisor.apply([first[0], moved])
        assert (result.added, result.updated, result.removed, result.unchanged) == (0, 1, 1, 1)
        assert supervisor.sessions[first[0].meter_id] is sessions[first[0].meter_id]
        assert supervisor.sessions[moved.meter_id] is sessions[moved.meter_id]
        assert supervisor.sessions[moved.meter_id].target.ip_address == "127.78.250.9"
        assert {k: s.next_wake() for k, s in supervisor.sessions.items()} == {
            k: due[k] for k in supervisor.sessions
        }
        assert first[2].meter_id not in supervisor.sessions
        new = msgspec.structs.replace(first[2], meter_id=uuid.uuid4())
        assert supervisor.apply([first[0], moved, new]).added == 1


async def test_sessions_share_one_stopping_check_that_follows_the_supervisor() -> None:
    # One callable for the fleet, not a closure per meter (200 bytes each at 19,500 meters).
    async with fleet_of(3) as fleet:
        supervisor = FleetSupervisor(settings(), plan_of(period=60.0), Collector())
        supervisor.apply(targets_for(fleet))
        checks = {id(s.stopping) for s in supervisor.sessions.values()}
        assert len(checks) == 1
        session = next(iter(supervisor.sessions.values()))
        assert not session.stopping()
        await supervisor.stop()
        assert session.stopping()


async def test_a_poll_request_is_answered_once_and_leaves_the_session_idle_again() -> None:
    config = settings(read_timeout_seconds=60.0, stop_deadline_seconds=0.3)
    async with fleet_of(1, hardware=["B1.w"], faults="slow=1:300ms") as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan_of(period=3600.0), sink)
        supervisor.apply(targets_for(fleet))
        session = next(iter(supervisor.sessions.values()))
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            answered = await supervisor.poll_now(session.target.meter_id).wait()
            assert answered is not None and answered.ok and answered.kind == "poll"
            assert session.inbox is None
            # Stopped while the asked-for poll runs: stop() answers the caller (None), and
            # the poll that ends afterwards does not answer it again.
            request = supervisor.poll_now(session.target.meter_id)
            await wait_until(lambda: session.running)
            with anyio.fail_after(5):
                await supervisor.stop()
            assert await request.wait() is None
        assert session.inbox is None and not session.running


async def test_stop_abandons_in_flight_requests_within_the_deadline() -> None:
    plan = plan_of(["csq_net_op"], period=0.2)
    config = settings(read_timeout_seconds=60.0, watchdog_seconds=60.0, stop_deadline_seconds=0.3)
    async with fleet_of(2, faults="blackhole=1") as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await wait_until(lambda: supervisor.limiter.in_flight == 2)
            with anyio.fail_after(5):
                await supervisor.stop()
        assert supervisor.limiter.in_flight == 0
        assert not supervisor.status().running
        assert not sink.of(ReadFailure)  # abandoned, not reported as meter failures


async def test_a_meter_offline_before_a_restart_is_probed_and_comes_back() -> None:
    plan = plan_of(["csq_net_op"], period=0.3)
    earlier = datetime.now(UTC) - timedelta(hours=2)
    async with fleet_of(1) as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(settings(), plan, sink)
        supervisor.apply(targets_for(fleet, resume=lambda _: MeterResume(offline_since=earlier)))
        assert supervisor.status().offline == 1
        async with running(supervisor):
            await wait_until(lambda: any(o.kind == "poll" for o in sink.of(SessionOutcome)))
        first, *_ = sink.of(SessionOutcome)
        assert first.kind == "probe" and first.transition == "came_online"
        assert not [o for o in sink.of(SessionOutcome) if o.transition == "went_offline"]


async def test_a_failing_sink_does_not_stop_the_engine() -> None:
    plan = plan_of(["csq_net_op"], period=0.2)
    calls = 0

    async def flaky(batch: object) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("appender closed")

    async with fleet_of(1) as fleet:
        supervisor = FleetSupervisor(settings(), plan, flaky)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            await wait_until(lambda: calls >= 8)
        assert supervisor.status().polls_running == 0


def test_unknown_probe_object_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="probe_object"):
        FleetSupervisor(settings(probe_object="nope"), plan_of(), Collector())


async def test_fleet_coming_back_after_an_outage_reconnects_within_the_rate_cap() -> None:
    plan = plan_of(["csq_net_op"], period=0.5)
    config = settings(
        offline_after_failures=1,
        read_timeout_seconds=0.1,
        request_attempts=1,
        probe_initial_seconds=0.4,
        probe_max_seconds=0.8,
        max_new_connections_per_second=15.0,
        new_connections_burst=3,
    )
    async with fleet_of(20, seed=5, faults="blackhole=1") as fleet:
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            await wait_until(lambda: supervisor.status().offline == 20, seconds=15)
            fleet.plan = FaultPlan.parse(None)  # the outage ends for everyone at once
            await wait_until(lambda: supervisor.status().online == 20, seconds=15)
        assert supervisor.limiter.max_connects_in_window(1.0) <= 3 + 15
        came_back = [o for o in sink.of(SessionOutcome) if o.transition == "came_online"]
        assert len(came_back) == 20


async def test_reconfigure_keeps_unchanged_cadences_and_applies_new_caps() -> None:
    plan = PollPlan.from_config(
        PollConfig(
            cadences={"a": 60.0, "b": 120.0},
            single_phase={"a": ["csq_net_op"], "b": ["serial"]},
            three_phase={"a": ["csq_net_op"]},
        )
    )
    async with fleet_of(2, hardware=["B1.w", "B1.w"]) as fleet:
        supervisor = FleetSupervisor(settings(), plan, Collector())
        supervisor.apply(targets_for(fleet))
        session = next(iter(supervisor.sessions.values()))
        session.schedule.mark_done(["a"], supervisor.wall_clock())  # its first run done
        a = session.schedule.cadence("a")
        kept = (a.phase, a.last_done)
        faster = PollPlan.from_config(
            PollConfig(
                cadences={"a": 60.0, "b": 30.0},
                single_phase={"a": ["csq_net_op"], "b": ["serial"]},
                three_phase={"a": ["csq_net_op"]},
            )
        )
        supervisor.reconfigure(settings(max_connections_in_flight=2), faster)
        # Kept, not made again: a new cadence would have a brought-forward first run pending.
        a = session.schedule.cadence("a")
        assert (a.phase, a.last_done) == kept and a.first_due is None
        assert session.schedule.periods()["b"] == 30.0
        assert supervisor.limiter.max_in_flight == 2 and session.limiter is supervisor.limiter
        with pytest.raises(ConfigError):
            supervisor.reconfigure(settings(probe_object="nope"), faster)


async def test_two_meter_ids_on_one_address_never_talk_to_it_at_once() -> None:
    plan = plan_of(["csq_net_op", "prepay_balance"], period=0.2)
    # Each poll (two slow answers) outlasts the period, so both ids are due while the other
    # talks; the read timeout leaves a loaded machine room to deliver the 100 ms answers.
    async with fleet_of(1, hardware=["B1.w"], faults="slow=1:100ms") as fleet:
        (target,) = targets_for(fleet)
        twin = msgspec.structs.replace(target, meter_id=uuid.uuid4(), serial="DUPLICATE")
        sink = Collector()
        supervisor = FleetSupervisor(settings(read_timeout_seconds=5.0), plan, sink)
        supervisor.apply([target, twin])

        def polls(serial: str | None) -> int:
            return len([o for o in sink.of(SessionOutcome, serial) if o.ok])

        async with running(supervisor):
            # Two turns each: neither id is starved once the other has had its go.
            await sink.wait_for(lambda: polls("DUPLICATE") >= 2 and polls(target.serial) >= 2)
        assert supervisor.limiter.peak_in_flight == 1


async def test_round_complete_tells_a_clock_driver_when_every_online_meter_was_polled() -> None:
    clock = SimClock(datetime(2026, 3, 10, 12, tzinfo=UTC), speed=0.0)
    plan = plan_of(["csq_net_op", "prepay_balance"], period=60.0)
    config = settings(offline_after_failures=1, request_attempts=1)
    async with fleet_of(3, hardware=["B1.w"] * 3, faults="refuse@2=1") as fleet:
        fleet.clock = clock
        sink = Collector()
        supervisor = FleetSupervisor(config, plan, sink, wall_clock=clock.unix)
        supervisor.apply(targets_for(fleet))
        async with running(supervisor):
            # Nothing is due before the clock moves: each meter's first slot is the next one.
            assert supervisor.round_complete()
            for step in range(1, 4):
                clock.advance(hours=1)
                assert not supervisor.round_complete()
                await wait_until(supervisor.round_complete)
                polls = [
                    len(_outcomes(sink, m.serial, "poll")) for m in fleet.meters
                ]  # the refused meter went offline in the first round: probed since, not polled
                assert polls == [step, step, 1], polls
                assert [o.ok for o in _outcomes(sink, fleet.meters[0].serial)] == [True] * step
