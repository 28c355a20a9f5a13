"""``flowsd demo`` (what ``make run`` runs): the next free management port, announced."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest

from flowsd.errors import UserError
from flowsd.ops.ports import next_free_listen
from tests.integration.daemon import (
    subnet,
)
from tests.support import WAIT_SECONDS

FLOWSD = [sys.executable, "-m", "flowsd"]
REPO = Path(__file__).resolve().parents[2]


def test_next_free_listen_skips_taken_ports() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        found = next_free_listen(f"127.0.0.1:{port}")
        assert found != f"127.0.0.1:{port}"
        assert int(found.rpartition(":")[2]) > port
        with pytest.raises(UserError, match="no free port"):
            next_free_listen(f"127.0.0.1:{port}", tries=1)
    assert next_free_listen(f"127.0.0.1:{port}") == f"127.0.0.1:{port}"  # free again


async def _get(port: int, path: str) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(30):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    return data


async def _all_of(stream: anyio.abc.ByteReceiveStream) -> str:
    data = b""
    with anyio.fail_after(WAIT_SECONDS):
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                return data.decode()


async def test_demo_takes_the_next_free_port_and_says_where(
    database_url: str, tmp_path: Path
) -> None:
    base = subnet()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        config = tmp_path / "demo.toml"
        config.write_text(
            (REPO / "config" / "flowsd-demo.toml").read_text()
            + f'\n[state]\ndirectory = "{tmp_path / "state"}"\n'
            + f'[management]\nlisten = "127.0.0.1:{taken}"\n'
        )
        argv = [*FLOWSD, "demo", "--config", str(config), "--meters", "2", "--base-address",
                base, "--database-url", database_url]  # fmt: skip
        # Without --management auto the configured address is taken as it is: one line, 2.
        process = await anyio.open_process(argv)
        try:
            assert process.stderr is not None
            stderr = await _all_of(process.stderr)
            assert await process.wait() == 2
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert stderr.splitlines()[-1].startswith(
            f"flowsd demo: management endpoint: cannot listen on 127.0.0.1:{taken}"
        ), stderr
        process = await anyio.open_process([*argv, "--management", "auto"])
        try:
            assert process.stderr is not None
            text = ""
            with anyio.fail_after(WAIT_SECONDS):
                while "flowsd demo:" not in text:
                    text += (await process.stderr.receive()).decode()
            line = next(x for x in text.splitlines() if x.startswith("flowsd demo:"))
            match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
            assert match, line
            port = int(match.group(1))
            assert port > taken
            assert "make status" in line and str(config) in line
            assert b"flowsd_build_info" in await _get(port, "/metrics")
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(WAIT_SECONDS):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
