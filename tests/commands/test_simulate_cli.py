"""``flowsd simulate`` as a process: it serves, writes its manifest, stops on a signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from flowsd.emop import ReadRequest, decode_response, encode_request, object_id

SERIAL = ReadRequest(object_id("serial"))


def _flowsd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowsd", *args]


def _exchange(ip: str, port: int, wire: bytes) -> bytes:
    with socket.create_connection((ip, port), timeout=3) as sock:
        sock.sendall(wire)
        received = bytearray()
        for _ in range(100):
            chunk = sock.recv(512)
            if not chunk:
                break
            received += chunk
    return bytes(received)


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists():
            loaded: dict[str, object] = json.loads(path.read_text())
            return loaded
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    _, err = process.communicate(timeout=5)
    pytest.fail(f"no manifest; flowsd simulate said: {err.decode()}")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_simulate_serves_its_manifest_and_stops_on_signal(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    manifest = tmp_path / "fleet.json"
    process = subprocess.Popen(
        _flowsd("simulate", "--meters", "4", "--seed", "9", "--base-address", "127.77.31.1",
                "--port", "0", "--manifest", str(manifest), "--hardware", "C1.w,P1.ax"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        document = _wait_for(manifest, process)
        meters = document["meters"]
        assert isinstance(meters, list)
        assert [m["ip_address"] for m in meters] == [f"127.77.31.{i}" for i in range(1, 5)]
        assert [m["hardware"] for m in meters] == ["C1.w", "P1.ax", "C1.w", "P1.ax"]
        assert {"serial", "ip_address", "port", "hardware"} <= set(meters[0])
        first = meters[0]
        raw = _exchange(first["ip_address"], first["port"], encode_request(SERIAL))
        record = decode_response(raw, SERIAL).record
        assert getattr(record, "serial", "").strip() == first["serial"]
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0, err.decode()
    with pytest.raises(ConnectionRefusedError):
        _exchange(first["ip_address"], first["port"], encode_request(SERIAL))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meters", "0"], "--meters"),
        (["--meters", "2", "--faults", "bogus=1"], "unknown fault kind"),
        (["--meters", "2", "--faults", "refuse=2"], "between 0 and 1"),
        (["--meters", "2", "--base-address", "10.0.0.1"], "127.0.0.0/8"),
        (["--meters", "2", "--base-address", "127.255.255.255"], "127.0.0.0/8"),
        (["--meters", "2", "--hardware", "Z9"], "--hardware"),
        (["--meters", "2", "--register"], "--register needs"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWSD_DATABASE_URL"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # keeps a dependency's warning off stderr
    done = subprocess.run(
        _flowsd("simulate", "--port", "0", *args),
        capture_output=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, done.stderr.decode()
    assert message in lines[0]


def test_an_address_in_use_is_a_user_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.77.32.2", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            _flowsd("simulate", "--meters", "3", "--base-address", "127.77.32.1",
                    "--port", str(port)),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert "cannot listen" in done.stderr.decode()


async def test_register_flag_creates_the_fleet_rows(migrated_url: str, tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.json"
    args = ["simulate", "--meters", "3", "--seed", "5", "--base-address", "127.77.33.1",
            "--port", "0", "--manifest", str(manifest), "--register",
            "--database-url", migrated_url]  # fmt: skip
    for _ in range(2):  # a re-run registers the same rows again without error
        manifest.unlink(missing_ok=True)
        process = await asyncio.create_subprocess_exec(
            *_flowsd(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            for _ in range(200):
                if manifest.exists() or process.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            assert manifest.exists(), "no manifest written"
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()
        assert "registered 3 meters" in err.decode()
    conn = await asyncpg.connect(migrated_url)
    try:
        rows = await conn.fetch(
            "SELECT serial, host(ip_address) AS ip, mode::text AS mode FROM flows.meter_registry"
        )
    finally:
        await conn.close()
    meters = json.loads(manifest.read_text())["meters"]
    assert sorted((r["serial"], r["ip"], r["mode"]) for r in rows) == sorted(
        (m["serial"], m["ip_address"], "active") for m in meters
    )
