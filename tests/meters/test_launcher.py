"""The launch queue: a bounded number of meter tasks run at once, the rest wait as plain
references (flowsd/meters/launcher.py), commands first, live work before back-fill."""

from __future__ import annotations

import time

import anyio

from flowsd.config import MetersConfig
from flowsd.emop import by_name
from flowsd.meters.command import MeterCommand
from flowsd.meters.launcher import MIN_MARGIN, bound_for
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import SessionOutcome
from flowsd.meters.operations import ReadObject
from flowsd.meters.plan import PollPlan
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import MeterTarget
from flowsd.sim.fleet import SimulatedFleet
from tests.support import wait_until

from .conftest import Collector, plan_of, running, settings, subnet, targets_for

HOUR = 3600.0


class LeapingClock:
    """Wall time an hour behind until the test sets ``offset`` to 0: meters applied before
    have their first slots placed an hour ago, so that leap makes every one of them due."""

    def __init__(self) -> None:
        self.offset = -HOUR

    def __call__(self) -> float:
        return time.time() + self.offset


def supervised(
    fleet: SimulatedFleet, config: MetersConfig, plan: PollPlan
) -> tuple[FleetSupervisor, Collector, LeapingClock, list[MeterTarget]]:
    """A supervisor of every meter of ``fleet`` on a :class:`LeapingClock` (an hour behind
    still), its sink, the clock and the targets."""
    clock = LeapingClock()
    sink = Collector()
    supervisor = FleetSupervisor(config, plan, sink, wall_clock=clock)
    targets = targets_for(fleet)
    supervisor.apply(targets)
    return supervisor, sink, clock, targets


class Sampler:
    """The supervisor's figures, read every couple of milliseconds while it runs."""

    def __init__(self, supervisor: FleetSupervisor) -> None:
        self.supervisor = supervisor
        self.most_running = 0
        self.most_runs = 0
        self.most_waiting = 0

    async def run(self) -> None:
        while True:
            stats = self.supervisor.statistics()
            self.most_running = max(self.most_running, stats.meters_running)
            self.most_runs = max(self.most_runs, stats.runs_in_progress)
            self.most_waiting = max(self.most_waiting, stats.meters_waiting_to_start)
            await anyio.sleep(0.002)


def test_the_bound_covers_the_slots_the_connect_gaps_and_a_margin() -> None:
    shipped = settings(
        max_connections_in_flight=256, max_new_connections_per_second=100.0, min_gap_seconds=2.0
    )
    assert bound_for(shipped) == 256 + 200 + 64
    assert bound_for(settings(max_connections_in_flight=4)) == 4 + MIN_MARGIN


async def test_a_held_limiter_withdraws_backfill_waiters_and_refuses_new_ones() -> None:
    limiter = ConnectionLimiter(max_in_flight=1, rate=1000.0, burst=10)
    assert limiter.try_acquire("live")
    results: list[bool] = []

    async def wait() -> None:
        results.append(await limiter.acquire("backfill"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        tg.start_soon(wait)
        await wait_until(lambda: limiter.waiting("backfill") == 2)
        assert limiter.hold_backfill(True) == 2
        await wait_until(lambda: results == [False, False])
        limiter.release()
        assert not limiter.try_acquire("backfill")
        assert not await limiter.acquire("backfill")  # at once, nothing held
        assert limiter.held == 3 and limiter.in_flight == 0
        assert limiter.try_acquire("live")  # live is not held
        limiter.release()
        limiter.hold_backfill(False)
        assert await limiter.acquire("backfill")
        limiter.release()


async def test_at_most_the_bound_of_meter_tasks_run_and_every_meter_is_polled() -> None:
    """200 meters due at once under 4 connections: the tasks never exceed the bound (the
    rest wait in the queue), and the simulator answered every meter."""
    config = settings(max_connections_in_flight=4)
    plan = plan_of(["csq_net_op", "prepay_balance"], period=HOUR)
    async with SimulatedFleet(
        meters=200, seed=3, base_address=subnet(), port=0, faults="slow=1:0.01s", journal=True
    ) as fleet:
        supervisor, sink, clock, _ = supervised(fleet, config, plan)
        sampler = Sampler(supervisor)
        async with anyio.create_task_group() as tg, running(supervisor):
            tg.start_soon(sampler.run)
            clock.offset = 0.0  # every meter's next slot has begun
            # A meter whose next slot begins during the test is polled again: count meters.
            await wait_until(lambda: len({o.meter_id for o in sink.of(SessionOutcome)}) == 200, 60)
            assert supervisor.statistics().meters_waiting_to_start == 0
            tg.cancel_scope.cancel()
        bound = supervisor.statistics().meters_running_bound
        assert bound == 4 + MIN_MARGIN
        assert sampler.most_running == bound and sampler.most_runs <= bound
        assert sampler.most_waiting >= 200 - bound - 10
        assert all(fleet.answers(i) for i in range(200))
        assert all(o.ok for o in sink.of(SessionOutcome))
        assert supervisor.limiter.peak_in_flight <= 4


async def test_a_command_goes_before_the_queued_scheduled_polls() -> None:
    """A command for a meter near the end of a long queue runs while most meters still
    wait to start."""
    config = settings(
        max_connections_in_flight=4, max_new_connections_per_second=60.0, new_connections_burst=1
    )
    plan = plan_of(["csq_net_op"], period=HOUR)
    async with SimulatedFleet(meters=240, seed=4, base_address=subnet(), port=0) as fleet:
        supervisor, _, clock, targets = supervised(fleet, config, plan)
        async with running(supervisor):
            clock.offset = 0.0
            await wait_until(lambda: supervisor.statistics().meters_waiting_to_start > 150)
            last = targets[-1].meter_id
            command = MeterCommand(
                ReadObject(by_name("csq_net_op").id), source="grpc", client="test"
            )
            await supervisor.submit(last, command)
            with anyio.fail_after(10):
                result = await command.wait()
            assert result.ok, result
            stats = supervisor.statistics()
            assert stats.meters_waiting_to_start > 100
            assert stats.polls < 120
            await wait_until(lambda: supervisor.statistics().polls >= 240, 30)


async def test_backfill_yields_to_meters_waiting_to_start() -> None:
    """Forty meters, each with a day of profile logs to catch up, due at once under one
    connection: the tasks that run first do not spend their places on back-fill while
    others wait to start, so every meter's live read is answered before more than a few
    back-fill requests (without the hold, the first tasks' whole back-fill would go first:
    hundreds of requests)."""
    config = settings(
        max_connections_in_flight=1,
        backfill_horizon_hours=24,
        backfill_max_requests_per_poll=200,
    )
    plan = plan_of(["csq_net_op", "profile_logs"], period=HOUR)
    async with SimulatedFleet(
        meters=40,
        seed=12,
        base_address=subnet(),
        port=0,
        hardware=["C1.w"] * 40,
        history_days=2,
        journal=True,
    ) as fleet:
        supervisor, _, clock, _ = supervised(fleet, config, plan)
        journal = fleet.journal
        assert journal is not None
        async with running(supervisor):
            clock.offset = 0.0
            await wait_until(lambda: all(fleet.answers(i) for i in range(40)), 60)
            assert supervisor.statistics().meters_waiting_to_start == 0
        firsts = [journal.index(fleet.answers(i)[0]) for i in range(40)]
        backfill = sum(1 for e in journal[: max(firsts)] if e.request[:1] != b"\x01")
        assert backfill <= 8, backfill
        assert supervisor.limiter.held > 0
        assert supervisor.statistics().backfill_deferred > 0


def test_a_reload_of_the_caps_moves_the_bound() -> None:
    supervisor = FleetSupervisor(settings(max_connections_in_flight=4), plan_of(), Collector())
    assert supervisor.statistics().meters_running_bound == 4 + MIN_MARGIN
    reloaded = settings(
        max_connections_in_flight=200, max_new_connections_per_second=50.0, min_gap_seconds=1.0
    )
    supervisor.reconfigure(reloaded, plan_of())
    assert supervisor.statistics().meters_running_bound == 200 + 50 + 50


async def test_meters_removed_or_held_back_while_queued_are_not_started() -> None:
    """A meter that leaves the fleet (registry change, lease lost) or is held back (lease
    handed over) while it waits to start is never started; the others all are."""
    config = settings(
        max_connections_in_flight=4, max_new_connections_per_second=100.0, new_connections_burst=1
    )
    plan = plan_of(["csq_net_op"], period=HOUR)
    async with SimulatedFleet(meters=120, seed=6, base_address=subnet(), port=0) as fleet:
        supervisor, sink, clock, targets = supervised(fleet, config, plan)
        async with running(supervisor):
            clock.offset = 0.0
            await wait_until(lambda: supervisor.statistics().meters_waiting_to_start > 80)
            started = {o.meter_id for o in sink.of(SessionOutcome)} | {
                m for m, s in supervisor.sessions.items() if s.running
            }
            waiting = supervisor.statistics().meters_waiting_to_start
            # Chosen among the meters not started: the launch order follows due times, not
            # the list's order, so a slice of the list could hold started meters.
            queued = [t.meter_id for t in targets if t.meter_id not in started]
            removed, held = set(queued[-20:]), set(queued[-40:-20])
            supervisor.apply(t for t in targets if t.meter_id not in removed)
            supervisor.hold_back(held)
            assert supervisor.statistics().meters_waiting_to_start == waiting - len(removed)
            rest = {t.meter_id for t in targets} - removed - held
            await wait_until(lambda: rest <= {o.meter_id for o in sink.of(SessionOutcome)}, 30)
            assert supervisor.statistics().meters_waiting_to_start == 0
            assert all(supervisor.idle(m) for m in held)
        polled = {o.meter_id for o in sink.of(SessionOutcome)}
        assert len(removed) == len(held) == 20
        assert not polled & (removed | held)
