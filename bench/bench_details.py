"""What ``flows.meter_event_log.details`` costs: append rate and bytes per event, per variant.

``details`` is the documentation's name for the event payload (migration 2). PostgreSQL 18
can make it a VIRTUAL generated column (computed on read, nothing stored); below 18 the only
generated kind is STORED, which writes the payload a second time. This area measures, on the
server it runs against, each variant the server supports:

* ``none``: no ``details`` column (the floor);
* ``stored``: ``GENERATED ALWAYS AS (payload) STORED`` (what migration 2 creates below 18);
* ``virtual``: ``GENERATED ALWAYS AS (payload) VIRTUAL`` (PostgreSQL 18+, what it creates there).

Each variant gets its own scratch database, migrated and then given that column. Events are
the realistic mix of the ``events`` area (balance readings and register reads, 1000 meters),
appended with :func:`flowsd.events.store.append_batch` in batches of 1000; rates are medians
of three interleaved runs. Bytes per event are the log table's total size (heap, TOAST and
indexes) after the appends, divided by its rows.

Server: ``$FLOWSD_DATABASE_URL`` (scratch databases are created there and dropped), else an
embedded PostgreSQL 18.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

import asyncpg

from bench.bench_events import METERS, _events
from bench.common import Result, rate
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.events.store import append_batch

AREA = "details"
BATCH = 1000
REPETITIONS = 3

_COLUMN = {
    "none": None,
    "stored": "jsonb GENERATED ALWAYS AS (payload) STORED",
    "virtual": "jsonb GENERATED ALWAYS AS (payload) VIRTUAL",
}


async def _prepare(url: str, variant: str, meters: list[uuid.UUID]) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.execute("ALTER TABLE flows.meter_event_log DROP COLUMN IF EXISTS details")
    column = _COLUMN[variant]
    if column:
        await conn.execute(f"ALTER TABLE flows.meter_event_log ADD COLUMN details {column}")
    await conn.execute("INSERT INTO flows.meter_registry (id) SELECT unnest($1::uuid[])", meters)
    return conn


async def _run(admin_url: str, quick: bool) -> list[Result]:
    per_run = 20_000 if quick else 100_000
    admin = await asyncpg.connect(admin_url)
    version: int = int(await admin.fetchval("SHOW server_version_num"))
    variants = [v for v in _COLUMN if v != "virtual" or version >= 180000]
    names = {v: f"flowsd_bench_details_{v}_{uuid.uuid4().hex[:8]}" for v in variants}
    meters = [uuid.uuid4() for _ in range(METERS)]
    connections: dict[str, asyncpg.Connection] = {}
    results: list[Result] = []
    try:
        for variant, name in names.items():
            await admin.execute(f'CREATE DATABASE "{name}"')
            connections[variant] = await _prepare(with_database(admin_url, name), variant, meters)
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for repetition in range(REPETITIONS):
            events = _events(meters, per_run, repetition * per_run)
            for variant in variants:
                conn = connections[variant]
                started = time.perf_counter()
                for i in range(0, len(events), BATCH):
                    await append_batch(conn, events[i : i + BATCH])
                rates[variant].append(rate(len(events), time.perf_counter() - started))
        for variant in variants:
            conn = connections[variant]
            await conn.execute("VACUUM (ANALYZE) flows.meter_event_log")
            rows: int = await conn.fetchval("SELECT count(*) FROM flows.meter_event_log")
            sizes = await conn.fetchrow(
                "SELECT pg_total_relation_size('flows.meter_event_log') AS total, "
                "pg_relation_size('flows.meter_event_log') AS heap, "
                "pg_indexes_size('flows.meter_event_log') AS indexes"
            )
            assert sizes is not None
            detail: dict[str, object] = {
                "server_version_num": version,
                "events": rows,
                "runs": sorted(round(r) for r in rates[variant]),
                "heap_bytes_per_event": round(sizes["heap"] / rows, 1),
                "index_bytes_per_event": round(sizes["indexes"] / rows, 1),
            }
            results.append(
                Result(
                    AREA,
                    f"append {variant} batch={BATCH}",
                    median(rates[variant]),
                    "events/s",
                    detail,
                )
            )
            results.append(
                Result(
                    AREA,
                    f"size {variant}",
                    sizes["total"] / rows,
                    "bytes/event",
                    {"server_version_num": version, "events": rows},
                )
            )
    finally:
        for conn in connections.values():
            await conn.close()
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return results


def run(quick: bool) -> list[Result]:
    configured = os.environ.get("FLOWSD_DATABASE_URL")
    if configured:
        return asyncio.run(_run(configured, quick))
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-details-") as scratch:
        server = start_embedded(Path(scratch) / "pg", cleanup="delete")
        try:
            return asyncio.run(_run(server.url("postgres"), quick))
        finally:
            server.stop()
