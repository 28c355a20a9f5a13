"""Stop and start flowsd: what was missed while it was down is back-filled, and nothing
(readings, meter log entries, state changes) is recorded twice."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

from flowsd.app import Daemon
from flowsd.config import PollConfig
from flowsd.events import types
from flowsd.sim.clock import SimClock
from tests.integration.daemon import (
    FROZEN_AT,
    daemon_config,
    fetch,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)
from tests.support import wait_until

METERS = 12
PLAN = PollConfig(
    cadences={"half_hourly": 1800.0, "hourly": 3600.0},
    single_phase={"half_hourly": ["profile_logs"], "hourly": ["prepay_balance", "event_log"]},
    three_phase={"hourly": ["csq_net_op"]},
)


async def _poll_once_more(daemon: Daemon, clock: SimClock, minutes: float) -> None:
    """Move the fleet's clock on and wait until every meter was polled and all is committed."""
    before = daemon.supervisor.statistics().polls
    clock.advance(minutes=minutes)
    await wait_until(lambda: daemon.supervisor.statistics().polls >= before + METERS)
    await wait_until(lambda: daemon.supervisor.status(top=0).polls_running == 0)
    await daemon.appender.flush()


async def test_restart_backfills_the_gap_and_records_nothing_twice(
    migrated_url: str, tmp_path: Path
) -> None:
    clock = SimClock(FROZEN_AT, speed=0.0)
    hardware = ("C1.w", "EMA1.w", "B1.w")
    async with registered_fleet(migrated_url, METERS, clock=clock, hardware=hardware) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=PLAN), fleet)
        wall = sim_wall_clock(clock)
        async with running_daemon(config, migrated_url, wall_clock=wall) as first:
            await _poll_once_more(first, clock, 61)
        stopped_at = clock.now_datetime()
        first_count = await _count(migrated_url)
        clock.advance(hours=3)  # flowsd is down for three hours
        async with running_daemon(config, migrated_url, wall_clock=wall) as second:
            await _poll_once_more(second, clock, 31)
            await _poll_once_more(second, clock, 31)
        assert second.appender.statistics().duplicates == 0
        newest = clock.now_datetime()
    assert await _count(migrated_url) > first_count
    rows = await fetch(
        migrated_url,
        """SELECT meter_id, array_agg("timestamp" ORDER BY "timestamp") AS stamps
           FROM flows.meter_event_log WHERE event_type = $1 GROUP BY meter_id""",
        types.ProfileLog1Record.TYPE_ID,
    )
    assert len(rows) == METERS
    for row in rows:
        stamps = row["stamps"]
        assert len(stamps) == len(set(stamps))
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert set(gaps) == {timedelta(minutes=30)}, row["meter_id"]
        assert stamps[0] < stopped_at - timedelta(hours=1)
        assert stamps[-1] > newest - timedelta(minutes=31)
    repeated = await fetch(
        migrated_url,
        """SELECT meter_id, event_type, count(*) FROM flows.meter_event_log
           WHERE event_type IN ($1, $2, $3) GROUP BY 1, 2 HAVING count(*) > 1""",
        types.MeterCameOnline.TYPE_ID,
        types.HealthChanged.TYPE_ID,
        types.FirmwareChanged.TYPE_ID,
    )
    assert repeated == []
    natives = await fetch(
        migrated_url,
        """SELECT meter_id, "timestamp", event_type, event_set, count(*)
           FROM flows.meter_event_log WHERE event_type < 1000 GROUP BY 1, 2, 3, 4
           HAVING count(*) > 1""",
    )
    assert natives == []


async def _count(url: str) -> int:
    rows = await fetch(url, "SELECT count(*) AS n FROM flows.meter_event_log")
    return int(rows[0]["n"])
