"""Bad registry rows are caught, not polled twice, and a meter that never answered is never
counted online: the daemon against a registry with a missing, an unspecified and an IPv6
address, a second row for one device (by masked address and by serial, present before
migration 60 refused them), and a row whose address nobody answers."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import anyio
import asyncpg
import pytest

from flowsd.db.migrate import load_migrations, migrate
from flowsd.events import types
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import register_fleet
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetch,
    free_port,
    running_daemon,
    subnet,
    with_meters,
)
from tests.support import wait_until

METERS = 4
FLOWSD = [sys.executable, "-m", "flowsd"]


async def _registry(url: str, fleet: SimulatedFleet) -> dict[str, uuid.UUID]:
    """The fleet, then the bad rows (inserted before migration 60, as in an old database)."""
    base = fleet.meters[0].ip_address.rsplit(".", 1)[0]
    rows = {
        "NOADDR0001": None,
        "ZERO000001": "0.0.0.0",
        "IPV6000001": "2001:db8::7",
        "SILENT0001": f"{base}.250",  # nobody listens there
        "DUPADDR001": f"{fleet.meters[0].ip_address}/24",  # the same device, masked
        fleet.meters[1].serial.lower(): f"{base}.251",  # the same serial, another address
    }
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, [m for m in load_migrations() if m.version < 60])
        await register_fleet(conn, 5, [fleet.state.identity(i) for i in range(METERS)])
        ids = {}
        for serial, address in rows.items():
            ids[serial] = await conn.fetchval(
                """INSERT INTO flows.meter_registry (serial, ip_address, hardware, created_at)
                   VALUES ($1, $2::inet, 'EMA1.w', now() + interval '1 minute') RETURNING id""",
                serial,
                address,
            )
        await migrate(conn)
    finally:
        await conn.close()
    return ids


async def test_bad_rows_are_not_dialled_and_silent_meters_never_count_online(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = subnet()
    fleet = SimulatedFleet(
        meters=METERS, seed=5, base_address=base, port=free_port(base), history_days=3,
        hardware=["EMA1.w"] * METERS,
    )  # fmt: skip
    async with fleet:
        ids = await _registry(database_url, fleet)
        config = with_meters(daemon_config(tmp_path, database_url, poll=fast_plan(0.3)), fleet)
        async with running_daemon(config, database_url) as daemon:
            sessions = daemon.supervisor.sessions
            silent = ids["SILENT0001"]
            # Five dialled: the fleet and the silent row; each device under one id only.
            assert len(sessions) == METERS + 1 and silent in sessions
            addresses = [s.target.ip_address for s in sessions.values()]
            assert len(addresses) == len(set(addresses))
            # Not online before it answers; offline after the usual failure count.
            assert sessions[silent].breaker.state == "awaiting_first_answer"
            status = daemon.supervisor.status(top=0)
            assert status.online + status.awaiting_first_answer + status.offline == METERS + 1
            await wait_until(lambda: daemon.supervisor.status(top=0).online == METERS)
            assert not sessions[silent].breaker.online
            await wait_until(lambda: sessions[silent].breaker.offline)
            assert (
                sessions[silent].breaker.consecutive_failures
                == config.meters.offline_after_failures
            )
            reasons = {
                serial: daemon.tracker.rows[meter_id].not_dialled
                for serial, meter_id in ids.items()
                if meter_id in daemon.tracker.rows
            }
            assert reasons["NOADDR0001"] == "no ip_address in meter_registry"
            assert reasons["ZERO000001"] is not None and "0.0.0.0" in reasons["ZERO000001"]
            assert reasons["IPV6000001"] is not None and "IPv6" in reasons["IPV6000001"]
            assert reasons["DUPADDR001"] is not None and "is also meter" in reasons["DUPADDR001"]
            serial = fleet.meters[1].serial
            assert f"serial {serial} is also" in (reasons[serial.lower()] or "")
            assert daemon.meter_list.registry.statistics().not_dialled["duplicate_address"] == 1
            fleet_statistics = daemon.supervisor.statistics()
            assert fleet_statistics.meters_by_state["offline"] == 1
            assert fleet_statistics.never_answered == 1
            assert daemon.supervisor.status(top=0).never_answered == 1
            # A reload logs nothing again.
            daemon.meter_list.registry.request_reload()
            await anyio.sleep(1.0)
            await daemon.appender.flush()
            await anyio.sleep(2 * config.daemon.state_flush_seconds)
        # stderr once flowsd configured logging, stdout on structlog's defaults (this test alone).
        captured = capsys.readouterr()
        logged = (captured.out + captured.err).count("active meter not dialled")
        assert logged == 5, logged
    kinds = [
        row["event_type"]
        for row in await fetch(
            database_url,
            "SELECT event_type FROM flows.meter_event_log WHERE meter_id = $1 ORDER BY position",
            silent,
        )
    ]
    assert kinds.count(types.MeterWentOffline.TYPE_ID) == 1
    assert types.MeterCameOnline.TYPE_ID not in kinds
    env = {**os.environ, "FLOWSD_DATABASE_URL": database_url}
    done = await anyio.run_process([*FLOWSD, "status", "--json"], env=env)
    report = json.loads(done.stdout)
    assert report["meters"]["online"] == METERS and report["meters"]["offline"] == 1
    assert report["meters"]["never_answered"] == 1
    assert {row["serial"] for row in report["not_dialled"]} == {
        "NOADDR0001", "ZERO000001", "IPV6000001", "DUPADDR001", fleet.meters[1].serial.lower()
    }  # fmt: skip
    text = (await anyio.run_process([*FLOWSD, "status"], env=env)).stdout.decode()
    assert "1 never answered" in text and "5 not dialled" in text
    assert "NOADDR0001  no ip_address in meter_registry" in text
    assert "offline since" in text and "never answered" in text
