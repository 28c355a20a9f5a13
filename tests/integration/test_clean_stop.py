"""A clean stop with the database up commits every accepted event and spills nothing; a
cancelled daemon loses nothing either, and says why it spilled.

:meth:`Daemon.request_stop` (what SIGTERM does), then waiting for :meth:`Daemon.run`, runs
the stop sequence: polls finish, the appender commits what it holds. Cancelling ``run()``
instead is an abort: the appender is cancelled with events in memory, which go to the spill
journal (committed at the next start). ``bench/bench_fleet.py``'s child used to cancel right
after ``request_stop()``, and its daemon logged "database unreachable: events spilled to
disk" with the database up; the harness now waits, and the log line names the cause."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs

from flowsd.app import Daemon
from flowsd.config import AppenderConfig
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetchval,
    registered_fleet,
    with_meters,
)
from tests.support import WAIT_SECONDS, wait_until

METERS = 8
# Each batch waits this long for more events after its first: at the stop, the appender
# holds events in memory that only the stop's drain commits.
FLUSH_INTERVAL_SECONDS = 2.0

PLAN = fast_plan(0.3, single=("prepay_balance", "csq_net_op", "instantaneous_voltage"))
_COUNT = "SELECT count(*) FROM flows.meter_event_log"


@pytest.mark.parametrize("caller", ["waits", "cancels"])
async def test_a_clean_stop_commits_every_accepted_event_and_a_cancelled_one_spills_them(
    migrated_url: str, tmp_path: Path, caller: str
) -> None:
    before = await fetchval(migrated_url, _COUNT)
    # Every answer in three writes 50 ms apart: polls of several objects take long enough
    # that some are always in flight.
    async with registered_fleet(migrated_url, METERS, faults="split=1") as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=PLAN), fleet)
        appender = AppenderConfig(queue_size=2000, flush_interval_seconds=FLUSH_INTERVAL_SECONDS)
        config = msgspec.structs.replace(config, appender=appender)
        daemon = Daemon(config, migrated_url, handle_signals=False)
        result: list[int] = []

        async def run() -> None:
            result.append(await daemon.run())

        with capture_logs() as logs, anyio.fail_after(WAIT_SECONDS):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await daemon.ready.wait()
                await wait_until(lambda: daemon.appender.statistics().committed > 0)
                # Polls are running and accepted events wait in memory for their batch.
                await wait_until(
                    lambda: (
                        daemon.appender.statistics().in_memory > 0
                        and daemon.supervisor.status(top=0).polls_running > 0
                    )
                )
                if caller == "waits":
                    daemon.request_stop()
                else:
                    tg.cancel_scope.cancel()
        if caller == "waits":
            assert result == [0]
    stats = daemon.appender.statistics()
    segments = list((tmp_path / "state" / "spill").glob("segment-*"))
    assert stats.in_memory == stats.queued == 0
    assert stats.database_failures == 0
    assert stats.rejected == stats.fenced == 0
    assert stats.accepted > 0
    # Nothing lost: every accepted event is in the log or in the journal.
    assert stats.accepted == stats.committed + stats.duplicates + stats.spilled
    if caller == "waits":
        assert not segments and stats.spilled == 0
    else:
        assert segments and stats.spilled > 0
        spills = [e["event"] for e in logs if "spilled to disk" in e["event"]]
        assert spills and set(spills) == {"appender cancelled: events spilled to disk"}
    # Ground truth: the log holds every event committed, and nothing else was written to it.
    assert await fetchval(migrated_url, _COUNT) - before == stats.committed
