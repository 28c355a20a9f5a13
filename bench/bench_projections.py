"""Projection throughput, replay time and live lag, on a durable PostgreSQL.

The log is generated in SQL (``generate_series``), a realistic mix per meter and day: 48
profile-log-1 and 48 profile-log-2 records, hourly balance, CSQ and voltage reads, 20 balance
changes, the daily reads (registers A and B, both tariffs, clock, identity, flags, backlight,
load switch) and 3 meter-native entries: 200 events. Measured:

* raw read throughput of the log (keyset pages of 50,000, rows fetched, no decoding), so the
  cost of projecting is visible beside the cost of reading;
* ``flowsd replay`` of every projection over 1 million and 10 million events (100,000 with
  ``quick``): seconds, and events per second (all projections together);
* live lag: batches committed by an in-process appender loop, handed in memory to a
  :class:`~flowsd.projections.runner.ProjectorRunner`; p50/p99 of commit -> every
  projection's checkpoint (and rows) committed.

Server: ``$FLOWSD_DATABASE_URL`` if set, else an embedded PostgreSQL with default (durable)
settings in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from bench.common import Result, rate
from flowsd.config import ProjectionsConfig
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.events import types as t
from flowsd.events.codec import payload_json
from flowsd.events.reader import head_position
from flowsd.events.store import append_batch
from flowsd.events.subscriptions import SubscriberHub
from flowsd.projections.catalogue import all_projections
from flowsd.projections.progress import Progress
from flowsd.projections.replay import replay
from flowsd.projections.runner import ProjectorRunner

AREA = "projections"
EVENTS_PER_METER_DAY = 200
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def _templates() -> dict[str, str]:
    """Payload JSON of each generated kind, from the real encoder (fields varied in SQL)."""
    tariff = t.ActiveTariff(
        standing_charge_gbp=Decimal("0.51082"),
        unit_rate_a_gbp=Decimal("0.2843"),
        unit_rate_b_gbp=Decimal("0.2843"),
        emergency_credit_gbp=Decimal("15"),
        ecredit_availability_gbp=Decimal("5"),
        debt_recovery_rate_gbp=Decimal("0.5"),
        threshold_mask=(False,) * 8,
        threshold_values=(0,) * 7,
    )
    future = t.FutureTariff(
        standing_charge_gbp=Decimal("0.52"),
        unit_rate_a_gbp=Decimal("0.29"),
        unit_rate_b_gbp=Decimal("0.29"),
        emergency_credit_gbp=Decimal("15"),
        ecredit_availability_gbp=Decimal("5"),
        debt_recovery_rate_gbp=Decimal("0.5"),
        activation_datetime=datetime(2026, 4, 1),
    )
    bodies: dict[str, t.EventBody] = {
        "log1": t.ProfileLog1Record(status=0x80, import_a_wh=0, import_b_wh=0),
        "log2": t.ProfileLog2Record(
            status=0x80, export_a_wh=0, reactive_import_a_varh=0, reactive_export_a_varh=0
        ),
        "balance": t.BalanceRead(balance_gbp=Decimal("0")),
        "balance_changed": t.BalanceChanged(previous_gbp=Decimal("0"), balance_gbp=Decimal("0")),
        "csq": t.SignalQualityRead(csq=0),
        "voltage": t.VoltageRead(voltage_v=Decimal("240.1")),
        "register": t.RegisterRead(element="A", import_active_wh=0, export_active_wh=0),
        "tariff": t.ActiveTariffRead(tariff=tariff),
        "future": t.FutureTariffRead(tariff=future),
        "clock": t.ClockRead(meter_time=DAY0, drift_seconds=0.0),
        "identity": t.IdentityRead(hardware="C1.w", firmware_version="3_03_2"),
        "flags": t.FlagsRead(prepay_enabled=False, daylight_savings_correction_enabled=True),
        "backlight": t.BacklightRead(raw=0, setting="normal_sp"),
        "load_switch": t.LoadSwitchRead(raw=0, setting="normal_sp"),
    }
    found = {}
    for name, body in bodies.items():
        text = payload_json(body)
        assert text is not None
        found[name] = text
    return found


def _day_sql(templates: dict[str, str]) -> str:
    """One day of events for every meter ($1 = day start, $2 = day number), in time order."""

    def t_(name: str) -> str:
        return "'" + templates[name].replace("'", "''") + "'::jsonb"

    return f"""
INSERT INTO flows.meter_event_log
    (meter_id, "timestamp", event_type, event_set, read_at, payload, idempotency_key)
SELECT m.id, ev.at, ev.event_type, ev.event_set, ev.at + interval '5 minutes', ev.payload,
       md5(m.id::text || '|' || ev.event_type || '|' || ev.at || '|' || ev.disc)::uuid
FROM bench_meter m
CROSS JOIN LATERAL (
    SELECT $1::timestamptz + s * interval '30 minutes' AS at, 1014 AS event_type,
           NULL::integer AS event_set, '' AS disc,
           {t_("log1")} || jsonb_build_object(
               'import_a_wh', m.n * 100000 + ($2 * 48 + s) * 250 + (s % 7) * 13,
               'import_b_wh', m.n * 50000 + ($2 * 48 + s) * 90) AS payload
    FROM generate_series(1, 48) s
    UNION ALL
    SELECT $1 + s * interval '30 minutes', 1015, NULL, '',
           {t_("log2")} || jsonb_build_object('export_a_wh', ($2 * 48 + s) * 20)
    FROM generate_series(1, 48) s
    UNION ALL
    SELECT $1 + h * interval '1 hour' + interval '1 minute', 1001, NULL, '',
           {t_("balance")}
           || jsonb_build_object('balance_gbp', ((m.n * 7 + h * 3) % 90 - 10)::text)
    FROM generate_series(0, 23) h
    UNION ALL
    SELECT $1 + h * interval '1 hour' + interval '1 minute', 1101, NULL, '',
           {t_("balance_changed")}
           || jsonb_build_object('balance_gbp', ((m.n * 7 + h * 3) % 90 - 10)::text)
    FROM generate_series(0, 19) h
    UNION ALL
    SELECT $1 + h * interval '1 hour' + interval '2 minutes', 1002, NULL, '',
           {t_("csq")} || jsonb_build_object('csq', (m.n + h) % 32)
    FROM generate_series(0, 23) h
    UNION ALL
    SELECT $1 + h * interval '1 hour' + interval '3 minutes', 1003, NULL, '',
           {t_("voltage")}
           || jsonb_build_object('voltage_v', (2300 + (m.n + h) % 150)::numeric / 10)
    FROM generate_series(0, 23) h
    UNION ALL
    SELECT $1 + interval '2 hours' + k * interval '1 second', 1006, NULL, el, {t_("register")}
           || jsonb_build_object('element', el, 'import_active_wh', m.n * 100000 + $2 * 12000,
                                 'export_active_wh', $2 * 960)
    FROM (VALUES (0, 'A'), (1, 'B')) AS r(k, el)
    UNION ALL
    SELECT $1 + interval '2 hours 1 minute', 1008, NULL, '', {t_("tariff")}
    UNION ALL
    SELECT $1 + interval '2 hours 1 minute', 1009, NULL, '', {t_("future")}
    UNION ALL
    SELECT $1 + interval '2 hours 2 minutes', 1005, NULL, '',
           {t_("clock")} || jsonb_build_object('drift_seconds', (m.n % 40)::float8 + 0.5)
    UNION ALL
    SELECT $1 + interval '2 hours 3 minutes', 1010, NULL, '', {t_("identity")}
    UNION ALL
    SELECT $1 + interval '2 hours 3 minutes', 1011, NULL, '', {t_("flags")}
    UNION ALL
    SELECT $1 + interval '2 hours 4 minutes', 1012, NULL, '', {t_("backlight")}
    UNION ALL
    SELECT $1 + interval '2 hours 4 minutes', 1013, NULL, '', {t_("load_switch")}
    UNION ALL
    SELECT $1 + interval '5 hours' + k * interval '7 minutes', 33, k, k::text, NULL
    FROM generate_series(0, 2) k
) ev
ORDER BY ev.at, m.n
"""


@asynccontextmanager
async def _server() -> Any:
    configured = os.environ.get("FLOWSD_DATABASE_URL")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-projections-") as directory:
        server = start_embedded(Path(directory) / "data", cleanup="delete")
        try:
            yield server.url("postgres")
        finally:
            server.stop()


@asynccontextmanager
async def _database(admin_url: str) -> Any:
    name = f"flowsd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(admin_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _generate(conn: asyncpg.Connection, meters: int, events: int) -> int:
    """About ``events`` events for ``meters`` meters; returns the number stored."""
    await conn.execute("SET synchronous_commit = off")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_meter (n integer PRIMARY KEY, id uuid NOT NULL)"
    )
    await conn.execute(
        "INSERT INTO bench_meter SELECT n, gen_random_uuid() FROM generate_series(1, $1) n",
        meters,
    )
    await conn.execute(
        "INSERT INTO flows.meter_registry (id, serial, name) "
        "SELECT id, 'EMLB' || n, 'bench-' || n FROM bench_meter"
    )
    await conn.execute(
        "INSERT INTO flows.meter_registers (register_id, meter_id, element) "
        "SELECT gen_random_uuid(), id, el::flows.meter_register_element "
        "FROM bench_meter CROSS JOIN (VALUES ('A'), ('B')) AS e(el)"
    )
    sql = _day_sql(_templates())
    days = max(round(events / (meters * EVENTS_PER_METER_DAY)), 1)
    for day in range(days):
        await conn.execute(sql, DAY0 + timedelta(days=day), day)
    await conn.execute("ANALYZE flows.meter_event_log")
    stored: int = await conn.fetchval("SELECT count(*) FROM flows.meter_event_log")
    return stored


async def _raw_read(conn: asyncpg.Connection) -> tuple[int, float]:
    """Every event fetched in keyset pages of 50,000 (the projector's read query)."""
    started = time.perf_counter()
    after, count = 0, 0
    while True:
        rows = await conn.fetch(
            """SELECT position, recorded_at, meter_id, "timestamp", read_at, event_type,
                      event_set, payload::text AS payload, idempotency_key
               FROM flows.meter_event_log WHERE position > $1 ORDER BY position LIMIT 50000""",
            after,
        )
        if not rows:
            break
        count += len(rows)
        after = rows[-1]["position"]
    return count, time.perf_counter() - started


async def _replay_all(conn: asyncpg.Connection, url: str) -> float:
    projections = all_projections()
    head: int = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
    progress = Progress(head * len(projections), label="bench replay", log_every_seconds=30)
    started = time.perf_counter()
    await replay(
        conn, projections, progress=progress, connect=lambda: asyncpg.connect(url), workers=2
    )
    return time.perf_counter() - started


def _live_events(meters: list[uuid.UUID], at: datetime, size: int) -> list[t.Event]:
    events = []
    for i in range(size):
        meter = meters[i % len(meters)]
        moment = at + timedelta(microseconds=i)
        kind = i % 4
        body: Any
        if kind == 0:
            body = t.BalanceRead(balance_gbp=Decimal(i % 50))
        elif kind == 1:
            body = t.SignalQualityRead(csq=i % 32)
        elif kind == 2:
            body = t.VoltageRead(voltage_v=Decimal("239.9"))
        else:
            body = t.ProfileLog1Record(status=0x80, import_a_wh=i)
        events.append(t.Event(meter_id=meter, observed_at=moment, read_at=moment, body=body))
    return events


async def _live_lag(url: str, batches: int, batch_size: int) -> list[float]:
    """Seconds from each append's commit until every projection has applied it."""
    pool = await asyncpg.create_pool(url, min_size=4, max_size=12)
    appender = await asyncpg.connect(url)
    hub = SubscriberHub()
    meters = [r["id"] for r in await appender.fetch("SELECT id FROM bench_meter LIMIT 500")]
    runner = ProjectorRunner(pool, ProjectionsConfig(), subscribe=hub.subscribe)
    lags: list[float] = []
    try:
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            await _wait_caught_up(runner, appender)
            start = datetime(2027, 1, 1, tzinfo=UTC)
            for n in range(batches):
                events = _live_events(meters, start + timedelta(seconds=n), batch_size)
                result = await append_batch(appender, events)
                committed = time.perf_counter()
                hub.publish(result)
                await runner.wait_caught_up(result.through_position, 60)
                lags.append(time.perf_counter() - committed)
                await asyncio.sleep(0.02)
            group.cancel_scope.cancel()
    finally:
        await appender.close()
        await pool.close()
    return lags


async def _wait_caught_up(runner: ProjectorRunner, conn: asyncpg.Connection) -> None:
    await runner.wait_caught_up(await head_position(conn), 600)


async def _measure(quick: bool) -> list[Result]:
    results: list[Result] = []
    sizes = [100_000] if quick else [1_000_000, 10_000_000]
    async with _server() as admin_url:
        for size in sizes:
            meters = 100 if size <= 100_000 else 1000
            async with _database(admin_url) as url:
                conn = await asyncpg.connect(url)
                try:
                    started = time.perf_counter()
                    stored = await _generate(conn, meters, size)
                    generated = time.perf_counter() - started
                    label = f"{stored / 1e6:g}M" if stored >= 1e6 else f"{stored // 1000}k"
                    detail: dict[str, object] = {
                        "events": stored,
                        "meters": meters,
                        "generate_seconds": generated,
                    }
                    count, seconds = await _raw_read(conn)
                    results.append(
                        Result(
                            AREA,
                            f"raw log read ({label})",
                            rate(count, seconds),
                            "events/s",
                            {**detail, "seconds": seconds},
                        )
                    )
                    seconds = await _replay_all(conn, url)
                    results.append(
                        Result(AREA, f"replay all projections ({label})", seconds, "s", detail)
                    )
                    results.append(
                        Result(
                            AREA,
                            f"projection throughput ({label})",
                            rate(stored, seconds),
                            "events/s",
                            detail,
                        )
                    )
                finally:
                    await conn.close()
                if size == sizes[0]:
                    lags = await _live_lag(url, 60 if quick else 200, 200)
                    ordered = sorted(lags)
                    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                    detail = {
                        "batches": len(lags),
                        "batch_events": 200,
                        "p50_ms": statistics.median(lags) * 1000,
                    }
                    results.append(
                        Result(AREA, "live lag p99 (commit -> projected)", p99 * 1000, "ms", detail)
                    )
    return results


def run(quick: bool) -> list[Result]:
    return asyncio.run(_measure(quick))
