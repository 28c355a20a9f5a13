"""``flowsd events``: one meter's events, from a daemon polling a simulated fleet."""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    fetch,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import WAIT_SECONDS, wait_until

FLOWSD = [sys.executable, "-m", "flowsd"]
PLAN = fast_plan(0.3, single=("csq_net_op", "prepay_balance"))


async def _flowsd(url: str, *argv: str) -> tuple[int, str, str]:
    with anyio.fail_after(WAIT_SECONDS):
        done = await anyio.run_process(
            [*FLOWSD, *argv, "--database-url", url], check=False, env=dict(os.environ)
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def _positions(url: str, serial: str, since: datetime | None = None) -> list[int]:
    rows = await fetch(
        url,
        """SELECT l.position FROM flows.meter_event_log l
           JOIN flows.meter_registry r ON r.id = l.meter_id
           WHERE r.serial = $1 AND ($2::timestamptz IS NULL OR l.recorded_at >= $2)
           ORDER BY l.position""",
        serial,
        since,
    )
    return [row["position"] for row in rows]


async def test_a_meters_last_events_types_and_since(migrated_url: str, tmp_path: Path) -> None:
    async with registered_fleet(migrated_url, 3, hardware=("B1.w",)) as fleet:
        serial = fleet.meters[1].serial
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=PLAN), fleet)
        async with running_daemon(config, migrated_url):
            await wait_until(lambda: _at_least(migrated_url, serial, 12))
    everything = await _positions(migrated_url, serial)

    status, out, err = await _flowsd(migrated_url, "events", "--meter", serial, "--last", "4")
    assert status == 0, err
    lines = out.splitlines()
    assert [int(line.split()[0]) for line in lines] == everything[-4:]

    status, out, _ = await _flowsd(
        migrated_url, "events", "--meter", serial.lower(), "--json", "--type", "signal_quality_read"
    )
    documents = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and 1 <= len(documents) <= 20
    assert {d["type"] for d in documents} == {"SIGNAL_QUALITY_READ"}
    assert {d["serial"] for d in documents} == {serial}
    assert all(isinstance(d["payload"]["csq"], int) for d in documents)

    since = (
        await fetch(
            migrated_url,
            "SELECT recorded_at FROM flows.meter_event_log WHERE position = $1",
            everything[len(everything) // 2],
        )
    )[0][0]
    status, out, _ = await _flowsd(
        migrated_url, "events", "--meter", serial, "--since", since.isoformat()
    )
    assert [int(line.split()[0]) for line in out.splitlines()] == await _positions(
        migrated_url, serial, since
    )

    status, _, err = await _flowsd(migrated_url, "events", "--meter", "EMLNOBODY")
    assert status == 2 and err.strip().endswith(
        "no meter with serial or id 'EMLNOBODY' in flows.meter_registry"
    )
    status, _, err = await _flowsd(migrated_url, "events", "--meter", serial, "--type", "nope")
    assert status == 2 and "unknown event type 'nope'" in err and len(err.splitlines()) == 1


async def _at_least(url: str, serial: str, count: int) -> bool:
    return len(await _positions(url, serial)) >= count


async def _read_lines(process: Process, into: list[dict[str, Any]]) -> None:
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        into.extend(json.loads(line) for line in complete if line)


async def test_follow_prints_every_committed_event_of_the_meter_once(
    migrated_url: str, tmp_path: Path
) -> None:
    async with registered_fleet(migrated_url, 4, hardware=("C1.w",)) as fleet:
        serial = fleet.meters[2].serial
        seen: list[dict[str, Any]] = []
        # Whenever the follower starts reading, it shows everything recorded since then.
        started = datetime.now(UTC)
        process = await anyio.open_process(
            [*FLOWSD, "events", "--meter", serial, "--follow", "--json", "--since",
             started.isoformat(), "--poll-seconds", "0.5", "--database-url", migrated_url],
        )  # fmt: skip
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_lines, process, seen)
                config = with_meters(daemon_config(tmp_path, migrated_url, poll=PLAN), fleet)
                async with running_daemon(config, migrated_url):
                    await wait_until(lambda: len(seen) >= 10)
                committed = await _positions(migrated_url, serial)
                await wait_until(lambda: [d["position"] for d in seen] == committed)
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(WAIT_SECONDS):
                    assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert {d["serial"] for d in seen} == {serial}
    assert all(datetime.fromisoformat(d["recorded_at"]) >= started for d in seen)
    other = await fetch(
        migrated_url,
        "SELECT count(*) FROM flows.meter_event_log l JOIN flows.meter_registry r "
        "ON r.id = l.meter_id WHERE r.serial <> $1",
        serial,
    )
    assert other[0][0] > 0  # other meters' events were in the log, and were left out
