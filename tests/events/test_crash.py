"""Crash safety with real processes and SIGKILL: spilled events survive, none is doubled."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.events.helpers import balance_event, create_meters

REPO = Path(__file__).resolve().parents[2]
COUNT = 400


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.events.crash_child", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL


async def _wait_for_line(process: subprocess.Popen[str], word: str, seconds: float) -> str:
    """The child's first stdout line starting with ``word`` (log lines are skipped)."""
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for _ in range(100_000):
        remaining = deadline - loop.time()
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), remaining)
        if not line:
            raise AssertionError(f"child exited before printing {word}")
        if line.startswith(word):
            return line.strip()
    raise AssertionError(f"no {word} line")


@pytest.mark.slow
async def test_sigkill_between_spill_and_drain_and_during_drain(
    migrated_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    (meter,) = await create_meters(conn, 1)
    spill = tmp_path / "spill"
    expected = [balance_event(meter, n).idempotency_key() for n in range(COUNT)]

    # 1. The database is down: everything accepted goes to the journal; then SIGKILL.
    first = _child("spill", migrated_url, str(spill), str(meter), str(COUNT))
    try:
        assert await _wait_for_line(first, "SPILLED", 60) == f"SPILLED {COUNT}"
    finally:
        _kill(first)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 0
    assert any(spill.iterdir())

    # 2. A restarted process drains slowly and is killed half-way.
    second = _child("drain", migrated_url, str(spill))
    try:
        for _ in range(600):
            committed = await conn.fetchval("SELECT count(*) FROM flows.meter_event_log")
            if committed > 0:
                break
            await asyncio.sleep(0.05)
        assert 0 < committed < COUNT
    finally:
        _kill(second)

    # 3. The next process finishes: every event once, in acceptance order.
    third = _child("drain", migrated_url, str(spill))
    try:
        assert await _wait_for_line(third, "DONE", 120) == "DONE"
        third.wait(30)
    finally:
        if third.poll() is None:
            _kill(third)
    keys = await conn.fetch("SELECT idempotency_key FROM flows.meter_event_log ORDER BY position")
    assert [r[0] for r in keys] == expected
    assert not [p for p in spill.iterdir() if p.name.endswith(".spill")]
