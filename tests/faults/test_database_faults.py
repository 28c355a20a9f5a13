"""Database faults as they really happen, under a running daemon (see harness.py for what every
test checks at the end): the server stopped and started (fast and immediate shutdown), every
flowsd backend terminated, statements timing out behind a lock, the server restarted while
`flowsd replay` runs, and the spill directory full while the database is away. Each fault is
repeated FLOWSD_FAULT_ROUNDS times (2 by default; 20 for the nightly size)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from tests.faults.harness import ROUNDS, Scenario
from tests.faults.server import PGBOUNCER, Bouncer, PrivateServer
from tests.integration.daemon import (
    fetchval,
)
from tests.support import wait_until

# A small in-memory limit: an outage's events go to the spill journal.
FORCED_SPILL = 10
# Every other outage lasts past the daemon's longest backoff (0.5 s in these tests).
HELD_DOWN_SECONDS = (0.0, 2.0)


@pytest.mark.parametrize(("mode", "memory"), [("fast", 50_000), ("immediate", FORCED_SPILL)])
async def test_server_stopped_and_started(
    private_server: PrivateServer, tmp_path: Path, mode: str, memory: int
) -> None:
    kind = f"stop_{mode}" + ("_spilling" if memory == FORCED_SPILL else "")
    async with Scenario(private_server, tmp_path, kind, memory_max_events=memory) as s:
        for round_ in range(ROUNDS):
            await s.poll_round()
            s.fault_began()
            await s.stop_server(mode)
            await s.poll_round()  # read while the database is down
            await wait_until(lambda: not s.daemon.availability.up)
            await anyio.sleep(HELD_DOWN_SECONDS[round_ % 2])
            await s.recovered(await s.start_server())
        assert s.outcome.unready_rounds == ROUNDS  # /readyz said 503 during every outage
        outcome = await s.finish()
    if memory == FORCED_SPILL:
        assert outcome.spilled_events > 0


async def test_every_flowsd_backend_terminated(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    async with Scenario(private_server, tmp_path, "terminate_backends") as s:
        terminated = 0
        for _ in range(ROUNDS):
            await s.poll_round()
            killed_at = s.fault_began()
            terminated += await s.terminate_backends()
            await s.poll_round()  # every connection is dead: the next use finds out
            terminated += await s.terminate_backends()
            await s.recovered(killed_at)
        s.outcome.notes["backends_terminated"] = terminated
        await s.finish()
    assert terminated >= ROUNDS


async def test_statements_time_out_behind_a_lock(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    # The appender's statement_timeout (0.3 s) fires before its lock_timeout (2 s): a real
    # statement timeout (SQLSTATE 57014), while the lock is held by another session.
    async with Scenario(
        private_server, tmp_path, "statement_timeout", appender_timeouts=(0.3, 2.0)
    ) as s:
        for _ in range(ROUNDS):
            await s.poll_round()
            before = s.daemon.appender.statistics().database_failures
            blocker = await asyncpg.connect(s.url)
            try:
                tx = blocker.transaction()
                await tx.start()
                s.fault_began()
                await blocker.execute("LOCK TABLE flows.meter_event_log IN ACCESS EXCLUSIVE MODE")
                await s.poll_round()
                await wait_until(
                    lambda: s.daemon.appender.statistics().database_failures >= before + 2  # noqa: B023
                )
                await tx.rollback()
            finally:
                await blocker.close()
            await s.recovered(time.monotonic())
        await s.finish()


async def test_server_restarted_during_a_replay(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    argv = ["replay"]  # every projection, in parallel lanes
    async with Scenario(private_server, tmp_path, "restart_during_replay") as s:
        interrupted = 0
        for _ in range(ROUNDS):
            await s.poll_round()
            await s.poll_round()
            results: list[int] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(_replay, s, argv, results)
                await wait_until(lambda: bool(results) or _replay_running(s), 30)  # noqa: B023
                s.fault_began()
                await s.stop_server("fast")
            # Either it finished first (0), or it lost its connection: one line, status 2.
            assert results in ([0], [2]), results
            interrupted += results == [2]
            await s.recovered(await s.start_server())
        assert await s.flowsd(*argv) == 0
        s.outcome.notes["replays_interrupted"] = interrupted
        await s.finish()


async def _replay(s: Scenario, argv: list[str], results: list[int]) -> None:
    results.append(await s.flowsd(*argv))


async def _replay_running(s: Scenario) -> bool:
    """A replay has created its shadow tables (it is between its start and its swap)."""
    tables = await fetchval(
        s.url,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'flowsd' AND tablename LIKE 'replay%'",
    )
    return int(tables) > 0


@pytest.fixture
def tiny_spill_directory(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs as the spill directory: writes end in ENOSPC, as on a full disk."""
    state = tmp_path / "state"
    spill = state / "spill"
    spill.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs for the spill directory needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(spill)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(spill)], check=False)


async def test_spill_directory_full_during_an_outage(
    private_server: PrivateServer, tmp_path: Path, tiny_spill_directory: Path
) -> None:
    async with Scenario(
        private_server,
        tmp_path,
        "spill_disk_full",
        memory_max_events=FORCED_SPILL,
        state_directory=tiny_spill_directory,
    ) as s:
        for _ in range(ROUNDS):
            await s.poll_round()
            s.fault_began()
            await s.stop_server("fast")
            stats = s.daemon.appender.statistics
            errors = stats().spill_write_errors
            # A few half hours read while the database is away fill the 64 KiB journal.
            for _ in range(20):
                await s.poll_round()
                if stats().spill_write_errors > errors:
                    break
            assert stats().spill_blocked
            await s.recovered(await s.start_server())
            assert not stats().spill_blocked
        s.outcome.notes["spill_write_errors"] = s.daemon.appender.statistics().spill_write_errors
        await s.finish()


@pytest.fixture
def bouncer(private_server: PrivateServer) -> Iterator[Bouncer]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed")
    pooler = Bouncer(private_server)
    pooler.start()
    try:
        yield pooler
    finally:
        pooler.stop()


async def test_pooler_restarted(
    private_server: PrivateServer, tmp_path: Path, bouncer: Bouncer
) -> None:
    # PgBouncer in session mode (transaction mode is refused at connect) between the daemon
    # and the server, stopped (SIGTERM: every client connection dropped) and started again.
    async with Scenario(private_server, tmp_path, "pooler_restart", pooler=bouncer) as s:
        for round_ in range(ROUNDS):
            await s.poll_round()
            s.fault_began()
            await anyio.to_thread.run_sync(bouncer.stop)
            await s.poll_round()
            await wait_until(lambda: not s.daemon.availability.up)
            await anyio.sleep(HELD_DOWN_SECONDS[round_ % 2])
            await anyio.to_thread.run_sync(bouncer.start)
            await s.recovered(time.monotonic())
        assert s.outcome.unready_rounds == ROUNDS
        await s.finish()
