"""The stale-meter rule, alone and in the supervisor against a simulated fleet."""

from __future__ import annotations

import tracemalloc
import uuid

from flowsd.meters.freshness import STALE_AFTER_PERIODS, Freshness, FreshnessView
from flowsd.meters.supervisor import FleetSupervisor
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

METER = uuid.UUID(int=1)
PERIODS = {"half_hourly": 1800.0, "daily": 86400.0}


def view(online: bool = True) -> FreshnessView:
    return FreshnessView(METER, online, PERIODS)


def test_the_rule_keeps_under_200_bytes_a_polled_meter() -> None:
    """A fleet of 20,000 meters keeps a baseline and three success times per meter: measured
    149 bytes a meter (one array of doubles each); a dict of floats per meter took 301."""
    meters = [uuid.UUID(int=n) for n in range(2000)]
    rule = Freshness()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, meter_id in enumerate(meters):
            rule.restart_clock(meter_id, 1000.0 + n)
            rule.polled(meter_id, ["half_hourly", "hourly", "daily"], 2000.0 + n)
        per_meter = (tracemalloc.get_traced_memory()[0] - before) / len(meters)
    finally:
        tracemalloc.stop()
    assert per_meter < 200, per_meter
    assert rule.since(meters[5]) == 1005.0 and rule.succeeded(meters[5], "hourly") == 2005.0
    assert rule.succeeded(meters[5], "weekly") is None


def test_a_meter_is_stale_after_three_periods_without_a_successful_poll() -> None:
    freshness = Freshness()
    freshness.restart_clock(METER, 0.0)
    limit = STALE_AFTER_PERIODS * 1800.0
    assert freshness.overdue(view(), limit) is None  # exactly three periods: not yet
    found = freshness.overdue(view(), limit + 1)
    assert found is not None and found.cadence == "half_hourly" and found.age_seconds == limit + 1
    freshness.polled(METER, ["half_hourly"], limit)
    assert freshness.overdue(view(), limit + 1) is None
    # The daily cadence counts from the baseline too, with its own period.
    assert freshness.overdue(view(), 3 * 86400.0 + 1) is not None


def test_offline_meters_are_not_stale_and_a_comeback_restarts_the_clock() -> None:
    freshness = Freshness()
    freshness.restart_clock(METER, 0.0)
    assert freshness.overdue(view(online=False), 10 * 86400.0) is None
    freshness.restart_clock(METER, 10 * 86400.0)  # came back online
    assert freshness.overdue(view(), 10 * 86400.0 + 60) is None


def test_evaluate_reports_transitions_once() -> None:
    freshness = Freshness()
    freshness.restart_clock(METER, 0.0)
    freshness.watch(METER, PERIODS)
    assert freshness.deadline(METER, PERIODS) == STALE_AFTER_PERIODS * 1800.0
    assert freshness.evaluate(5400.0, lambda _: view()) == ([], [])
    turned, fresh = freshness.evaluate(6000.0, lambda _: view())
    assert [s.meter_id for s in turned] == [METER] and fresh == []
    assert freshness.evaluate(6100.0, lambda _: view()) == ([], [])
    freshness.polled(METER, ["half_hourly"], 6200.0)
    assert freshness.evaluate(6300.0, lambda _: view()) == ([], [METER])
    assert freshness.stale == {}
    # Polled in time: its entry comes up, is pushed to the new deadline, never stale.
    freshness.polled(METER, ["half_hourly"], 11000.0)
    assert freshness.evaluate(6200.0 + 5400.0 + 1, lambda _: view()) == ([], [])
    turned, _ = freshness.evaluate(11000.0 + 5400.0 + 1, lambda _: view())
    assert [s.meter_id for s in turned] == [METER]


def test_offline_and_departed_meters_leave_the_heap_until_watched_again() -> None:
    freshness = Freshness()
    freshness.restart_clock(METER, 0.0)
    freshness.watch(METER, PERIODS)
    assert freshness.evaluate(6000.0, lambda _: view(online=False)) == ([], [])
    assert freshness.evaluate(7000.0, lambda _: view()) == ([], [])  # not re-examined
    freshness.restart_clock(METER, 7000.0)  # came back online
    freshness.watch(METER, PERIODS)
    turned, _ = freshness.evaluate(7000.0 + 5401.0, lambda _: view())
    assert [s.meter_id for s in turned] == [METER]
    assert freshness.evaluate(20000.0, lambda _: None) == ([], [METER])


async def test_a_slow_meter_turns_stale_while_answering_and_fresh_when_it_speeds_up() -> None:
    # Every answer of meter 1 takes 0.6 s: a poll of three objects outlasts three 0.3 s
    # periods, so its readings age past the rule while it answers everything.
    plan = plan_of(["csq_net_op", "prepay_balance", "instantaneous_voltage"], period=0.3)
    config = settings(read_timeout_seconds=5.0, request_attempts=1)
    async with fleet_of(2, hardware=["B1.w", "B1.w"], faults="slow@1=1:600ms") as fleet:
        supervisor = FleetSupervisor(config, plan, Collector())
        supervisor.freshness.every_seconds = 0.1
        supervisor.apply(targets_for(fleet))
        slow = uuid.UUID(int=2)
        async with running(supervisor):
            await wait_until(lambda: slow in supervisor.freshness.stale)
            assert set(supervisor.freshness.stale) == {slow}
            assert supervisor.status().stale == 1 and supervisor.status().offline == 0
            assert supervisor.statistics().stale == 1
            fleet.plan = FaultPlan.parse(None)
            await wait_until(lambda: not supervisor.freshness.stale)
            assert supervisor.status().stale == 0
