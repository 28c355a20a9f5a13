"""Helpers for the polling-engine tests: settings, a collecting sink, simulated fleets.

Every test that opens sockets takes its own loopback /24 (127.78.<n>.x) and port 0, so
tests never collide with each other or with a running simulator.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
import uvloop

from flowsd.config import MetersConfig, PollConfig
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import Observation
from flowsd.meters.plan import PollPlan
from flowsd.meters.session import MeterSession
from flowsd.meters.statistics import EngineCounts
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import MeterResume, MeterTarget
from flowsd.sim.fleet import SimulatedFleet

_subnets = itertools.count(1)
ObsT = TypeVar("ObsT", bound=Observation)

# The daemon runs on uvloop (flowsd.ops.event_loop), whose sockets, readers and timers differ
# from the standard loop's in ways these tests have caught (millisecond timers, transports
# that are not asyncio.Transport): the modules that drive sockets and the limiter's timer
# run on both loops. The rest of the suite runs on the standard loop.
BOTH_LOOPS = frozenset(
    {"test_transport", "test_live_first", "test_limiter_timer", "test_session", "test_backfill"}
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loops a test of this package runs on (pytest-asyncio's hook, for this folder)."""
    if item.path.stem in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


FAST = MetersConfig(
    min_gap_seconds=0.0,
    connect_timeout_seconds=1.0,
    read_timeout_seconds=0.5,
    request_attempts=2,
    retry_initial_seconds=0.01,
    retry_max_seconds=0.02,
    max_new_connections_per_second=10_000.0,
    new_connections_burst=1000,
    probe_initial_seconds=0.3,
    probe_max_seconds=0.6,
    watchdog_seconds=10.0,
    schedule_jitter_seconds=0.0,
    schedule_tick_seconds=0.02,
    profile_settle_seconds=0.0,
    backfill_horizon_hours=6,
    stop_deadline_seconds=2.0,
)


def settings(**changes: Any) -> MetersConfig:
    return msgspec.structs.replace(FAST, **changes)


def plan_of(
    single: Sequence[str] = ("csq_net_op",),
    three: Sequence[str] = ("csq_net_op",),
    period: float = 0.5,
) -> PollPlan:
    poll = PollConfig(
        cadences={"fast": period},
        single_phase={"fast": list(single)},
        three_phase={"fast": list(three)},
    )
    return PollPlan.from_config(poll)


def production_plan() -> PollPlan:
    return PollPlan.from_config(PollConfig())


class Collector:
    """An observation sink that keeps everything, optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.items: list[Observation] = []
        self.delay = delay
        self.calls = 0
        self._received = anyio.Event()

    async def __call__(self, batch: Sequence[Observation]) -> None:
        self.calls += 1
        if self.delay:
            await anyio.sleep(self.delay)
        self.items.extend(batch)
        self._received.set()
        self._received = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 60.0) -> None:
        """Wait until ``predicate`` holds, checking it after every batch the sink takes.

        The limit only catches a condition that never comes (a hang, a starved meter): it
        is far above what a loaded machine needs.
        """
        with anyio.fail_after(limit):
            while not predicate():
                await self._received.wait()

    def of(self, kind: type[ObsT], serial: str | None = None) -> list[ObsT]:
        return [
            o for o in self.items if isinstance(o, kind) and (serial is None or o.serial == serial)
        ]


def subnet() -> str:
    """A fresh loopback base address for one test."""
    return f"127.78.{next(_subnets)}.1"


@asynccontextmanager
async def fleet_of(
    meters: int = 1,
    *,
    hardware: Sequence[str] | None = None,
    faults: str | None = None,
    seed: int = 7,
    history_days: int = 2,
    journal: bool = False,
) -> AsyncIterator[SimulatedFleet]:
    async with SimulatedFleet(
        meters=meters,
        seed=seed,
        base_address=subnet(),
        port=0,
        faults=faults,
        hardware=hardware,
        history_days=history_days,
        journal=journal,
    ) as fleet:
        yield fleet


def targets_for(
    fleet: SimulatedFleet,
    *,
    hardware_known: bool = True,
    resume: Callable[[int], MeterResume] | None = None,
) -> list[MeterTarget]:
    return [
        MeterTarget(
            meter_id=uuid.UUID(int=m.index + 1),
            serial=m.serial,
            ip_address=m.ip_address,
            port=m.port,
            hardware=m.hardware if hardware_known else None,
            resume=resume(m.index) if resume else MeterResume(),
        )
        for m in fleet.meters
    ]


@asynccontextmanager
async def running(supervisor: FleetSupervisor) -> AsyncIterator[FleetSupervisor]:
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        try:
            yield supervisor
        finally:
            with anyio.fail_after(10):
                await supervisor.stop()


def limiter_for(config: MetersConfig, counts: EngineCounts) -> ConnectionLimiter:
    """The connection limiter a supervisor would make for ``config``, counting into ``counts``."""
    return ConnectionLimiter(
        config.max_connections_in_flight,
        config.max_new_connections_per_second,
        config.new_connections_burst,
        totals=counts.connections,
    )


def session_for(
    target: MeterTarget, config: MetersConfig, plan: PollPlan, sink: Collector
) -> MeterSession:
    """A session outside a supervisor, with its own limiter and counters."""
    counts = EngineCounts()
    limiter = limiter_for(config, counts)
    return MeterSession(
        target, settings=config, plan=plan, limiter=limiter, sink=sink, counts=counts
    )
