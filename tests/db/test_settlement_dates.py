"""Migration 70: circuit days and months are Europe/London dates, whatever the session's time
zone and the season, on the plain path and on the views migration 3 puts over TimescaleDB's
continuous aggregates (emulated here by plain views: TimescaleDB is not installed); dependent
views, comments, indexes and grants survive the change."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from flowsd.db.migrate import MigrationFailedError, load_migrations, migrate

LONDON = ZoneInfo("Europe/London")
SESSION_ZONES = ("UTC", "Europe/London")
# A GMT day, the spring clock change (23 h), a BST day, the autumn clock change (25 h).
DAYS = {date(2026, 1, 14): 48, date(2026, 3, 29): 46, date(2026, 7, 15): 48, date(2026, 10, 25): 50}
SLOT = timedelta(minutes=30)


async def _migrate_before(conn: asyncpg.Connection, version: int) -> None:
    await migrate(conn, [m for m in load_migrations() if m.version < version])


@pytest.fixture
async def before_70(conn: asyncpg.Connection) -> asyncpg.Connection:
    await _migrate_before(conn, 70)
    return conn


async def _circuit(conn: asyncpg.Connection) -> tuple[uuid.UUID, dict[datetime, Decimal]]:
    """A circuit with half hours from noon UTC the day before to noon UTC the day after each
    of DAYS, every half hour a different energy; returns the circuit and its half hours."""
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
        "INSERT INTO flows.circuit_register (circuit, register, start_time) "
        "VALUES ($1, $2, '2020-01-01Z')",
        circuit,
        register,
    )
    half_hours: dict[datetime, Decimal] = {}
    for day in DAYS:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=12)
        for n in range(96):
            half_hours[start + n * SLOT] = Decimal(n % 7 + 1) / 10
    await conn.executemany(
        'INSERT INTO flows.register_interval_hh (register_id, "timestamp", kwh, export_kwh) '
        "VALUES ($1, $2, $3::numeric, $3::numeric / 2)",
        [(register, at, kwh) for at, kwh in half_hours.items()],
    )
    return circuit, half_hours


def _london_days(half_hours: dict[datetime, Decimal]) -> dict[date, tuple[int, Decimal]]:
    """(half hours, kWh) per London settlement date, from the half hours' start times."""
    found: dict[date, list[Decimal]] = defaultdict(list)
    for at, kwh in half_hours.items():
        found[at.astimezone(LONDON).date()].append(kwh)
    return {day: (len(values), sum(values, Decimal(0))) for day, values in found.items()}


async def _check_days(
    conn: asyncpg.Connection, circuit: uuid.UUID, hh: dict[datetime, Decimal]
) -> None:
    expected = _london_days(hh)
    types = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'flows' AND (table_name, column_name) IN "
        "(('circuit_interval_daily', 'day'), ('circuit_interval_monthly', 'month'))"
    )
    assert {(r["table_name"], r["data_type"]) for r in types} == {
        ("circuit_interval_daily", "date"),
        ("circuit_interval_monthly", "date"),
    }
    for zone in SESSION_ZONES:
        await conn.execute(f"SET TIME ZONE '{zone}'")
        for day, half_hours in DAYS.items():
            # The documented filter, `ci.day = CURRENT_DATE - 1`, on the day after `day`.
            row = await conn.fetchrow(
                "SELECT count(*) AS rows, sum(total_import_kwh) AS kwh, "
                "sum(total_export_kwh) AS export FROM flows.circuit_interval_daily ci "
                "WHERE ci.circuit_id = $1 AND ci.day = $2::date - 1",
                circuit,
                day + timedelta(days=1),
            )
            assert row is not None
            assert row["rows"] == 1, (zone, day)
            assert expected[day][0] == half_hours
            assert row["kwh"] == expected[day][1], (zone, day)
            assert row["export"] == expected[day][1] / 2, (zone, day)
            counted = await conn.fetchval(
                "SELECT count(*) FROM flows.circuit_interval_hh WHERE circuit_id = $1 "
                "AND (\"timestamp\" AT TIME ZONE 'Europe/London')::date = $2",
                circuit,
                day,
            )
            assert counted == half_hours, (zone, day)
        months = await conn.fetch(
            "SELECT month, kwh, days_in_month FROM flows.circuit_interval_monthly "
            "WHERE circuit_id = $1 ORDER BY month",
            circuit,
        )
        by_month: dict[date, Decimal] = defaultdict(Decimal)
        for day, (_, kwh) in expected.items():
            by_month[day.replace(day=1)] += kwh
        assert [(m["month"], m["kwh"]) for m in months] == sorted(by_month.items()), zone
        assert [m["days_in_month"] for m in months] == [31, 31, 31, 31, 31][: len(months)]


async def test_days_and_months_are_london_dates_in_every_session_zone(
    migrated_conn: asyncpg.Connection,
) -> None:
    circuit, hh = await _circuit(migrated_conn)
    await _check_days(migrated_conn, circuit, hh)


# Migration 3's TimescaleDB shape (continuous aggregates bucketed by London days and months as
# timestamptz, plain views of the documented names over them), with plain views standing in
# for the aggregates: time_bucket(width, ts, 'Europe/London') is date_trunc with a zone.
_EMULATED_TIMESCALEDB = """
DROP VIEW flows.circuit_interval_monthly;
DROP VIEW flows.circuit_interval_daily;
DROP VIEW flows.circuit_interval_hh;
CREATE VIEW flows.circuit_interval_hh_agg AS
SELECT cr.circuit AS circuit_id,
       date_bin('30 minutes', rih."timestamp", '2000-01-01Z') AS "timestamp",
       sum(rih.kwh) AS kwh, sum(rih.export_kwh) AS total_export_kwh
FROM flows.register_interval_hh rih
JOIN flows.circuit_register cr ON cr.register = rih.register_id
WHERE rih."timestamp" >= cr.start_time
  AND (cr.end_time IS NULL OR rih."timestamp" < cr.end_time)
GROUP BY 1, 2;
CREATE VIEW flows.circuit_interval_daily_agg AS
SELECT circuit_id, date_trunc('day', "timestamp", 'Europe/London') AS day, sum(kwh) AS kwh,
       sum(total_export_kwh) AS total_export_kwh
FROM flows.circuit_interval_hh_agg GROUP BY 1, 2;
CREATE VIEW flows.circuit_interval_monthly_agg AS
SELECT circuit_id, date_trunc('month', day, 'Europe/London') AS month, sum(kwh) AS kwh,
       sum(total_export_kwh) AS total_export_kwh
FROM flows.circuit_interval_daily_agg GROUP BY 1, 2;
CREATE VIEW flows.circuit_interval_hh AS
SELECT circuit_id, "timestamp", kwh, kwh AS total_import_kwh, total_export_kwh
FROM flows.circuit_interval_hh_agg;
CREATE VIEW flows.circuit_interval_daily AS
SELECT circuit_id, day, kwh, kwh AS total_import_kwh, total_export_kwh
FROM flows.circuit_interval_daily_agg;
CREATE VIEW flows.circuit_interval_monthly AS
SELECT circuit_id, month, kwh, kwh AS total_import_kwh, total_export_kwh,
       extract(day FROM (month AT TIME ZONE 'Europe/London'
                         + interval '1 month - 1 day'))::integer AS days_in_month
FROM flows.circuit_interval_monthly_agg;
"""


async def test_views_over_the_timescaledb_aggregates_give_the_same_columns_and_values(
    before_70: asyncpg.Connection,
) -> None:
    conn = before_70
    await conn.execute(_EMULATED_TIMESCALEDB)
    await migrate(conn)
    assert "circuit_interval_daily_agg" in await conn.fetchval(
        "SELECT pg_get_viewdef('flows.circuit_interval_daily')"
    )
    circuit, hh = await _circuit(conn)
    await _check_days(conn, circuit, hh)
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'flows' AND table_name LIKE 'circuit_interval_%' "
        "AND table_name NOT LIKE '%_agg' ORDER BY table_name, ordinal_position"
    )
    assert [tuple(r) for r in columns] == [
        ("circuit_interval_daily", "circuit_id", "uuid"),
        ("circuit_interval_daily", "day", "date"),
        ("circuit_interval_daily", "kwh", "numeric"),
        ("circuit_interval_daily", "total_import_kwh", "numeric"),
        ("circuit_interval_daily", "total_export_kwh", "numeric"),
        ("circuit_interval_hh", "circuit_id", "uuid"),
        ("circuit_interval_hh", "timestamp", "timestamp with time zone"),
        ("circuit_interval_hh", "kwh", "numeric"),
        ("circuit_interval_hh", "total_import_kwh", "numeric"),
        ("circuit_interval_hh", "total_export_kwh", "numeric"),
        ("circuit_interval_monthly", "circuit_id", "uuid"),
        ("circuit_interval_monthly", "month", "date"),
        ("circuit_interval_monthly", "kwh", "numeric"),
        ("circuit_interval_monthly", "total_import_kwh", "numeric"),
        ("circuit_interval_monthly", "total_export_kwh", "numeric"),
        ("circuit_interval_monthly", "days_in_month", "integer"),
    ]


@pytest.fixture
async def role(pg_admin_url: str, database_url: str) -> AsyncIterator[str]:
    """A role of this test's own (roles are cluster-wide: its grants in the test's database
    are revoked and the role dropped afterwards)."""
    name = f"flowsd_test_reader_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE ROLE "{name}" NOLOGIN')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        own = await asyncpg.connect(database_url)
        try:
            await own.execute(f'DROP OWNED BY "{name}"')
        finally:
            await own.close()
        admin = await asyncpg.connect(pg_admin_url)
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await admin.close()


async def test_dependent_views_comments_indexes_and_grants_survive(
    before_70: asyncpg.Connection, role: str
) -> None:
    conn = before_70
    await conn.execute(
        f"""
        CREATE VIEW flows.recent_days AS
            SELECT circuit_id, day, kwh FROM flows.circuit_interval_daily
            WHERE day >= '2026-01-01 00:00:00+00';
        CREATE VIEW flows.recent_day_totals WITH (security_barrier = true) AS
            SELECT day, sum(kwh) AS kwh FROM flows.recent_days GROUP BY day;
        CREATE MATERIALIZED VIEW flows.monthly_copy AS
            SELECT circuit_id, month, kwh FROM flows.circuit_interval_monthly;
        CREATE UNIQUE INDEX monthly_copy_key ON flows.monthly_copy (circuit_id, month);
        COMMENT ON VIEW flows.recent_days IS 'kept';
        COMMENT ON COLUMN flows.recent_days.kwh IS 'energy';
        COMMENT ON COLUMN flows.circuit_interval_daily.kwh IS 'daily energy';
        GRANT SELECT ON flows.recent_days, flows.recent_day_totals, flows.monthly_copy,
            flows.circuit_interval_daily, flows.circuit_interval_monthly TO "{role}";
        GRANT SELECT ON flows.circuit_interval_daily TO "{role}" WITH GRANT OPTION;
        """
    )
    circuit, hh = await _circuit(conn)
    await conn.execute("REFRESH MATERIALIZED VIEW flows.monthly_copy")
    await migrate(conn)

    await _check_days(conn, circuit, hh)
    expected = _london_days(hh)
    days = await conn.fetch("SELECT day, kwh FROM flows.recent_day_totals ORDER BY day")
    assert [(d["day"], d["kwh"]) for d in days] == sorted(
        (day, kwh) for day, (_, kwh) in expected.items()
    )
    assert await conn.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'flows.recent_day_totals'::regclass"
    ) == ["security_barrier=true"]
    assert await conn.fetchval("SELECT count(*) FROM flows.monthly_copy") == 4
    assert (
        await conn.fetchval("SELECT pg_typeof(month)::text FROM flows.monthly_copy LIMIT 1")
        == "date"
    )
    assert await conn.fetchval("SELECT to_regclass('flows.monthly_copy_key') IS NOT NULL")
    assert await conn.fetchval("SELECT obj_description('flows.recent_days'::regclass)") == "kept"
    assert await conn.fetchval("SELECT col_description('flows.recent_days'::regclass, 3)") == (
        "energy"
    )
    assert (
        await conn.fetchval("SELECT col_description('flows.circuit_interval_daily'::regclass, 3)")
        == "daily energy"
    )
    grants = await conn.fetch(
        "SELECT c.relname, a.privilege_type, a.is_grantable "
        "FROM pg_class c CROSS JOIN aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'flows'::regnamespace AND a.grantee = $1::regrole",
        role,
    )
    assert sorted(tuple(g) for g in grants) == [
        ("circuit_interval_daily", "SELECT", True),
        ("circuit_interval_monthly", "SELECT", False),
        ("monthly_copy", "SELECT", False),
        ("recent_day_totals", "SELECT", False),
        ("recent_days", "SELECT", False),
    ]
    for view in ("circuit_interval_daily", "circuit_interval_monthly", "recent_days"):
        assert await conn.fetchval(
            "SELECT has_table_privilege('flowsd_reader', $1, 'SELECT')", f"flows.{view}"
        )


async def test_another_kind_of_dependent_stops_the_migration_naming_it(
    before_70: asyncpg.Connection,
) -> None:
    conn = before_70
    await conn.execute(
        "CREATE FUNCTION flows.energy_of(d flows.circuit_interval_daily) RETURNS numeric "
        "LANGUAGE sql AS 'SELECT d.kwh'"
    )
    with pytest.raises(MigrationFailedError) as failure:
        await migrate(conn)
    # One line naming the migration, the object and its dependent (the server's detail).
    assert str(failure.value).startswith("migration 0070_settlement_dates.sql failed at line")
    assert "circuit_interval_daily" in str(failure.value)
    assert "energy_of" in str(failure.value)
    assert isinstance(failure.value.__cause__, asyncpg.DependentObjectsStillExistError)
    assert (
        await conn.fetchval(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'flows' "
            "AND table_name = 'circuit_interval_daily' AND column_name = 'day'"
        )
        == "timestamp with time zone"
    )
