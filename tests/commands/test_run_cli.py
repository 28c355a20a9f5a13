"""``flowsd run`` as a real subprocess: bad configuration, SIGHUP reload, SIGTERM drain, the
mediator API turned on by ``--mediator-listen``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg

from flowsd.commands.run import with_credential_password
from flowsd.emop.objects import by_name
from flowsd.events import types
from tests.db.servers import free_port
from tests.integration.daemon import (
    fetch,
    fetchval,
    registered_fleet,
    run_config,
)
from tests.mediator.helpers import client
from tests.support import WAIT_SECONDS, wait_until

FLOWSD = [sys.executable, "-m", "flowsd"]


def test_bad_config_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    config = tmp_path / "flowsd.toml"
    config.write_text("[meters]\nmin_gap_seconds = -1\nno_such_key = 3\n")
    done = subprocess.run(
        [*FLOWSD, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWSD_DATABASE_URL": "postgresql://127.0.0.1:1/none"},
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("flowsd run: ") and str(config) in lines[0]


def _drain(notify: socket.socket) -> list[str]:
    """Every line systemd would have received on $NOTIFY_SOCKET."""
    lines: list[str] = []
    with notify:
        while True:
            try:
                lines += notify.recv(4096).decode().splitlines()
            except BlockingIOError:
                return lines


async def _events_of(url: str, type_id: int, serial: str | None = None) -> int:
    query = """SELECT count(*) FROM flows.meter_event_log l
               JOIN flows.meter_registry r ON r.id = l.meter_id
               WHERE l.event_type = $1 AND ($2::text IS NULL OR r.serial = $2)"""
    return int(await fetchval(url, query, type_id, serial))


async def test_sighup_reloads_and_sigterm_drains_and_exits_0(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 8, hardware=("B1.w",)) as fleet:
        late = fleet.meters[7].serial
        conn = await asyncpg.connect(migrated_url)
        try:
            await conn.execute(
                "UPDATE flows.meter_registry SET mode = 'passive' WHERE serial = $1", late
            )
            # Only SIGHUP (or the hourly reload) may bring the change in: no NOTIFY here.
            await conn.execute(
                "ALTER TABLE flows.meter_registry "
                "DISABLE TRIGGER meter_registry_announce_dial_change"
            )
        finally:
            await conn.close()
        config = tmp_path / "flowsd.toml"
        config.write_text(run_config(tmp_path / "state", fleet.port))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.setblocking(False)
        env = {
            **os.environ,
            "FLOWSD_DATABASE_URL": migrated_url,
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "WATCHDOG_USEC": "2000000",
        }
        env.pop("WATCHDOG_PID", None)
        log = tmp_path / "stderr.log"
        mediator = f"127.0.0.1:{free_port()}"
        with log.open("wb") as stderr_file:
            process = await anyio.open_process(
                [*FLOWSD, "run", "--config", str(config), "--mediator-listen", mediator],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
            )
            try:
                csq = types.SignalQualityRead.TYPE_ID
                await wait_until(lambda: _events_of(migrated_url, csq))
                async with client(mediator) as api:
                    answer = await api.read(fleet.meters[0].serial, by_name("csq_net_op").id)
                assert answer, "the mediator API answered a read with no payload"
                conn = await asyncpg.connect(migrated_url)
                try:
                    await conn.execute(
                        "UPDATE flows.meter_registry SET mode = 'active' WHERE serial = $1", late
                    )
                finally:
                    await conn.close()
                config.write_text(
                    run_config(
                        tmp_path / "state",
                        fleet.port,
                        single_phase=["csq_net_op", "prepay_balance"],
                    )
                )
                await anyio.sleep(1.0)
                assert await _events_of(migrated_url, csq, late) == 0
                process.send_signal(signal.SIGHUP)
                await wait_until(lambda: _events_of(migrated_url, csq, late))
                await wait_until(lambda: _events_of(migrated_url, types.BalanceRead.TYPE_ID))
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(WAIT_SECONDS):
                    status = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert status == 0, log.read_text()[-2000:]
    # The shipped default loop, under which the signals above were handled.
    starting = next(line for line in log.read_text().splitlines() if "flowsd starting" in line)
    assert re.search(r"event_loop\W+uvloop", starting), starting
    messages = _drain(notify)
    assert "READY=1" in messages and "STOPPING=1" in messages and "WATCHDOG=1" in messages
    statuses = [line for line in messages if line.startswith("STATUS=")]
    assert any(re.search(r"meters \d/\d online; db ok; queue \d+", s) for s in statuses), statuses
    heartbeat = (await fetch(migrated_url, "SELECT * FROM flowsd.daemon_heartbeat"))[0]
    stored = await fetchval(migrated_url, "SELECT count(*) FROM flows.meter_event_log")
    assert heartbeat["stopped_at"] is not None
    assert heartbeat["queue_depth"] == 0 and heartbeat["spilled_events"] == 0
    assert heartbeat["events_appended"] == stored
    env = {**os.environ, "FLOWSD_DATABASE_URL": migrated_url}
    report = json.loads((await anyio.run_process([*FLOWSD, "status", "--json"], env=env)).stdout)
    assert [d["state"] for d in report["daemons"]] == ["stopped"]
    assert report["meters"] == {
        "meters": 8, "online": 8, "offline": 0, "never_answered": 0, "awaiting_first_answer": 0
    }  # fmt: skip
    assert report["registry_meters"] == 8 and report["event_log_head"] >= stored
    text = (await anyio.run_process([*FLOWSD, "status"], env=env)).stdout.decode()
    assert "8 polled, 8 online, 0 offline" in text


def test_database_password_comes_from_the_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "db-password").write_text("s3cr/t@x\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    url = with_credential_password("postgresql://flowsd@db.example:5432/flows", env)
    assert url == "postgresql://flowsd:s3cr%2Ft%40x@db.example:5432/flows"
    # A password in the URL wins; no credential directory changes nothing.
    assert with_credential_password("postgresql://a:b@h/d", env) == "postgresql://a:b@h/d"
    assert with_credential_password("postgresql://a@h/d", {}) == "postgresql://a@h/d"
