"""Commands from flowsd.meter_command and the CLI, through the daemon to simulated meters."""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec

from flowsd.config import LeasesConfig
from flowsd.control import requests
from flowsd.emop import by_name
from flowsd.events.store import APPEND_LOCK_KEY
from flowsd.meters.command import MeterCommand
from flowsd.meters.operations import ReadObject
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.tokens import make_token
from tests.integration.daemon import (
    FAST_METERS,
    FROZEN_AT,
    fetch,
    fetchval,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
)
from tests.mediator.helpers import SINGLE_PHASE, events_of, mediator_config, served
from tests.support import wait_until

FUTURE = {
    "activation": "2026-07-01T00:00:00+00:00",
    "unit_rate": "0.24681",
    "standing_charge": "0.61234",
    "emergency_credit": "12.5",
    "ecredit_availability": "7.25",
    "debt_recovery_rate": "0.45",
}


async def command(
    url: str, serial: str, kind: str, arguments: dict[str, Any], *, seconds: float = 60
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        row_id = await requests.submit(
            conn, serial, kind, arguments, key=str(uuid.uuid4()), client="test", expires_in=seconds
        )
        return await requests.wait_outcome(conn, row_id, seconds)
    finally:
        await conn.close()


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "flowsd", *args, "--database-url", url],
        check=False,
        env={**os.environ, "FLOWSD_CONFIG": ""},
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_cli_top_up_read_and_info_through_the_running_daemon(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s:
        meter = s.fleet.meters[0]
        before = s.fleet.truth(meter.index).balance_gbp
        assert before is not None
        token = make_token(1234, 5)
        code, out, err = await cli(migrated_url, "meter", meter.serial, "top-up", token, "--json")
        assert code == 0, err
        row = json.loads(out)
        assert row["status"] == "succeeded"
        assert Decimal(row["result"]["readback"]["prepay_balance"]) == before + Decimal("12.34")
        assert Decimal(row["result"]["readback"]["before:prepay_balance"]) == before
        # The same token again: refused by the meter, exit status 1, the NAK named.
        code, out, _ = await cli(migrated_url, "meter", meter.serial, "top-up", token)
        assert code == 1 and "SECURITY_NOT_GRANTED" in out
        code, out, _ = await cli(migrated_url, "meter", meter.serial, "read", "serial")
        assert code == 0 and f"serial: {meter.serial}" in out
        s.clock.advance(seconds=3)
        code, out, _ = await cli(migrated_url, "poll", meter.serial)
        assert code == 0 and "succeeded" in out
        await s.daemon.appender.flush()
        code, out, _ = await cli(migrated_url, "meter", meter.serial)
        assert code == 0 and "COMMAND_FAILED" in out and "top_up" in out
        code, _, err = await cli(migrated_url, "meter", "NO-SUCH", "set-clock")
        assert code == 2 and "unknown meter serial NO-SUCH" in err
    rows = await fetch(migrated_url, "SELECT arguments::text AS a FROM flowsd.meter_command")
    assert not [r for r in rows if token in r["a"]]
    assert not await fetch(migrated_url, "SELECT * FROM flowsd_secret.meter_command_token")


async def test_a_future_tariff_is_written_and_read_back(migrated_url: str, tmp_path: Path) -> None:
    async with served(migrated_url, tmp_path) as s:
        meter = s.fleet.meters[1]
        row = await command(migrated_url, meter.serial, "future_tariff", FUTURE)
        assert row["status"] == "succeeded", row
        truth = s.fleet.truth(meter.index)
        await s.daemon.appender.flush()
        reads = await events_of(migrated_url, "FUTURE_TARIFF_READ")
    assert row["result"]["writes_acknowledged"] == 11
    readback = row["result"]["readback"]
    assert readback["tariff_future_block_8_rate_1"] == "0.24681"
    assert readback["tariff_future_standing_charge"] == "0.61234"
    assert truth.future_tariff is not None and truth.future_tariff.unit_rate_a == 24681
    tariff = reads[-1]["tariff"]
    assert Decimal(tariff["unit_rate_a_gbp"]) == Decimal("0.24681")
    assert Decimal(tariff["debt_recovery_rate_gbp"]) == Decimal("0.45")


async def test_an_interrupted_tariff_sequence_is_recorded_and_read_back(
    migrated_url: str, tmp_path: Path
) -> None:
    meters = msgspec.structs.replace(FAST_METERS, min_gap_seconds=0.4, offline_after_failures=2)
    async with served(migrated_url, tmp_path, meters_config=meters) as s:
        meter = s.fleet.meters[0]
        outcome: list[dict[str, Any]] = []

        async def send() -> None:
            outcome.append(await command(migrated_url, meter.serial, "future_tariff", FUTURE))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            # Cut the meter off once the fourth write (block 8 rate 1) has landed.
            await wait_until(
                lambda: getattr(s.fleet.truth(meter.index).future_tariff, "unit_rate_a", 0) == 24681
            )
            s.fleet.set_faults(f"refuse@{meter.index}=1")
        (row,) = outcome
        assert row["status"] == "failed"
        result = row["result"]
        assert result["interrupted"] and 4 <= result["writes_acknowledged"] < 11
        assert result["writes_total"] == 11
        before = len(await events_of(migrated_url, "FUTURE_TARIFF_READ"))
        s.fleet.set_faults(None)  # the meter is back: the tariff is read back
        await wait_until(lambda: _more(migrated_url, "FUTURE_TARIFF_READ", before))
        meter_id = s.daemon.supervisor.meter_id_of(meter.serial)
        assert meter_id is not None
        session = s.daemon.supervisor.sessions[meter_id]
        await wait_until(lambda: session.inbox is None)  # nothing owed, nothing held
        failed = await events_of(migrated_url, "COMMAND_FAILED")
    assert failed[-1]["interrupted"] is True and failed[-1]["operation"] == "future_tariff"


async def _more(url: str, name: str, than: int) -> bool:
    return len(await events_of(url, name)) > than


async def test_a_command_survives_a_daemon_restart_and_runs_exactly_once(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s:
        meter = s.fleet.meters[0]
    # No daemon runs now: the command waits in the table.
    conn = await asyncpg.connect(migrated_url)
    try:
        token = make_token(500, 77)
        row_id = await requests.submit(
            conn, meter.serial, "top_up", {"token": token}, key="once", client=None, expires_in=300
        )
    finally:
        await conn.close()
    assert await fetchval(migrated_url, "SELECT status FROM flowsd.meter_command") == "pending"
    # The next start takes the command (the same fleet, registered again), the one after
    # must not touch it again.
    async with served(migrated_url, tmp_path) as s2:
        await wait_until(lambda: _status(migrated_url, row_id, ("succeeded", "failed")), seconds=60)
        first = await fetch(migrated_url, "SELECT status, claimed_at FROM flowsd.meter_command")
        await s2.daemon.appender.flush()
    async with served(migrated_url, tmp_path):
        await anyio.sleep(1.5)  # a few fallback polls of the table
    again = await fetch(migrated_url, "SELECT status, claimed_at FROM flowsd.meter_command")
    assert first == again
    requested = [
        e for e in await events_of(migrated_url, "COMMAND_REQUESTED") if e["operation"] == "top_up"
    ]
    assert len(requested) == 1
    assert first[0]["status"] == "succeeded"


async def _status(url: str, row_id: int, wanted: tuple[str, ...]) -> bool:
    status = await fetchval(url, "SELECT status FROM flowsd.meter_command WHERE id = $1", row_id)
    return status in wanted


async def test_a_command_cut_off_by_a_crash_is_failed_not_rerun(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s:
        meter = s.fleet.meters[0]
        instance = s.daemon.instance
        # As a crash leaves it: claimed by an earlier run of this instance, never finished
        # (one transaction: the running daemon never sees the row pending).
        conn = await asyncpg.connect(migrated_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO flowsd.meter_command (idempotency_key, serial, kind)
                       VALUES ('crashed', $1, 'set_clock')""",
                    meter.serial,
                )
                await conn.execute(
                    """UPDATE flowsd.meter_command SET status = 'running', claimed_by = $1,
                       claim_run = gen_random_uuid(), claimed_at = now()""",
                    instance,
                )
        finally:
            await conn.close()
    async with served(migrated_url, tmp_path) as s2:
        await wait_until(lambda: _status(migrated_url, 1, ("failed",)))
        await s2.daemon.appender.flush()
        failed = await events_of(migrated_url, "COMMAND_FAILED")
    error = await fetchval(migrated_url, "SELECT error FROM flowsd.meter_command")
    assert error.startswith("interrupted")
    assert failed[-1]["reason"] == "interrupted"
    assert not await events_of(migrated_url, "COMMAND_SUCCEEDED")


async def test_a_claimed_write_whose_lease_moved_on_before_it_ran_is_refused_unsent(
    migrated_url: str, tmp_path: Path
) -> None:
    """Fenced at the claim and again as the session starts it: a row claimed while the
    daemon held the lease, whose lease then passed to another daemon while the row waited
    in the meter's session (behind a read the meter answers slowly), fails before anything
    of it is sent, naming the holder, and is counted as fenced."""
    clock = SimClock(FROZEN_AT, speed=0.0)
    flag = by_name("prepay_enabled_flag").id
    async with registered_fleet(
        migrated_url, 2, clock=clock, hardware=SINGLE_PHASE, journal=True
    ) as fleet:
        config = mediator_config(
            tmp_path,
            migrated_url,
            fleet,
            meters_config=msgspec.structs.replace(FAST_METERS, read_timeout_seconds=20.0),
        )
        # No renewal during the test: only the command's own check can see the move.
        config = msgspec.structs.replace(
            config, leases=LeasesConfig(lease_seconds=600.0, renew_seconds=300.0)
        )
        async with running_daemon(config, migrated_url, wall_clock=sim_wall_clock(clock)) as daemon:
            meter = fleet.meters[0]
            meter_id = daemon.supervisor.meter_id_of(meter.serial)
            assert meter_id is not None
            await wait_until(lambda: daemon.ownership.owns(meter_id))
            prepay_before = fleet.truth(meter.index).flags["prepay_enabled"]
            flag_exchanges = _exchanges_of(fleet, meter.index, flag)
            ref = await daemon.dispatcher.lookup(meter.serial)
            slow_read = MeterCommand(
                ReadObject(by_name("csq_net_op").id), source="grpc", client="test"
            )
            fleet.set_faults(f"slow@{meter.index}=1:5s")
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    functools.partial(daemon.dispatcher.run, wait_seconds=60.0), ref, slow_read
                )
                await wait_until(lambda: fleet.open_connections(meter.index) >= 1)
                conn = await asyncpg.connect(migrated_url)
                try:
                    row_id = await requests.submit(
                        conn,
                        meter.serial,
                        "prepay",
                        {"enabled": False},
                        key=str(uuid.uuid4()),
                        client="test",
                        expires_in=60,
                    )
                    await wait_until(lambda: _status(migrated_url, row_id, ("running",)))
                    # Claimed, queued behind the read: the lease passes on, as a takeover
                    # after this daemon stalled would move it.
                    assert slow_read.result is None, "the read ended before the move"
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
                        await conn.execute(
                            "UPDATE flowsd.meter_lease SET daemon = 'elsewhere', "
                            "epoch = nextval('flowsd.meter_lease_epoch_seq') WHERE meter_id = $1",
                            meter_id,
                        )
                    fleet.set_faults(None)
                    assert slow_read.result is None, "the read ended before the move"
                    row = await requests.wait_outcome(conn, row_id, 60)
                finally:
                    await conn.close()
            assert slow_read.result is not None and slow_read.result.ok
            assert row["status"] == "failed", row
            assert row["error"] == "unavailable: the meter's lease is held by daemon elsewhere"
            assert row["result"]["reason"] == "unavailable" and not row["result"]["ok"]
            assert daemon.ownership.statistics().fenced_commands["database"] == 1
            # Nothing of the command reached the meter (the simulator's own journal).
            assert _exchanges_of(fleet, meter.index, flag) == flag_exchanges
            assert fleet.truth(meter.index).flags["prepay_enabled"] == prepay_before


def _exchanges_of(fleet: SimulatedFleet, index: int, object_id: int) -> int:
    """Requests (reads and writes) naming the object that the meter answered."""
    oid = object_id.to_bytes(3, "big")
    return sum(1 for e in fleet.answers(index) if e.request[1:4] == oid)
