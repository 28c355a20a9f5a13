"""``flowsd demo`` as a process: it polls a day of simulated past, then every documented query
answers with rows (what `make run` promises), and it stops cleanly on SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import anyio

from tests.integration.doc_truth import row_counts

DEMO_CONFIG = Path(__file__).parents[2] / "config" / "flowsd-demo.toml"
# Seed 1's first 8 meters have every role: a communal three-phase supply (offline meters query
# aside, the documentation's "meters without properties"), and a solar generation meter.
METERS = 8
WAIT_SECONDS = 240.0


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _config(tmp_path: Path, port: int) -> Path:
    """The demo preset with this test's port, state directory and no management endpoint."""
    text = DEMO_CONFIG.read_text()
    text = text.replace("[meters]\n", f"[meters]\nport = {port}\n", 1)
    text = re.sub(r"(?m)^min_gap_seconds = .*$", "min_gap_seconds = 0.0", text)
    head = f'[management]\nlisten = ""\n\n[state]\ndirectory = "{tmp_path / "state"}"\n\n'
    path = tmp_path / "demo.toml"
    path.write_text(head + text)
    return path


async def test_demo_history_answers_every_documented_query(
    database_url: str, tmp_path: Path
) -> None:
    base = "127.79.16.1"
    config = _config(tmp_path, _free_port(base))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowsd", "demo", "--config", str(config),
        "--database-url", database_url, "--meters", str(METERS), "--base-address", base,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output: list[str] = []
    real_time = anyio.Event()

    async def drain() -> None:
        """Keep reading the demo's log (a full pipe would stall it)."""
        assert process.stdout is not None
        async for line in process.stdout:
            output.append(line.decode())
            if "running in real time" in output[-1]:
                real_time.set()
        real_time.set()  # ended: the check below says so

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            with anyio.fail_after(WAIT_SECONDS):
                await real_time.wait()
            assert process.returncode is None, "flowsd demo ended early:\n" + "".join(output)
            assert any("a meter loses its signal" in line for line in output)
            # Leaping through simulated hours is not staleness: the rule waits for real time.
            assert not any("meter readings stale" in line for line in output)
            counts = await row_counts(database_url)
            # The low-balance query's rows depend on the day (balances wander); all others
            # answer.
            assert all(n > 0 for name, n in counts.items() if name != "q3"), counts
            assert counts["q1"] == METERS and counts["q4"] == 1 and counts["q13"] == 3, counts
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(60):
                await process.wait()
        assert process.returncode == 0, "".join(output[-30:])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
