"""Issue 6's acceptance path: with the daemon ingesting a simulated fleet, `flowsd replay`
rebuilds every projection and `flowsd verify` finds the live tables equal to a rebuild; a
replay of a quiet log changes no row of any projection.

The commands run through the real command line (each in a worker thread with its own event
loop, as an operator's second process would), against the database the daemon is writing.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread
import asyncpg

from flowsd.cli import main as flowsd_main
from flowsd.config import PollConfig
from flowsd.projections.catalogue import all_projections
from flowsd.sim.clock import SimClock
from tests.integration.daemon import (
    FROZEN_AT,
    daemon_config,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)
from tests.support import wait_until

METERS = 30


async def _flowsd(*argv: str) -> int:
    return await anyio.to_thread.run_sync(flowsd_main, list(argv))


async def _contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every projection's table, as sorted row tuples."""
    conn = await asyncpg.connect(url)
    try:
        tables = {}
        for projection in all_projections():
            rows = await conn.fetch(f"SELECT * FROM {projection.table}")
            tables[projection.table] = sorted((tuple(r.values()) for r in rows), key=repr)
        return tables
    finally:
        await conn.close()


async def test_replay_while_ingesting_then_verify_and_replay_changes_nothing(
    migrated_url: str, tmp_path: Path
) -> None:
    clock = SimClock(FROZEN_AT, speed=0.0)
    async with registered_fleet(migrated_url, METERS, clock=clock) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=PollConfig()), fleet)
        async with running_daemon(config, migrated_url, wall_clock=sim_wall_clock(clock)) as d:
            clock.advance(days=1, minutes=1)
            await wait_until(lambda: d.supervisor.statistics().polls >= METERS // 3, 60)
            # Mid-ingest: the rebuild races live appends and live projector batches.
            assert await _flowsd("replay", "--database-url", migrated_url) == 0
            await wait_until(lambda: d.supervisor.statistics().polls >= METERS, 90)
            await wait_until(lambda: d.supervisor.status(top=0).polls_running == 0, 30)
            await d.appender.flush()
            assert await _flowsd("verify", "--database-url", migrated_url) == 0
        before = await _contents(migrated_url)
    assert before["flows.meter_shadows"], "the daemon projected nothing"
    assert before["flows.register_interval_hh"], "no half-hour rows were projected"
    assert await _flowsd("replay", "--database-url", migrated_url) == 0
    assert await _contents(migrated_url) == before
    assert await _flowsd("verify", "--database-url", migrated_url) == 0
