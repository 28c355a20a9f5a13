"""Back-pressure: while the appender cannot commit and its queue is full, meter sessions wait
in the sink; when it can again, everything they read is committed (nothing dropped)."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import msgspec

from flowsd.config import AppenderConfig
from flowsd.events import types
from flowsd.events.store import APPEND_LOCK_KEY
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetchval,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import wait_until


async def test_sessions_wait_while_the_queue_is_full_and_nothing_is_lost(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 6, hardware=("EMA1.w",)) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=fast_plan(0.2)), fleet)
        appender = AppenderConfig(queue_size=5, lock_timeout_seconds=60.0, batch_max=50)
        config = msgspec.structs.replace(config, appender=appender)
        async with running_daemon(config, migrated_url) as daemon:
            stats = daemon.supervisor.statistics
            await wait_until(lambda: stats().polls >= 12)
            blocker = await asyncpg.connect(migrated_url)
            try:
                # Hold the event log's append lock: the appender's next commit waits on it, and
                # its queue fills.
                await blocker.execute("SELECT pg_advisory_lock($1)", APPEND_LOCK_KEY)
                await wait_until(lambda: daemon.appender.statistics().queued >= appender.queue_size)
                stalled_at = stats().requests_ok
                await anyio.sleep(1.0)
                # From a full queue on, a session finishes the request it is in and waits.
                assert stats().requests_ok <= stalled_at + 6
                assert daemon.supervisor.status(top=0).polls_running > 0  # waiting, not gone
            finally:
                await blocker.execute("SELECT pg_advisory_unlock($1)", APPEND_LOCK_KEY)
                await blocker.close()
            await wait_until(lambda: stats().requests_ok > stalled_at + 30)
        answered = stats().requests_ok
    csq = await fetchval(
        migrated_url,
        "SELECT count(*) FROM flows.meter_event_log WHERE event_type = $1",
        types.SignalQualityRead.TYPE_ID,
    )
    # Every answered request was one csq_net_op reading, and every one of them is in the log.
    assert csq == answered
