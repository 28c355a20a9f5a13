"""Fault injection on part of the fleet: healthy meters keep their cadence, failing meters go
offline and come back (as events), no exception escapes a session, memory stays bounded."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from flowsd.app import Daemon
from flowsd.events import types
from flowsd.sim.faults import FaultPlan
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetch,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import wait_until

METERS = 30
DOWN = range(0, 6)  # refuse every connection
FLAKY = range(6, 9)  # garbage answers half of the time
HEALTHY = range(9, METERS)
FAULTS = "refuse@0-5=1,garbage@6-8=0.5"
PERIOD = 0.5


async def test_faults_isolated_offline_and_back_online(migrated_url: str, tmp_path: Path) -> None:
    async with registered_fleet(migrated_url, METERS, faults=FAULTS) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=fast_plan(PERIOD)), fleet)
        async with running_daemon(config, migrated_url) as daemon:
            ids = {m.index: _meter_id(daemon, m.serial) for m in fleet.meters}
            down = {ids[i] for i in DOWN}
            await wait_until(lambda: _offline(daemon) >= down)
            polls_before = {ids[i]: daemon.tracker.rows[ids[i]].polls for i in HEALTHY}

            def polled(i: int) -> int:
                return daemon.tracker.rows[ids[i]].polls - polls_before[ids[i]]

            # Every healthy meter keeps polling beside the failing ones.
            await wait_until(lambda: all(polled(i) >= 8 for i in HEALTHY))
            for i in HEALTHY:
                assert daemon.tracker.rows[ids[i]].online
            # Down meters stay offline, healthy ones never went (flaky ones may come and go).
            healthy = {ids[i] for i in HEALTHY}
            assert down <= _offline(daemon) and not healthy & _offline(daemon)
            fleet.plan = FaultPlan.parse(None)  # the network heals
            await wait_until(lambda: not _offline(daemon))
            assert daemon.supervisor.status(top=0).running
            # Bounded: one entry per meter, nothing left over between polls.
            assert len(daemon.tracker.rows) == METERS
            assert len(daemon.detector.states) <= METERS
            assert daemon.ingest.assembler.pending_meters <= METERS
            assert len(daemon.supervisor.scheduler.heap) <= 2 * METERS
            await daemon.appender.flush()
        errors = [row.last_error or "" for row in daemon.tracker.rows.values()]
        assert not [e for e in errors if e.startswith("internal")]
    rows = await fetch(
        migrated_url,
        """SELECT meter_id, array_agg(event_type ORDER BY position) AS kinds
           FROM flows.meter_event_log WHERE event_type IN ($1, $2) GROUP BY meter_id""",
        types.MeterWentOffline.TYPE_ID,
        types.MeterCameOnline.TYPE_ID,
    )
    went, came = types.MeterWentOffline.TYPE_ID, types.MeterCameOnline.TYPE_ID
    kinds = {row["meter_id"]: row["kinds"] for row in rows}
    for meter_id in down:
        assert kinds[meter_id][:2] == [went, came], kinds[meter_id]
    for i in HEALTHY:
        assert kinds[ids[i]] == [came]


def _meter_id(daemon: Daemon, serial: str) -> UUID:
    return next(m for m, s in daemon.supervisor.sessions.items() if s.target.serial == serial)


def _offline(daemon: Daemon) -> set[UUID]:
    return {m for m, s in daemon.supervisor.sessions.items() if s.breaker.offline}
