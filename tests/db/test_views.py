"""Views and the queries people run against `flows`: they plan, and they compute correctly."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from flowsd.db.migrate import migrate
from tests.db.hosted import ERAS, Era, build_production, hosted_database

# Queries from SCHEMA-NOTES (production code and consumers) and from the public docs.
QUERIES = [
    # the event syncer: newest stored event of a meter
    'SELECT "timestamp", event_type FROM flows.meter_event_log WHERE meter_id = $1 '
    'ORDER BY "timestamp" DESC LIMIT 1',
    # sync jobs: active meters of an ESCO with an address
    "SELECT mr.id, mr.serial, mr.ip_address, mr.hardware FROM flows.meter_registry mr "
    "JOIN flows.escos e ON e.id = mr.esco WHERE lower(e.code) = lower('WLCE') "
    "AND mr.mode = 'active' AND mr.ip_address IS NOT NULL",
    # get_meters_for_cli: meter, ESCO code and feeder name
    "SELECT mr.serial, e.code, f.name FROM flows.meter_registry mr "
    "LEFT JOIN flows.escos e ON e.id = mr.esco "
    "LEFT JOIN flows.service_head_meter shm ON shm.meter = mr.id "
    "LEFT JOIN flows.service_head_registry sh ON sh.id = shm.service_head "
    "LEFT JOIN flows.feeder_registry f ON f.id = sh.feeder WHERE mr.mode = 'active'",
    # myenergy.sync_flows_to_public_meters
    "SELECT mr.serial, ms.balance, mr.prepay_enabled FROM flows.meter_registry mr "
    "JOIN flows.meter_shadows ms ON ms.id = mr.id",
    # myenergy.meters_missing_future_tariffs
    "SELECT serial, future_activation_datetime, future_standing_charge, future_unit_rate_a, "
    "future_unit_rate_b FROM flows.meter_shadows_tariffs WHERE future_activation_datetime IS NULL "
    "OR abs(future_unit_rate_a - 0.25) > 0.0001",
    # myenergy.meters_with_incorrect_threshold_settings
    "SELECT id FROM flows.meter_shadows WHERE NOT (tariffs_active -> 'threshold_mask' @> "
    """'{"rate1": false}'::jsonb)""",
    # balance-jump diagnostics: balance history and type-48 events around a time
    'SELECT b.meter_id, b."timestamp", b.balance, b.emergency_credit '
    "FROM flows.meter_prepay_balance b WHERE b.meter_id = $1 "
    "AND b.\"timestamp\" BETWEEN now() - interval '1 day' AND now()",
    'SELECT e.meter_id, e."timestamp" FROM flows.meter_event_log e '
    "JOIN flows.meter_event_log_type t ON t.id = e.event_type "
    "WHERE t.name = 'CREDIT_TOKEN_APPLIED' AND e.\"timestamp\" > now() - interval '1 hour'",
    # skypro: half-hours per register with its nature, by feeder
    'SELECT rih.register_id, rih."timestamp", rih.kwh, r.nature FROM flows.register_interval_hh '
    "rih JOIN flows.meter_registers r ON r.register_id = rih.register_id "
    "JOIN flows.service_head_meter shm ON shm.meter = r.meter_id "
    "JOIN flows.service_head_registry sh ON sh.id = shm.service_head "
    "JOIN flows.feeder_registry f ON f.id = sh.feeder WHERE f.name = 'F1' "
    "AND rih.\"timestamp\" >= now() - interval '7 days'",
    # myenergy.sync_flows_to_public_monthly_usage and _circuits
    "SELECT circuit_id, month, kwh FROM flows.circuit_interval_monthly",
    "SELECT c.id, c.type, c.name, cr.register, r.meter_id FROM flows.circuits c "
    "JOIN flows.circuit_register cr ON cr.circuit = c.id "
    "JOIN flows.meter_registers r ON r.register_id = cr.register WHERE c.created_at > $1",
    # operators' completeness signal
    "SELECT register_id, date, record_count, missing_count FROM flows.register_interval_hh_missing "
    "WHERE missing_count > 0",
    # the public docs' columns
    "SELECT circuit_id, day, kwh, total_import_kwh, total_export_kwh "
    "FROM flows.circuit_interval_daily",
    "SELECT circuit_id, month, total_import_kwh, total_export_kwh, days_in_month "
    "FROM flows.circuit_interval_monthly",
    'SELECT circuit_id, "timestamp", total_import_kwh FROM flows.circuit_interval_hh',
    "SELECT c.name, s.name, s.location, s.capacity_kw, c.rating_amps FROM flows.circuits c "
    "JOIN flows.sites_new s ON s.id = c.site",
    "SELECT p.plot, p.address, p.type, s.code FROM flows.properties p "
    "JOIN flows.sites_new s ON s.id = p.site",
    "SELECT name, substation, rating_amps FROM flows.feeder_registry",
    "SELECT register_id, element, direction_reversed FROM flows.meter_registers "
    "WHERE meter_id = $1",
    "SELECT balance, emergency_credit, balance_updated_at FROM flows.meter_shadows WHERE id = $1",
    'SELECT "timestamp", import_cumulative, import_interval FROM flows.register_import',
    'SELECT "timestamp", export_cumulative, export_interval FROM flows.register_export',
    'SELECT "timestamp", import_kwh, export_kwh FROM flows.register_interval_hh',
    'SELECT "timestamp", health, reason FROM flows.meter_health_history',
    'SELECT "timestamp", event_type, details FROM flows.meter_event_log WHERE meter_id = $1',
    "SELECT serial, name, last_online FROM flows.meters_offline_recently",
    "SELECT id, serial, name, balance FROM flows.meters_low_balance",
]


# The documentation's example queries, placeholders filled in.
DOC_QUERIES_FILE = Path(__file__).parents[1] / "integration" / "doc_queries.sql"
DOC_QUERIES = [
    line.replace("{{esco_id}}", str(uuid.uuid4()))
    .replace("{{meter_id}}", str(uuid.uuid4()))
    .replace("{{site_id}}", str(uuid.uuid4()))
    for line in DOC_QUERIES_FILE.read_text().splitlines()
    if line.strip() and not line.startswith("--")
]


async def _failures(conn: asyncpg.Connection, queries: list[str], *, run: bool) -> list[str]:
    """Queries that do not plan (or, with ``run``, do not execute), with the error."""
    failures = []
    for query in queries:
        try:
            statement = await conn.prepare(query if run else f"EXPLAIN {query}")
            arguments = [
                uuid.uuid4() if p.name == "uuid" else datetime.now(UTC)
                for p in statement.get_parameters()
            ]
            await statement.fetch(*arguments)
        except asyncpg.PostgresError as exc:
            failures.append(f"{query}\n    -> {type(exc).__name__}: {exc}")
    return failures


async def test_every_view_plans(migrated_conn: asyncpg.Connection) -> None:
    views = await migrated_conn.fetch(
        "SELECT viewname FROM pg_views WHERE schemaname = 'flows' "
        "UNION ALL SELECT matviewname FROM pg_matviews WHERE schemaname = 'flows'"
    )
    assert len(views) == 11
    for (view,) in views:
        plan = await migrated_conn.fetch(f"EXPLAIN SELECT * FROM flows.{view}")
        assert plan, view


async def test_known_queries_plan(migrated_conn: asyncpg.Connection) -> None:
    failures = await _failures(migrated_conn, QUERIES, run=False)
    assert not failures, "\n".join(failures)


async def test_documentation_queries_run(migrated_conn: asyncpg.Connection) -> None:
    assert len(DOC_QUERIES) == 13
    failures = await _failures(migrated_conn, DOC_QUERIES, run=True)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("era", ERAS)
async def test_every_query_runs_on_upgraded_production_as_the_reader(
    pg_admin_url: str, era: Era
) -> None:
    async with hosted_database(pg_admin_url) as database:
        owner = await asyncpg.connect(database.url)
        try:
            await build_production(owner, database, era)
            await migrate(owner)
        finally:
            await owner.close()
        # Consumers read through flowsd_reader (granted to their login roles).
        reader = await asyncpg.connect(database.admin_url)
        try:
            await reader.execute("SET ROLE flowsd_reader")
            failures = await _failures(reader, QUERIES + DOC_QUERIES, run=True)
        finally:
            await reader.close()
    assert not failures, "\n".join(failures)


async def _circuit_with_half_hours(
    conn: asyncpg.Connection, start: datetime, slots: int
) -> uuid.UUID:
    meter = await conn.fetchval(
        "INSERT INTO flows.meter_registry (serial) VALUES ('M') RETURNING id"
    )
    register, circuit = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO flows.meter_registers (register_id, meter_id, nature, element) "
        "VALUES ($1, $2, 'power', 'A')",
        register,
        meter,
    )
    await conn.execute("INSERT INTO flows.circuits (id, type) VALUES ($1, 'power')", circuit)
    await conn.execute(
        "INSERT INTO flows.circuit_register (circuit, register, start_time) VALUES ($1, $2, $3)",
        circuit,
        register,
        start,
    )
    await conn.execute(
        'INSERT INTO flows.register_interval_hh (register_id, "timestamp", kwh, export_kwh) '
        "SELECT $1, $2::timestamptz + n * interval '30 minutes', 1, 0.5 "
        "FROM generate_series(0, $3 - 1) AS n",
        register,
        start,
        slots,
    )
    return circuit


async def test_daily_and_monthly_buckets_are_london_settlement_days(
    migrated_conn: asyncpg.Connection,
) -> None:
    # From local midnight of Sat 28 March 2026; clocks go forward at 01:00 UTC on the 29th.
    start = datetime(2026, 3, 28, tzinfo=UTC)
    circuit = await _circuit_with_half_hours(migrated_conn, start, 3 * 48)
    days = await migrated_conn.fetch(
        "SELECT day, kwh, total_import_kwh, total_export_kwh FROM flows.circuit_interval_daily "
        "WHERE circuit_id = $1 ORDER BY day",
        circuit,
    )
    # 29 March starts at 00:00 GMT, 30 March at 00:00 BST = 23:00 UTC on the 29th.
    assert [d["day"] for d in days] == [date(2026, 3, day) for day in (28, 29, 30, 31)]
    assert [d["kwh"] for d in days] == [48, 46, 48, 2]  # the clock-change day is 23 hours
    assert days[1]["total_import_kwh"] == 46
    assert days[1]["total_export_kwh"] == Decimal("23.0")
    (month,) = await migrated_conn.fetch(
        "SELECT month, kwh, days_in_month FROM flows.circuit_interval_monthly "
        "WHERE circuit_id = $1",
        circuit,
    )
    assert month["month"] == date(2026, 3, 1)
    assert month["kwh"] == 3 * 48
    assert month["days_in_month"] == 31


async def test_registers_count_only_inside_their_mapping_window(
    migrated_conn: asyncpg.Connection,
) -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    circuit = await _circuit_with_half_hours(migrated_conn, start - timedelta(hours=2), 8)
    hh = await migrated_conn.fetch(
        'SELECT "timestamp", kwh FROM flows.circuit_interval_hh WHERE circuit_id = $1',
        circuit,
    )
    assert len(hh) == 8
    await migrated_conn.execute(
        "UPDATE flows.circuit_register SET end_time = $1 WHERE circuit = $2",
        start - timedelta(hours=1),
        circuit,
    )
    hh = await migrated_conn.fetch(
        'SELECT "timestamp" FROM flows.circuit_interval_hh WHERE circuit_id = $1', circuit
    )
    assert len(hh) == 2
    # 22:00 and 22:30 UTC on 31 May are 23:00 and 23:30 BST: still May, which began at
    # 00:00 BST on 1 May.
    (month,) = await migrated_conn.fetch(
        "SELECT month FROM flows.circuit_interval_monthly WHERE circuit_id = $1", circuit
    )
    assert month["month"] == date(2026, 5, 1)
