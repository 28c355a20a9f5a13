"""Two projector runners on one database: each projection runs in exactly one of them.

The first test is one scenario: runner ``a`` alone runs every projection from the start;
``b`` joins and the projections spread five and five; events appended are applied once (no
checkpoint conflict, each projection's events counted by one runner); ``a``'s leadership
connection is killed and the projections are run again, each by one runner; then ``a``'s
connections all go (its pool terminated, no hand-over NOTIFY) and ``b`` takes every
projection within a few of its rounds, catches up, and the tables equal a replay.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import asyncpg

from flowsd.commands.status import gather, render
from flowsd.config import ProjectionsConfig
from flowsd.events.store import append_batch
from flowsd.projections.catalogue import PROJECTION_NAMES
from flowsd.projections.leadership import holders
from flowsd.projections.metrics import projector_families
from flowsd.projections.runner import ProjectorRunner
from flowsd.projections.series import CsqProjection
from tests.projections.test_runner import all_equal, meters_with_registers, readings
from tests.support import wait_until

# Rounds every second (max(poll_interval_seconds, 1)).
CONFIG = ProjectionsConfig(batch_min=7, batch_max=50, poll_interval_seconds=0.2)
TAKEOVER_SECONDS = 6.0  # a round is 1 s; the rest is slack for a busy machine


def active(runner: ProjectorRunner) -> set[str]:
    return {s.name for s in runner.statistics() if s.role == "active"}


def exactly_once(runners: list[ProjectorRunner]) -> bool:
    """Every projection is active in exactly one runner."""
    counts = [sum(name in active(r) for r in runners) for name in PROJECTION_NAMES]
    return counts == [1] * len(PROJECTION_NAMES)


async def head(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM flows.meter_event_log"))


async def caught_up(conn: asyncpg.Connection, runners: list[ProjectorRunner]) -> None:
    position = await head(conn)
    await wait_until(lambda: all(s.checkpoint == position for r in runners for s in r.status()))


async def test_each_projection_runs_in_one_runner_and_moves_when_that_one_dies(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    meters = await meters_with_registers(conn, 4)
    pools = [await asyncpg.create_pool(migrated_url, min_size=1, max_size=4) for _ in range(2)]
    a, b = (ProjectorRunner(pools[n], CONFIG, instance="ab"[n]) for n in range(2))
    try:
        async with anyio.create_task_group() as group:
            await group.start(a.run)
            assert active(a) == set(PROJECTION_NAMES)  # alone: everything at once
            await group.start(b.run)
            await wait_until(lambda: exactly_once([a, b]) and len(active(b)) == 5)
            assert len(active(a)) == 5
            assert a.ready() and b.ready()  # standing by is healthy

            for start in range(0, 20, 4):
                await append_batch(conn, readings(meters, start, 4))
                await asyncio.sleep(0.01)
            await caught_up(conn, [a, b])
            position = await head(conn)
            stats = [*a.statistics(), *b.statistics()]
            assert sum(s.conflicts for s in stats) == 0
            for name in PROJECTION_NAMES:  # applied by one runner, once
                assert sum(s.events for s in stats if s.name == name) == position
            (family,) = [f for f in projector_families(a.statistics()) if f.name.endswith("active")]
            assert sum(sample.value for sample in family.samples) == 5
            # flowsd status names the backend running each projection: a's or b's.
            report = await gather(migrated_url)
            backends = {p["run_by_backend"] for p in report["projectors"]}
            assert len(backends) == 2 and None not in backends
            assert "run by the daemon of backend" in render(report, "db")

            # a's leadership connection dies: its projections stand by until it holds them
            # again, or b takes them; either way each runs once, and nothing is lost.
            runs = await holders(conn, PROJECTION_NAMES)
            victim = runs[next(iter(active(a)))]
            await conn.execute("SELECT pg_terminate_backend($1)", victim)
            await wait_until(lambda: exactly_once([a, b]))
            for start in range(20, 40, 4):
                await append_batch(conn, readings(meters, start, 4))
            await caught_up(conn, [a, b])
            await wait_until(lambda: exactly_once([a, b]))

            # Every connection of a goes; b takes everything over at its next rounds.
            pools[0].terminate()
            lost = time.monotonic()
            await wait_until(lambda: active(b) == set(PROJECTION_NAMES), TAKEOVER_SECONDS)
            taken_after = time.monotonic() - lost
            assert active(a) == set()
            for start in range(40, 60, 4):
                await append_batch(conn, readings(meters, start, 4))
            position = await head(conn)
            await wait_until(lambda: all(s.checkpoint == position for s in b.status()))
            assert set((await holders(conn, PROJECTION_NAMES)).values()) != {victim}
            group.cancel_scope.cancel()
    finally:
        for pool in pools:
            pool.terminate()
    assert taken_after < TAKEOVER_SECONDS
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_csq") == 4 * 60
    assert await all_equal(conn) == []


async def test_a_stopping_runner_hands_its_projections_over_at_once(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    """A runner cancelled (the daemon stopping) unlocks and NOTIFYs: the other takes over
    without waiting for its next round."""
    config = ProjectionsConfig(poll_interval_seconds=30.0)  # rounds 30 s apart
    pools = [await asyncpg.create_pool(migrated_url, min_size=1, max_size=4) for _ in range(2)]
    a, b = (ProjectorRunner(pools[n], config, instance="ab"[n]) for n in range(2))
    try:
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()

            async def run_a(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                with scope:
                    await a.run(task_status=task_status)

            await group.start(run_a)
            await group.start(b.run)
            assert active(a) == set(PROJECTION_NAMES) and active(b) == set()
            scope.cancel()
            await wait_until(lambda: active(b) == set(PROJECTION_NAMES), TAKEOVER_SECONDS)
            group.cancel_scope.cancel()
    finally:
        for pool in pools:
            await pool.close()


async def test_daemons_enabling_different_projections_leave_none_unrun(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    """``a`` runs only meter_csq, ``b`` every projection: ``b``'s share (half of them) would
    leave some to nobody; those seen unrun for two rounds are adopted by ``b``."""
    meters = await meters_with_registers(conn, 2)
    pools = [await asyncpg.create_pool(migrated_url, min_size=1, max_size=4) for _ in range(2)]
    a = ProjectorRunner(pools[0], CONFIG, instance="a", projections=[CsqProjection()])
    b = ProjectorRunner(pools[1], CONFIG, instance="b")
    try:
        async with anyio.create_task_group() as group:
            await group.start(b.run)
            await group.start(a.run)
            await append_batch(conn, readings(meters, 0, 10))
            # The rounds first let half go (a daemon joined), then adopt the unrun ones.
            await anyio.sleep(3.5)
            await wait_until(lambda: exactly_once([a, b]), TAKEOVER_SECONDS)
            settled = (active(a), active(b))
            await anyio.sleep(2.5)  # rounds later: nothing let go and taken back
            assert (active(a), active(b)) == settled
            await caught_up(conn, [a, b])
            group.cancel_scope.cancel()
    finally:
        for pool in pools:
            await pool.close()
    assert await all_equal(conn) == []
