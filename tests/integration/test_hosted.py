"""flowsd on a hosted database, as the admin role that owns the database and its schema but
is not a superuser: on a new database (migrate, run, verify, replay), and on a database shaped
like production after flows-db's regions migration (row-level security on escos), where the
daemon ingests beside the rows production already had."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import asyncpg

from flowsd.app import Daemon
from flowsd.cli import main as flowsd_main
from flowsd.config import PollConfig
from flowsd.sim.clock import SimClock
from tests.db.hosted import HostedDatabase, build_production, hosted_database
from tests.integration.daemon import (
    FROZEN_AT,
    daemon_config,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)
from tests.support import migrate_database, wait_until

METERS = 8


async def _flowsd(*argv: str) -> int:
    return await anyio.to_thread.run_sync(flowsd_main, list(argv))


async def _head(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM flows.meter_event_log")
        return int(head)
    finally:
        await conn.close()


async def _ingest_an_hour(database: HostedDatabase, tmp_path: Path) -> None:
    """A simulated fleet polled for an hour by the daemon running as the owner, projected."""
    clock = SimClock(FROZEN_AT, speed=0.0)
    async with registered_fleet(database.url, METERS, clock=clock) as fleet:
        config = with_meters(daemon_config(tmp_path, database.url, poll=PollConfig()), fleet)
        wall = sim_wall_clock(clock)
        daemon: Daemon
        async with running_daemon(config, database.url, wall_clock=wall) as daemon:
            clock.advance(hours=1, minutes=1)
            await wait_until(lambda: daemon.supervisor.statistics().polls >= METERS, 90)
            await wait_until(lambda: daemon.supervisor.status(top=0).polls_running == 0, 30)
            await daemon.appender.flush()
            head = await _head(database.url)
            projectors = daemon.projectors
            assert projectors is not None
            await wait_until(lambda: all(s.checkpoint >= head for s in projectors.status()), 60)


async def test_the_hosted_admin_role_migrates_runs_replays_and_verifies(
    pg_admin_url: str, tmp_path: Path
) -> None:
    async with hosted_database(pg_admin_url) as database:
        await migrate_database(database.url)
        await _ingest_an_hour(database, tmp_path)
        assert await _head(database.url) > 0
        assert await _flowsd("verify", "--database-url", database.url) == 0
        assert await _flowsd("replay", "--database-url", database.url) == 0
        assert await _flowsd("verify", "--database-url", database.url) == 0


# Production's own rows (its meters' history: ids 00000000-0000-4000-8000-*, see
# tests/db/production/rows.sql), to check they are left as they were.
_PRODUCTION_METERS = (
    "SELECT id FROM flows.meter_registry WHERE id::text LIKE '00000000-0000-4000-8000-%'"
)
_LEGACY = {
    table: f"SELECT t::text FROM flows.{table} AS t WHERE {where} ORDER BY 1"
    for table, where in {
        "meter_shadows": f"id IN ({_PRODUCTION_METERS})",
        **{
            history: f"meter_id IN ({_PRODUCTION_METERS})"
            for history in (
                "meter_csq", "meter_voltage", "meter_3p_voltage", "meter_prepay_balance",
                "meter_health_history", "meter_event_log",
            )
        },
        **{
            reads: "register_id IN (SELECT register_id FROM flows.meter_registers "
            f"WHERE meter_id IN ({_PRODUCTION_METERS}))"
            for reads in ("register_import", "register_export", "register_interval_hh")
        },
    }.items()
}  # fmt: skip


async def _legacy_rows(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return {table: [r[0] for r in await conn.fetch(sql)] for table, sql in _LEGACY.items()}
    finally:
        await conn.close()


async def test_flowsd_ingests_into_upgraded_production_beside_its_rows(
    pg_admin_url: str, tmp_path: Path
) -> None:
    async with hosted_database(pg_admin_url) as database:
        owner = await asyncpg.connect(database.url)
        try:
            assert not await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = user")
            await build_production(owner, database, "regions")
            # Production's meters stay with the legacy syncer (passive here): flowsd polls only
            # its own fleet, and no test traffic leaves the loopback network.
            await owner.execute("UPDATE flows.meter_registry SET mode = 'passive'")
        finally:
            await owner.close()
        await migrate_database(database.url)
        before = await _legacy_rows(database.url)
        assert all(before.values())
        head = await _head(database.url)

        await _ingest_an_hour(database, tmp_path)

        assert await _head(database.url) > head
        assert await _legacy_rows(database.url) == before
