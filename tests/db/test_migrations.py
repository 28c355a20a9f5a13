"""`flowsd migrate` on a fresh database: objects, idempotency, versions, concurrency, roles."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest

from flowsd.db.migrate import (
    SUPERSEDED_CHECKSUMS,
    Migration,
    MigrationChangedError,
    MigrationFailedError,
    SchemaTooNewError,
    applied_versions,
    load_migrations,
    migrate,
    split_statements,
)
from flowsd.db.urls import with_database
from flowsd.emop.records.eventlog import EventId
from flowsd.events import types
from flowsd.events.store import append_batch
from tests.events.helpers import balance_event, create_meters

TABLES = {
    "regions", "escos", "sites_new", "feeder_registry", "service_head_registry",
    "service_head_meter", "properties", "properties_service_head", "meter_registry",
    "meter_shadows", "meter_registers", "register_import", "register_export",
    "register_interval_hh", "meter_prepay_balance", "meter_voltage", "meter_3p_voltage",
    "meter_csq", "meter_health_history", "meter_event_log", "meter_event_log_type", "circuits",
    "circuit_register", "meter_metrics", "meter_tophat_registry", "ev_chargers",
}  # fmt: skip
VIEWS = {
    "meter_shadows_tariffs", "meters_low_balance", "meters_offline_recently",
    "meters_offline_all", "meters_clock_drift", "circuit_interval_hh", "circuit_interval_daily",
    "circuit_interval_monthly",
}  # fmt: skip
MATERIALIZED_VIEWS = {
    "register_import_missing", "register_export_missing", "register_interval_hh_missing",
}  # fmt: skip
ENUMS = {
    "meter_mode_enum", "health_check_status", "meter_register_element",
    "meter_register_status_enum", "register_nature_enum", "circuit_type_enum",
    "emnify_device_connectivity_status_enum", "emnify_device_installation_status_enum",
    "meter_metric_run_frequency_enum",
}  # fmt: skip
HISTORY_TABLES = {
    "register_import", "register_export", "register_interval_hh", "meter_prepay_balance",
    "meter_voltage", "meter_3p_voltage", "meter_csq", "meter_health_history",
}  # fmt: skip


async def test_fresh_database_gets_the_whole_schema(conn: asyncpg.Connection) -> None:
    report = await migrate(conn)
    assert report.applied == tuple(m.version for m in load_migrations())
    tables = {
        r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'flows'")
    }
    assert tables == TABLES
    views = await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'flows'")
    assert {r[0] for r in views} == VIEWS
    matviews = await conn.fetch("SELECT matviewname FROM pg_matviews WHERE schemaname = 'flows'")
    assert {r[0] for r in matviews} == MATERIALIZED_VIEWS
    enums = {
        r[0]
        for r in await conn.fetch(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'flows' AND t.typtype = 'e'"
        )
    }
    assert enums == ENUMS


async def test_every_history_table_has_a_unique_key_with_its_time(
    conn: asyncpg.Connection,
) -> None:
    await migrate(conn)
    for table in HISTORY_TABLES:
        keys = await conn.fetch(
            "SELECT array_agg(a.attname ORDER BY a.attname) AS cols FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "WHERE i.indrelid = $1::regclass AND i.indisunique GROUP BY i.indexrelid",
            f"flows.{table}",
        )
        assert any("timestamp" in k["cols"] and len(k["cols"]) == 2 for k in keys), table


async def test_writing_the_same_observation_twice_is_a_no_op(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    (meter,) = await create_meters(conn, 1)
    for _ in range(2):
        await conn.execute(
            "INSERT INTO flows.meter_voltage VALUES ($1, '2026-01-01Z', 240.1) "
            'ON CONFLICT (meter_id, "timestamp") DO NOTHING',
            meter,
        )
        await conn.execute(
            'INSERT INTO flows.meter_health_history (meter_id, "timestamp", health) '
            "VALUES ($1, '2026-01-01Z', 'healthy') "
            'ON CONFLICT (meter_id, "timestamp") DO NOTHING',
            meter,
        )
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_voltage") == 1
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_health_history") == 1


async def test_second_run_changes_nothing(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    before = await conn.fetchval("SELECT count(*) FROM pg_class")
    report = await migrate(conn)
    assert report.applied == ()
    assert report.version == max(m.version for m in load_migrations())
    assert await conn.fetchval("SELECT count(*) FROM pg_class") == before


async def test_a_database_from_a_newer_flowsd_is_refused(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    await conn.execute(
        "INSERT INTO flowsd.schema_migrations (version, name, checksum) VALUES (9999, 'x', 'x')"
    )
    with pytest.raises(SchemaTooNewError, match="version 9999, newer than this flowsd"):
        await migrate(conn)


async def test_an_edited_applied_migration_is_refused(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    await conn.execute("UPDATE flowsd.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationChangedError, match="migration 1"):
        await migrate(conn)


async def test_databases_migrated_by_the_first_texts_of_0001_and_0002_are_accepted(
    conn: asyncpg.Connection,
) -> None:
    await migrate(conn)
    for version, checksums in SUPERSEDED_CHECKSUMS.items():
        (old,) = checksums
        await conn.execute(
            "UPDATE flowsd.schema_migrations SET checksum = $2 WHERE version = $1", version, old
        )
    report = await migrate(conn)
    assert report.applied == ()


def test_superseded_checksums_are_those_of_the_shipped_files() -> None:
    # The texts as first shipped are in the repository's history (commit 3f5a6bf).
    root = Path(__file__).resolve().parents[2]
    for migration in load_migrations():
        if migration.version not in SUPERSEDED_CHECKSUMS:
            continue
        shown = subprocess.run(
            ["git", "show", f"3f5a6bf:flowsd/db/migrations/{migration.file_name}"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        if shown.returncode != 0:
            pytest.skip("not a git checkout with the history of the migrations")
        assert SUPERSEDED_CHECKSUMS[migration.version] == {hashlib.sha256(shown.stdout).hexdigest()}
        assert migration.checksum not in SUPERSEDED_CHECKSUMS[migration.version]


def test_statements_are_split_outside_quotes_comments_and_bodies() -> None:
    sql = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE a (b text DEFAULT ';');\n"
        "\n"
        "/* block; comment */ COMMENT ON TABLE a IS 'it''s; here';\n"
        'SELECT ";" FROM a;\n'
        "DO $body$ BEGIN PERFORM 1; PERFORM $$;$$; END $body$;\n"
        "-- trailing comment only\n"
    )
    assert split_statements(sql) == [
        (2, "CREATE TABLE a (b text DEFAULT ';')"),
        (4, "COMMENT ON TABLE a IS 'it''s; here'"),
        (5, 'SELECT ";" FROM a'),
        (6, "DO $body$ BEGIN PERFORM 1; PERFORM $$;$$; END $body$"),
    ]
    for migration in load_migrations():
        # Every migration splits into statements that each run on their own.
        assert all(s and not s.endswith(";") for _, s in split_statements(migration.sql))


async def test_a_failing_statement_is_named_and_its_migration_leaves_nothing(
    conn: asyncpg.Connection,
) -> None:
    broken = Migration(7, "broken", "CREATE TABLE kept_out (a int);\n\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationFailedError) as failure:
        await migrate(conn, [broken])
    assert str(failure.value) == (
        "migration 0007_broken.sql failed at line 3 (SELECT 1 / 0): division by zero; "
        "nothing of this migration was applied"
    )
    assert await conn.fetchval("SELECT to_regclass('kept_out')") is None
    assert await applied_versions(conn) == {}


async def test_concurrent_migrators_apply_each_migration_once(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(migrate(c) for c in connections))
        applied = [v for r in reports for v in r.applied]
        assert sorted(applied) == [m.version for m in load_migrations()]
        count = await connections[0].fetchval("SELECT count(*) FROM flowsd.schema_migrations")
        assert count == len(load_migrations())
    finally:
        for c in connections:
            await c.close()


async def test_concurrent_databases_share_the_roles(pg_admin_url: str) -> None:
    # Roles are cluster-wide: two databases migrating at once both end up granting them.
    # (Creating them when they are missing is tested on a private server, test_hosted.py:
    # a shared server's roles are never dropped.)
    admin = await asyncpg.connect(pg_admin_url)
    names = [f"flowsd_test_roles_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        connections = [await asyncpg.connect(with_database(pg_admin_url, n)) for n in names]
        try:
            await asyncio.gather(*(migrate(c) for c in connections))
            await asyncio.gather(*(migrate(c) for c in connections))
            for c in connections:
                grants = await c.fetchval(
                    "SELECT count(*) FROM information_schema.role_table_grants "
                    "WHERE grantee IN ('flowsd_writer', 'flowsd_reader')"
                )
                assert grants > 0
        finally:
            for c in connections:
                await c.close()
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_writer_appends_but_cannot_update_or_delete_events(
    conn: asyncpg.Connection,
) -> None:
    await migrate(conn)
    (meter,) = await create_meters(conn, 1)
    await conn.execute("SET ROLE flowsd_writer")
    result = await append_batch(conn, [balance_event(meter, 1)])
    assert len(result.events) == 1
    for statement in (
        "UPDATE flows.meter_event_log SET event_set = 1",
        "DELETE FROM flows.meter_event_log",
        "TRUNCATE flows.meter_event_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    # Projections stay writable for the daemon.
    await conn.execute("UPDATE flows.meter_shadows SET balance = 1 WHERE id = $1", meter)
    await conn.execute("RESET ROLE")
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 1


async def test_even_the_owner_cannot_rewrite_the_log_outside_retention(
    conn: asyncpg.Connection,
) -> None:
    await migrate(conn)
    (meter,) = await create_meters(conn, 1)
    await append_batch(conn, [balance_event(meter, 1)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("DELETE FROM flows.meter_event_log")
    removed = await conn.fetchval("SELECT flowsd.purge_event_log(now() + interval '1 minute')")
    assert removed == 1


async def test_reader_role_can_only_read(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    await conn.execute("SET ROLE flowsd_reader")
    for (table,) in await conn.fetch(
        "SELECT schemaname || '.' || tablename FROM pg_tables "
        "WHERE schemaname IN ('flows', 'flowsd')"
    ):
        await conn.fetch(f"SELECT * FROM {table} LIMIT 1")  # every table, whichever migration
    for view in sorted(VIEWS | MATERIALIZED_VIEWS):
        await conn.fetch(f"SELECT * FROM flows.{view} LIMIT 1")
    await conn.fetch("SELECT * FROM flows.meter_event_log LIMIT 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("INSERT INTO flows.regions VALUES ('x', 'y')")


async def test_type_catalogue_names_every_event_type(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    rows = await conn.fetch("SELECT id, name FROM flows.meter_event_log_type ORDER BY id")
    stored = [(r["id"], r["name"]) for r in rows]
    assert [s for s in stored if s[0] > types.NATIVE_TYPE_ID_MAX] == types.catalogue()
    native = [s for s in stored if s[0] <= types.NATIVE_TYPE_ID_MAX]
    # The codec's copy of the vendor enum, plus 48 as named by operators from field data.
    vendor = [(int(e), e.name) for e in EventId]
    assert native == sorted([*vendor, (48, "CREDIT_TOKEN_APPLIED")])


async def test_no_triggers_copy_shadows_into_history(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    (meter,) = await create_meters(conn, 1)
    await conn.execute(
        "UPDATE flows.meter_shadows SET balance = 3, csq = 20, voltage = 240, health = 'healthy',"
        " import_a = 1, export_a = 1 WHERE id = $1",
        meter,
    )
    for table in HISTORY_TABLES:
        assert await conn.fetchval(f"SELECT count(*) FROM flows.{table}") == 0, table
    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'flows.meter_shadows'::regclass "
        "AND NOT tgisinternal"
    )
    assert [t["tgname"] for t in triggers] == ["meter_shadows_set_updated_at"]
