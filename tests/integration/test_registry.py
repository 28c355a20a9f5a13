"""The meter list follows flows.meter_registry while the daemon runs (NOTIFY-driven):
meters added, switched to passive, given no or a new address, without a restart."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from flowsd.app import Daemon
from flowsd.events import types
from flowsd.meters.dialplan import dial_plan
from flowsd.meters.registry import load_active_meters
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetch,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import wait_until

METERS = 6


async def test_registry_changes_apply_without_restart(migrated_url: str, tmp_path: Path) -> None:
    async with registered_fleet(migrated_url, METERS, hardware=("EMA1.w",)) as fleet:
        serials = [m.serial for m in fleet.meters]
        conn = await asyncpg.connect(migrated_url)
        try:
            await conn.execute(
                "UPDATE flows.meter_registry SET mode = 'passive' WHERE serial = $1", serials[5]
            )
            ids = {row["serial"]: row["id"] for row in await conn.fetch(
                "SELECT serial, id FROM flows.meter_registry")}  # fmt: skip
            # Reloads here come from NOTIFY only (the periodic reload is an hour away).
            config = daemon_config(
                tmp_path, migrated_url, poll=fast_plan(0.5), registry_reload_seconds=3600
            )
            async with running_daemon(with_meters(config, fleet), migrated_url) as daemon:
                sessions = daemon.supervisor.sessions
                assert set(sessions) == {ids[s] for s in serials[:5]}
                await conn.execute(
                    "UPDATE flows.meter_registry SET mode = 'passive' WHERE serial = $1",
                    serials[0],
                )
                await conn.execute(
                    "UPDATE flows.meter_registry SET ip_address = NULL WHERE serial = $1",
                    serials[1],
                )
                await conn.execute(
                    "UPDATE flows.meter_registry SET ip_address = '127.81.254.9' WHERE serial = $1",
                    serials[2],
                )
                await conn.execute(
                    "UPDATE flows.meter_registry SET mode = 'active' WHERE serial = $1", serials[5]
                )
                await wait_until(
                    lambda: ids[serials[5]] in sessions and ids[serials[0]] not in sessions
                )
                await wait_until(lambda: ids[serials[1]] not in sessions)
                # Still active: shown as not dialled, with why.
                row = daemon.tracker.rows[ids[serials[1]]]
                assert row.not_dialled == "no ip_address in meter_registry" and not row.online
                assert sessions[ids[serials[2]]].target.ip_address == "127.81.254.9"
                assert ids[serials[3]] in sessions and ids[serials[4]] in sessions
                # The re-activated meter is polled.
                await wait_until(lambda: daemon.tracker.rows.get(ids[serials[5]]) is not None)
                _one_id_object_per_meter(daemon)
                await daemon.appender.flush()
            listed = {m.serial for m in dial_plan(await load_active_meters(conn)).dialled}
            assert listed == {serials[2], serials[3], serials[4], serials[5]}
        finally:
            await conn.close()
    polled = await fetch(
        migrated_url,
        "SELECT DISTINCT meter_id FROM flows.meter_event_log WHERE event_type = $1",
        types.SignalQualityRead.TYPE_ID,
    )
    assert ids[serials[5]] in {row["meter_id"] for row in polled}


def _one_id_object_per_meter(daemon: Daemon) -> None:
    """Every structure keyed by a fleet meter's id holds the one UUID object its session has
    (registry reloads, lease rows and seeds from the database reuse it)."""
    fleet = {id(meter_id) for meter_id in daemon.supervisor.sessions}
    assert all(s.target.meter_id is m for m, s in daemon.supervisor.sessions.items())
    plan = daemon.meter_list.registry.plan
    assert plan is not None
    holders = {
        "registry plan": [m.meter_id for m in plan.dialled],
        "leases held": list(daemon.ownership.held),
        "epochs": list(daemon.ownership.epochs),
        "candidates": list(daemon.ownership.candidates),
        "detector": list(daemon.detector.states),
        "tracker": [*daemon.tracker.rows, *(r.meter_id for r in daemon.tracker.rows.values())],
        "hardware": list(daemon.ingest.hardware),
    }
    for name, held in holders.items():
        ours = [m for m in held if m in daemon.supervisor.sessions]
        assert ours, name
        assert all(id(m) in fleet for m in ours), name
