"""What an idle meter session costs: a fleet holds tens of thousands of them."""

from __future__ import annotations

import gc
import random
import tracemalloc
import uuid

from flowsd.meters.session import MeterSession
from flowsd.meters.statistics import EngineCounts
from flowsd.meters.target import MeterTarget

from .conftest import Collector, limiter_for, production_plan, settings

METERS = 2000
# CPython 3.11, this test: 1,488 bytes per idle session when each held an empty command
# list, poll-request list, read-back dict and profile-cursor dict, and its link copies of
# the session's address, settings, limiter, counters, clock, generator and stop check;
# 1,168 since the session holds an Inbox only while something waits, makes its cursors at
# its first poll, and the link reads those from the session.
BOUND = 1300


def test_an_idle_session_holds_no_empty_containers_and_stays_under_its_byte_bound() -> None:
    config, plan = settings(), production_plan()
    counts = EngineCounts()
    limiter = limiter_for(config, counts)
    sink, rng = Collector(), random.Random(1)
    targets = [
        MeterTarget(
            meter_id=uuid.UUID(int=i + 1),
            serial=f"M{i:05d}",
            ip_address=f"10.1.{i // 200}.{i % 200 + 1}",
            hardware=("C1.w", "P1.ax")[i % 2],
        )
        for i in range(METERS + 2)
    ]
    sessions: list[MeterSession | None] = [None] * len(targets)

    def build(start: int, end: int) -> None:
        # As FleetSupervisor.apply does: settings, plan, limiter, sink, counts, clock and
        # generator are the fleet's.
        for i in range(start, end):
            sessions[i] = MeterSession(
                targets[i],
                settings=config,
                plan=plan,
                limiter=limiter,
                sink=sink,
                counts=counts,
                rng=rng,
            )

    build(0, 2)  # one of each family first: what they cache is the fleet's, not a meter's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        build(2, len(targets))
        gc.collect()
        per_session = (tracemalloc.get_traced_memory()[0] - before) / METERS
    finally:
        tracemalloc.stop()
    assert per_session < BOUND, f"{per_session:.0f} bytes per idle session"
    assert all(s is not None and s.inbox is None and s.profile_cursors == () for s in sessions)
    # A session is freed when the fleet lets it go, not at the next full collection: it is
    # in no reference cycle (a link holding its session was one).
    gc.collect()
    gc.disable()
    try:
        sessions.clear()
        assert gc.collect() == 0
    finally:
        gc.enable()
