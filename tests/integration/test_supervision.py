"""A bug in one component never ends the daemon at once: the component is logged, counted
and restarted with backoff; only past the restart limit does the daemon stop, draining its
queue first, with exit status 1 (systemd restarts it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec

from flowsd.app import Daemon
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetch,
    fetchval,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import WAIT_SECONDS, wait_until


def _restart_quickly(config: Any, limit: int) -> Any:
    daemon = msgspec.structs.replace(
        config.daemon, restart_initial_seconds=0.05, restart_max_seconds=0.1, restart_limit=limit
    )
    return msgspec.structs.replace(config, daemon=daemon)


def _break(daemon: Daemon, failures: int | None) -> list[int]:
    """Make the fleet's scheduler raise (a bug) ``failures`` times (None: always)."""
    calls: list[int] = []
    original = daemon.supervisor.scheduler.wake_due

    def wake_due(now: float) -> None:
        calls.append(1)
        if failures is None or len(calls) <= failures:
            raise RuntimeError("a bug in the scheduler")
        original(now)

    daemon.supervisor.scheduler.wake_due = wake_due  # type: ignore[method-assign]
    return calls


async def test_a_component_that_fails_is_restarted_and_the_daemon_goes_on(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 4, hardware=("EMA1.w",)) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=fast_plan(0.3)), fleet)
        config = _restart_quickly(config, limit=10)
        async with running_daemon(config, migrated_url) as daemon:
            await wait_until(lambda: daemon.supervisor.statistics().polls >= 4)
            _break(daemon, failures=3)
            await wait_until(lambda: daemon.components.statistics()["meters"].restarts == 3)
            polls = daemon.supervisor.statistics().polls
            await wait_until(lambda: daemon.supervisor.statistics().polls >= polls + 8)
            assert daemon.components.alive()
        stats = daemon.components.statistics()["meters"]
        assert stats.last_error == "RuntimeError: a bug in the scheduler"
        assert stats.restarts == 3


async def test_past_the_restart_limit_the_daemon_drains_and_exits_1(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 4, hardware=("EMA1.w",)) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=fast_plan(0.3)), fleet)
        daemon = Daemon(_restart_quickly(config, limit=3), migrated_url, handle_signals=False)
        result: list[int] = []
        with anyio.fail_after(WAIT_SECONDS):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    result.append(await daemon.run())

                tg.start_soon(run)
                await daemon.ready.wait()
                await wait_until(lambda: daemon.supervisor.statistics().polls >= 4)
                _break(daemon, failures=None)
    assert result == [1]
    assert daemon.components.statistics()["meters"].gave_up
    accepted = daemon.appender.statistics()
    assert accepted.accepted == accepted.committed + accepted.duplicates
    assert await fetchval(migrated_url, "SELECT count(*) FROM flows.meter_event_log") == (
        accepted.committed
    )
    heartbeat = (await fetch(migrated_url, "SELECT * FROM flowsd.daemon_heartbeat"))[0]
    assert heartbeat["stopped_at"] is not None
