"""A database outage never stops the daemon: it starts without one (waiting), and while the
database is away events go to the spill journal and are committed when it is back."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec

from flowsd.app import Daemon
from flowsd.config import AppenderConfig
from flowsd.ops.notify import SystemdNotifier
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetchval,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.integration.proxy import DatabaseProxy
from tests.support import wait_until


class StatusRecorder(SystemdNotifier):
    def __init__(self) -> None:
        super().__init__(environ={})
        self.statuses: list[str] = []

    def status(self, status: str) -> None:
        self.statuses.append(status)

    def retries(self) -> int:
        return sum(s.startswith("waiting for the database") for s in self.statuses)


async def test_start_without_a_database_waits_and_stops_cleanly(tmp_path: Path) -> None:
    url = "postgresql://flowsd@127.0.0.1:9/none"
    notifier = StatusRecorder()
    daemon = Daemon(daemon_config(tmp_path, url), url, notifier=notifier, handle_signals=False)
    async with anyio.create_task_group() as tg:
        results: list[int] = []

        async def run() -> None:
            results.append(await daemon.run())

        tg.start_soon(run)
        # It keeps retrying (with a growing delay) and never gets ready.
        await wait_until(lambda: notifier.retries() >= 3)
        assert not results and not daemon.ready.is_set()
        daemon.request_stop()
    assert results == [0]


async def test_events_spill_during_an_outage_and_are_committed_after(
    migrated_url: str, tmp_path: Path
) -> None:
    proxy = DatabaseProxy(migrated_url)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with registered_fleet(migrated_url, 10, hardware=("EMA1.w",)) as fleet:
            config = daemon_config(tmp_path, proxy.url(), poll=fast_plan(0.3))
            small = AppenderConfig(
                queue_size=100, memory_max_events=20, flush_interval_seconds=0.02
            )
            config = msgspec.structs.replace(with_meters(config, fleet), appender=small)
            async with running_daemon(config, proxy.url()) as daemon:
                await wait_until(lambda: daemon.supervisor.statistics().requests_ok > 20)
                proxy.cut()
                before = await fetchval(migrated_url, "SELECT count(*) FROM flows.meter_event_log")
                polled = daemon.supervisor.statistics().requests_ok
                await wait_until(lambda: daemon.appender.spilled_events > 0)
                await wait_until(lambda: daemon.supervisor.statistics().requests_ok > polled + 40)
                assert daemon.supervisor.status(top=0).running
                proxy.restore()
                await wait_until(lambda: daemon.appender.spilled_events == 0)
                await daemon.appender.flush()
        tg.cancel_scope.cancel()
    stored = await fetchval(migrated_url, "SELECT count(*) FROM flows.meter_event_log")
    assert stored >= before + 40  # what was read during the outage is in the log
    assert not list((tmp_path / "state" / "spill").glob("segment-*.spill"))  # and no longer on disk
