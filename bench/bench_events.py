"""Event store throughput: append at several batch sizes against the raw COPY ceiling, the
appender task end to end, and read-back with decoding.

Runs on a durable server (fsync and synchronous_commit as configured by default): the one in
``$FLOWSD_DATABASE_URL`` (a scratch database is created on it and dropped afterwards), else an
embedded PostgreSQL started in a temporary directory.

Append and ceiling figures are medians of three runs each, interleaved. ``append batch=N`` also
reports the CPU per event of this process and (when the server runs on this machine) of its
server process, which move far less than events/s when the machine is shared.

* ``append batch=N``: :func:`flowsd.events.store.append_batch` (serialised transaction, binary
  COPY into the session's staging table (unnest below 1000 events), one INSERT ... SELECT with
  the stored-key filter, unique index, FK to meter_registry, NOTIFY), including the encoding of
  the events (keys, payload JSON) and the building of the returned events.
* ``copy ceiling batch=N``: the same rows, already encoded, COPY'd into a table with the same
  columns and no index, key or trigger, one transaction per batch: what the hardware allows.
* ``appender end-to-end``: events through :class:`flowsd.events.appender.Appender` (queue,
  group commit at ``batch_max`` 2000) until all are committed.
* ``read batch=N``: :func:`flowsd.events.reader.read_events` from position 0, decoding bodies.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median

import asyncpg

from bench.common import Result, cpu_seconds, rate
from flowsd.config import AppenderConfig
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.events.appender import Appender
from flowsd.events.codec import to_columns, to_staged_rows
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.types import BalanceRead, Event, RegisterRead

AREA = "events"
METERS = 1000
# Each figure is the median of this many runs (the machine is shared; runs vary by ±30 %).
REPETITIONS = 3
_START = datetime(2026, 1, 1, tzinfo=UTC)


def _events(meters: list[uuid.UUID], count: int, offset: int) -> list[Event]:
    """Realistic mix: balance readings and register reads, round-robin over the meters."""
    events: list[Event] = []
    for n in range(offset, offset + count):
        meter = meters[n % len(meters)]
        moment = _START + timedelta(seconds=n)
        if n % 2:
            body: BalanceRead | RegisterRead = BalanceRead(balance_gbp=Decimal(n % 5000) / 100)
        else:
            body = RegisterRead(
                element="A", import_active_wh=1_000_000 + n, export_active_wh=n // 3
            )
        events.append(Event(meter_id=meter, observed_at=moment, read_at=moment, body=body))
    return events


def _spread(rates: list[float]) -> list[int]:
    return sorted(round(r) for r in rates)


def _backend_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by the server process ``pid`` (None unless it is local)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Cpu:
    """Per-event CPU of this process and of the connection's server process, summed over runs:
    steadier than events/s on a shared machine."""

    def __init__(self) -> None:
        self.events = 0
        self.python = 0.0
        self.server: float | None = 0.0

    def detail(self) -> dict[str, object]:
        if not self.events:
            return {}
        per_event: dict[str, object] = {
            "python_cpu_us_per_event": round(self.python / self.events * 1e6, 1)
        }
        if self.server is not None:
            per_event["server_cpu_us_per_event"] = round(self.server / self.events * 1e6, 1)
        return per_event


async def _append(
    conn: asyncpg.Connection, events: list[Event], batch: int, cpu: _Cpu, server_pid: int
) -> float:
    python, server = cpu_seconds(), _backend_cpu_seconds(server_pid)
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        await append_batch(conn, events[i : i + batch])
    elapsed = time.perf_counter() - started
    cpu.events += len(events)
    cpu.python += cpu_seconds() - python
    server_after = _backend_cpu_seconds(server_pid)
    if cpu.server is not None and server is not None and server_after is not None:
        cpu.server += server_after - server
    else:
        cpu.server = None
    return elapsed


async def _copy(conn: asyncpg.Connection, events: list[Event], batch: int) -> float:
    chunks = []
    for i in range(0, len(events), batch):
        c = to_columns(events[i : i + batch])
        chunks.append(
            list(
                zip(
                    c.meter_ids,
                    c.observed_at,
                    c.event_types,
                    c.event_sets,
                    c.read_at,
                    c.payloads,
                    c.keys,
                    strict=True,
                )
            )
        )
    started = time.perf_counter()
    for rows in chunks:
        async with conn.transaction():
            await conn.copy_records_to_table("bench_raw", records=rows, schema_name="public")
    return time.perf_counter() - started


async def _appender(url: str, events: list[Event], spill: Path) -> float:
    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    appender = Appender(
        connect,
        config=AppenderConfig(queue_size=20_000, batch_max=2000, flush_interval_seconds=0.02),
        spill_directory=spill,
    )
    task = asyncio.create_task(appender.run())
    started = time.perf_counter()
    for event in events:
        await appender.append(event)
    await appender.flush()
    elapsed = time.perf_counter() - started
    appender.stop()
    await task
    return elapsed


async def _read(conn: asyncpg.Connection, batch: int) -> tuple[int, float]:
    started = time.perf_counter()
    cursor, total = 0, 0
    for _ in range(10_000_000):
        page = await read_events(conn, cursor, batch)
        if not page:
            break
        total += len(page)
        cursor = page[-1].position
    return total, time.perf_counter() - started


async def _run(url: str, quick: bool, scratch: Path) -> list[Result]:
    per_size = 10_000 if quick else 50_000
    conn = await asyncpg.connect(url)
    results: list[Result] = []
    try:
        await migrate(conn)
        meters = [uuid.uuid4() for _ in range(METERS)]
        await conn.execute(
            "INSERT INTO flows.meter_registry (id) SELECT unnest($1::uuid[])", meters
        )
        await conn.execute(
            'CREATE TABLE bench_raw (meter_id uuid, "timestamp" timestamptz, '
            "event_type integer, event_set integer, read_at timestamptz, payload jsonb, "
            "idempotency_key uuid)"
        )
        sample = _events(meters, per_size, 100 * per_size)
        started = time.perf_counter()
        to_staged_rows(sample)
        results.append(
            Result(
                AREA,
                "encode events (keys, payload JSON)",
                rate(len(sample), time.perf_counter() - started),
                "events/s",
                {"note": "Python share of every append, included in append batch=N"},
            )
        )
        offset = 0
        server_pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        for batch in (100, 1000, 10_000):
            append_rates, copy_rates = [], []
            cpu = _Cpu()
            for _ in range(REPETITIONS):
                events = _events(meters, per_size, offset)
                offset += per_size
                elapsed = await _append(conn, events, batch, cpu, server_pid)
                append_rates.append(rate(len(events), elapsed))
                copy_rates.append(rate(len(events), await _copy(conn, events, batch)))
            append_rate, copy_rate = median(append_rates), median(copy_rates)
            results.append(
                Result(
                    AREA,
                    f"append batch={batch}",
                    append_rate,
                    "events/s",
                    {"events": per_size, "runs": _spread(append_rates), **cpu.detail()},
                )
            )
            results.append(
                Result(
                    AREA,
                    f"copy ceiling batch={batch}",
                    copy_rate,
                    "events/s",
                    {
                        "events": per_size,
                        "runs": _spread(copy_rates),
                        "append/ceiling": round(append_rate / copy_rate, 3),
                    },
                )
            )
        events = _events(meters, per_size, offset)
        elapsed = await _appender(url, events, scratch / "spill")
        results.append(
            Result(
                AREA,
                "appender end-to-end batch_max=2000",
                rate(len(events), elapsed),
                "events/s",
                {"events": len(events)},
            )
        )
        for batch in (1000, 10_000):
            total, elapsed = await _read(conn, batch)
            results.append(
                Result(
                    AREA, f"read batch={batch}", rate(total, elapsed), "events/s", {"events": total}
                )
            )
    finally:
        await conn.close()
    return results


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-events-") as scratch:
        configured = os.environ.get("FLOWSD_DATABASE_URL")
        if configured:
            name = f"flowsd_bench_{uuid.uuid4().hex[:12]}"
            return asyncio.run(_with_scratch_database(configured, name, quick, Path(scratch)))
        server = start_embedded(Path(scratch) / "pg", cleanup="delete")
        try:
            return asyncio.run(_run(server.url("postgres"), quick, Path(scratch)))
        finally:
            server.stop()


async def _with_scratch_database(url: str, name: str, quick: bool, scratch: Path) -> list[Result]:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return await _run(with_database(url, name), quick, scratch)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
