"""Event store throughput: append at several batch sizes against two COPY ceilings, the
appender task end to end, and read-back with decoding.

Runs on a durable server (fsync and synchronous_commit as configured by default): the one in
``$FLOWSD_DATABASE_URL`` (a scratch database is created on it and dropped afterwards), else an
embedded PostgreSQL started in a temporary directory.

The events have the production plan's mix (per meter and hour: four half-hourly profile
records, a balance, a signal and a voltage read; a register and a clock read now and then),
round-robin over 1,000 meters. Append and ceiling figures are medians of three runs each,
interleaved. Each also reports the CPU per event of this process and (when the server runs on
this machine) of its server process, which move far less than events/s on a shared machine.

* ``append batch=N``: :func:`flowsd.events.store.append_batch` (serialised transaction, key
  lookup and binary COPY into the log, unnest below 250 events; the log's indexes, unique
  key, meter check and triggers; NOTIFY), including the encoding of the events (keys, payload
  JSON) and the building of the returned events.
* ``copy ceiling indexed batch=N``: the same rows, already built as Python tuples, COPY'd by
  asyncpg into a table with the log's columns, identity, indexes and constraints (``LIKE ...
  INCLUDING ALL``, its foreign keys, the trigger that notes the meters, which stands in for
  the meter foreign key, and the key claim, which stands in for a unique index on the key:
  the log's own trigger function, claiming into a key table like ``flowsd.event_key``), one
  transaction per batch: what a plain COPY of these rows achieves with the log's guarantees.
  ``append/ceiling`` is measured against it.
* ``copy ceiling unindexed batch=N``: the same into a table with the same columns and no
  index, key or trigger, for reference: what the hardware allows.
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
from collections.abc import Iterator
from contextlib import contextmanager
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
from flowsd.events.codec import event_set_of, key_batch, payload_json
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.types import (
    AnyBody,
    BalanceRead,
    ClockRead,
    Event,
    ProfileLog1Record,
    ProfileLog2Record,
    RegisterRead,
    SignalQualityRead,
    VoltageRead,
)

AREA = "events"
METERS = 1000
# Each figure is the median of this many runs (the machine is shared; runs vary by ±30 %).
REPETITIONS = 3
_START = datetime(2026, 1, 1, tzinfo=UTC)


def _body(n: int, slot: int, moment: datetime) -> AnyBody:
    """The ``slot``-th of 16 events of a meter: the production plan's proportions."""
    if slot < 4:
        return ProfileLog1Record(status=0x80, import_a_wh=1_000_000 + n)
    if slot < 8:
        return ProfileLog2Record(
            status=0x80,
            export_a_wh=n // 3,
            reactive_import_a_varh=n // 5,
            reactive_export_a_varh=n // 7,
            voltage_raw=2400,
        )
    if slot < 10:
        return BalanceRead(balance_gbp=Decimal(n % 5000) / 100, emergency_credit_gbp=Decimal(15))
    if slot < 12:
        return SignalQualityRead(csq=n % 31, network_operator=1)
    if slot < 14:
        return VoltageRead(voltage_v=Decimal("239.4"))
    if slot < 15:
        return RegisterRead(element="A", import_active_wh=1_000_000 + n, export_active_wh=n // 3)
    return ClockRead(meter_time=moment, drift_seconds=0.5)


def _events(meters: list[uuid.UUID], count: int, offset: int) -> list[Event]:
    """Round-robin over the meters, each meter's events in the production plan's mix."""
    events: list[Event] = []
    for n in range(offset, offset + count):
        moment = _START + timedelta(seconds=n)
        body = _body(n, (n // len(meters)) % 16, moment)
        events.append(
            Event(meter_id=meters[n % len(meters)], observed_at=moment, read_at=moment, body=body)
        )
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

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.events = 0
        self.python = 0.0
        self.server: float | None = 0.0

    @contextmanager
    def measure(self, events: int) -> Iterator[None]:
        python, server = cpu_seconds(), _backend_cpu_seconds(self.server_pid)
        yield
        self.events += events
        self.python += cpu_seconds() - python
        server_after = _backend_cpu_seconds(self.server_pid)
        if self.server is not None and server is not None and server_after is not None:
            self.server += server_after - server
        else:
            self.server = None

    def detail(self) -> dict[str, object]:
        if not self.events:
            return {}
        per_event: dict[str, object] = {
            "python_cpu_us_per_event": round(self.python / self.events * 1e6, 2)
        }
        if self.server is not None:
            per_event["server_cpu_us_per_event"] = round(self.server / self.events * 1e6, 2)
        return per_event


async def _append(conn: asyncpg.Connection, events: list[Event], batch: int, cpu: _Cpu) -> float:
    with cpu.measure(len(events)):
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            await append_batch(conn, events[i : i + batch])
        elapsed = time.perf_counter() - started
    return elapsed


_COPY_COLUMNS = [
    "meter_id",
    "timestamp",
    "event_type",
    "event_set",
    "read_at",
    "payload",
    "idempotency_key",
]


def _copy_rows(events: list[Event], batch: int) -> list[list[tuple[object, ...]]]:
    chunks = []
    for i in range(0, len(events), batch):
        rows: list[tuple[object, ...]] = [
            (
                e.meter_id,
                e.observed_at,
                e.type_id,
                event_set_of(e.body),
                e.read_at,
                payload_json(e.body),
                e.idempotency_key(),
            )
            for e in events[i : i + batch]
        ]
        chunks.append(rows)
    return chunks


async def _copy(
    conn: asyncpg.Connection, table: str, chunks: list[list[tuple[object, ...]]], cpu: _Cpu
) -> float:
    with cpu.measure(sum(len(rows) for rows in chunks)):
        started = time.perf_counter()
        for rows in chunks:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    table, records=rows, columns=_COPY_COLUMNS, schema_name="public"
                )
        elapsed = time.perf_counter() - started
    return elapsed


async def _create_ceilings(conn: asyncpg.Connection) -> None:
    await conn.execute(
        'CREATE TABLE bench_raw (meter_id uuid, "timestamp" timestamptz, '
        "event_type integer, event_set integer, read_at timestamptz, payload jsonb, "
        "idempotency_key uuid)"
    )
    await conn.execute("CREATE TABLE bench_indexed (LIKE flows.meter_event_log INCLUDING ALL)")
    for (definition,) in await conn.fetch(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'flows.meter_event_log'::regclass AND contype = 'f'"
    ):
        await conn.execute(f"ALTER TABLE bench_indexed ADD {definition}")
    if await conn.fetchval("SELECT to_regproc('flowsd.note_event_log_meters') IS NOT NULL"):
        await conn.execute(
            "CREATE TRIGGER bench_indexed_note_meters AFTER INSERT ON bench_indexed "
            "REFERENCING NEW TABLE AS appended "
            "FOR EACH STATEMENT EXECUTE FUNCTION flowsd.note_event_log_meters()"
        )
    if await conn.fetchval("SELECT to_regproc('flowsd.claim_event_keys') IS NOT NULL"):
        await _claim_keys_like_the_log(conn)


async def _claim_keys_like_the_log(conn: asyncpg.Connection) -> None:
    """The log's key uniqueness on the indexed ceiling: the log's own key-claiming function,
    aimed at a key table of the ceiling's (the log's keys are claimed already, as the same
    events are appended first), as the same statement trigger."""
    await conn.execute("CREATE TABLE bench_indexed_key (LIKE flowsd.event_key INCLUDING ALL)")
    definition: str = await conn.fetchval(
        "SELECT pg_get_functiondef('flowsd.claim_event_keys'::regproc)"
    )
    aimed = definition.replace("flowsd.claim_event_keys(", "public.bench_claim_keys(", 1)
    aimed = aimed.replace("flowsd.event_key ", "public.bench_indexed_key ")
    if aimed.count("public.") != 2:
        raise RuntimeError(f"flowsd.claim_event_keys changed shape: {definition}")
    await conn.execute(aimed)
    await conn.execute(
        "CREATE TRIGGER bench_indexed_claim_keys AFTER INSERT ON bench_indexed "
        "REFERENCING NEW TABLE AS appended "
        "FOR EACH STATEMENT EXECUTE FUNCTION public.bench_claim_keys()"
    )


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
        # The ids as the daemon holds them: read from the registry (asyncpg's UUID type).
        meters = [
            row["id"]
            for row in await conn.fetch(
                "INSERT INTO flows.meter_registry (id) SELECT unnest($1::uuid[]) RETURNING id",
                [uuid.uuid4() for _ in range(METERS)],
            )
        ]
        await _create_ceilings(conn)
        sample = _events(meters, per_size, 100 * per_size)
        started = time.perf_counter()
        for i in range(0, len(sample), 10_000):
            for _ in key_batch(sample[i : i + 10_000]).copy_data(frozenset()):
                pass
        results.append(
            Result(
                AREA,
                "encode events (keys, COPY data)",
                rate(len(sample), time.perf_counter() - started),
                "events/s",
                {"note": "Python share of every append, included in append batch=N"},
            )
        )
        offset = 0
        server_pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        for batch in (100, 1000, 10_000):
            rates: dict[str, list[float]] = {"append": [], "indexed": [], "raw": []}
            cpus = {name: _Cpu(server_pid) for name in rates}
            for _ in range(REPETITIONS):
                events = _events(meters, per_size, offset)
                offset += per_size
                elapsed = await _append(conn, events, batch, cpus["append"])
                rates["append"].append(rate(len(events), elapsed))
                chunks = _copy_rows(events, batch)
                for table in ("indexed", "raw"):
                    elapsed = await _copy(conn, f"bench_{table}", chunks, cpus[table])
                    rates[table].append(rate(len(events), elapsed))
            append_rate = median(rates["append"])
            indexed_rate, raw_rate = median(rates["indexed"]), median(rates["raw"])
            results.append(
                Result(
                    AREA,
                    f"append batch={batch}",
                    append_rate,
                    "events/s",
                    {
                        "events": per_size,
                        "runs": _spread(rates["append"]),
                        "append/ceiling": round(append_rate / indexed_rate, 3),
                        "load_average": _load_average(),
                        **cpus["append"].detail(),
                    },
                )
            )
            results.append(
                Result(
                    AREA,
                    f"copy ceiling indexed batch={batch}",
                    indexed_rate,
                    "events/s",
                    {
                        "events": per_size,
                        "runs": _spread(rates["indexed"]),
                        **cpus["indexed"].detail(),
                    },
                )
            )
            results.append(
                Result(
                    AREA,
                    f"copy ceiling unindexed batch={batch}",
                    raw_rate,
                    "events/s",
                    {
                        "events": per_size,
                        "runs": _spread(rates["raw"]),
                        "append/unindexed": round(append_rate / raw_rate, 3),
                        **cpus["raw"].detail(),
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


def _load_average() -> float:
    return os.getloadavg()[0]


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
