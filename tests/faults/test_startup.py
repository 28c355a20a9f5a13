"""Database trouble at start-up, with `flowsd run` as systemd starts it (a subprocess with a
$NOTIFY_SOCKET): what no retry can fix (a URL of another scheme, a database that does not
exist, a wrong password) is one line and exit status 2 at once; an unreachable server is
waited for, with /healthz 200 and /readyz 503 naming the database meanwhile and READY=1 sent
right away, so the unit's start timeout cannot kill a daemon that waits as it should."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import asyncpg
import pytest

from tests.faults.harness import http_status
from tests.faults.server import PrivateServer
from tests.integration.daemon import (
    free_port,
)
from tests.support import WAIT_SECONDS, migrate_database, wait_until

FLOWSD = [sys.executable, "-m", "flowsd"]


def _config(tmp_path: Path, listen: str = "") -> Path:
    config = tmp_path / "flowsd.toml"
    config.write_text(
        f"""
[state]
directory = "{tmp_path / "state"}"
[management]
listen = "{listen}"
[logging]
format = "json"
[database]
connect_timeout_seconds = 5.0
reconnect_initial_seconds = 0.1
reconnect_max_seconds = 0.5
[daemon]
state_flush_seconds = 0.3
"""
    )
    return config


def _run_once(tmp_path: Path, url: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [*FLOWSD, "run", "--config", str(_config(tmp_path)), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "FLOWSD_DATABASE_URL"},
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def _assert_one_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    # Log lines (JSON) may come first; the user's line is the last and the only other one.
    plain = [line for line in stderr.strip().splitlines() if not line.startswith("{")]
    assert len(plain) == 1, stderr
    assert plain[0].startswith("flowsd run: "), plain
    for needle in needles:
        assert needle in plain[0], plain[0]
    assert not any("retrying" in line for line in stderr.splitlines()), stderr


def test_a_url_of_another_scheme_is_one_line_and_exit_2(tmp_path: Path) -> None:
    status, stderr, _ = _run_once(tmp_path, "mysql://flowsd:pw@127.0.0.1:3306/flows")
    assert status == 2
    _assert_one_line(stderr, "not a PostgreSQL URL (scheme mysql)")
    assert "pw" not in stderr


@pytest.mark.parametrize("trouble", ["no_such_database", "wrong_password"])
def test_refusals_are_one_line_and_exit_2_at_once(
    private_server: PrivateServer, tmp_path: Path, trouble: str
) -> None:
    if trouble == "no_such_database":
        url = private_server.url(f"flowsd_missing_{uuid.uuid4().hex[:8]}")
        expected = "does not exist"
    else:
        url = private_server.url(password="not-the-password")
        expected = "password authentication failed"
    status, stderr, seconds = _run_once(tmp_path, url)
    assert status == 2
    _assert_one_line(stderr, "refused the connection", expected)
    assert "not-the-password" not in stderr
    assert seconds < WAIT_SECONDS


def _collect(notify: socket.socket, lines: list[str]) -> bool:
    """Add what systemd would have received on $NOTIFY_SOCKET to ``lines``; False."""
    while True:
        try:
            lines += notify.recv(4096).decode().splitlines()
        except BlockingIOError:
            return False


async def _readyz(host: str, port: int) -> tuple[int, dict[str, object]]:
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        reply = b""
        with anyio.fail_after(10):
            while True:
                try:
                    reply += await stream.receive(65536)
                except anyio.EndOfStream:
                    break
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_an_unreachable_server_is_waited_for_while_health_answers(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    database = f"startup_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(private_server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = private_server.url(database)
    await migrate_database(url)
    port = free_port("127.0.0.1")
    config = _config(tmp_path, f"127.0.0.1:{port}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWSD_DATABASE_URL", "WATCHDOG_PID")}
    env |= {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    await anyio.to_thread.run_sync(private_server.stop, "fast")
    messages: list[str] = []
    try:
        process = await anyio.open_process(
            [*FLOWSD, "run", "--config", str(config), "--database-url", url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until(lambda: http_status("127.0.0.1", port, "/healthz"))
            # Up and waiting: READY=1 already (with a STATUS saying so), health answering.
            await wait_until(lambda: _collect(notify, messages) or "READY=1" in messages)
            assert any(m.startswith("STATUS=waiting for the database") for m in messages)
            await anyio.sleep(1.5)  # a few retries with a growing delay
            assert await http_status("127.0.0.1", port, "/healthz") == 200
            status, body = await _readyz("127.0.0.1", port)
            assert status == 503
            details = body["details"]
            assert isinstance(details, dict)
            assert f"127.0.0.1:{private_server.port}/{database}: unavailable" in details["database"]
            assert private_server.url(database).split("@")[0].split(":")[-1] not in str(body)
            assert process.returncode is None
            await anyio.to_thread.run_sync(private_server.start)
            await wait_until(lambda: _ready_now(port))
            process.terminate()
            with anyio.fail_after(WAIT_SECONDS):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        if not private_server.running():
            await anyio.to_thread.run_sync(private_server.start)
        notify.close()
        admin = await asyncpg.connect(private_server.url())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def _ready_now(port: int) -> bool:
    return await http_status("127.0.0.1", port, "/readyz") == 200
