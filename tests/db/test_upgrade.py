"""`flowsd migrate` on databases shaped like production, before and after flows-db's regions
migration, owned by a hosted (non-superuser) admin role: every row kept, the event log
numbered in time order, a no-op the second time, each applied migration printed; a failing
migration named in one line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import anyio.to_thread
import asyncpg
import pytest

from flowsd.cli import main as flowsd_main
from flowsd.db.migrate import MigrationFailedError, load_migrations, migrate
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.types import Event, MeterLogEntry, idempotency_key
from flowsd.projections.catalogue import all_projections
from flowsd.projections.replay import replay
from flowsd.projections.rows import KeyedRowsProjection
from flowsd.projections.verify import verify
from tests.db.hosted import (
    ERAS,
    Era,
    HostedDatabase,
    build_production,
    fingerprints,
    hosted_database,
)

# Tables migration 2 may add rows to (the event type catalogue); every row before is kept.
GROWING = {"meter_event_log_type"}


@pytest.fixture(params=ERAS)
async def production(
    request: pytest.FixtureRequest, pg_admin_url: str
) -> AsyncIterator[tuple[HostedDatabase, asyncpg.Connection]]:
    """An unmigrated production-shaped database of one era, and a connection as its owner."""
    era: Era = request.param
    async with hosted_database(pg_admin_url) as database:
        conn = await asyncpg.connect(database.url)
        try:
            await build_production(conn, database, era)
            yield database, conn
        finally:
            await conn.close()


async def _flowsd(*argv: str) -> int:
    """The command line, in a worker thread (it runs its own event loop)."""
    return await anyio.to_thread.run_sync(flowsd_main, list(argv))


async def _rows(conn: asyncpg.Connection, table: str, columns: list[str]) -> list[str]:
    listed = ", ".join(f'"{c}"' for c in columns)
    rows = await conn.fetch(f"SELECT t::text FROM (SELECT {listed} FROM flows.{table}) AS t")
    return sorted(r[0] for r in rows)


async def test_upgrade_keeps_every_row_numbers_the_log_and_runs_once(
    production: tuple[HostedDatabase, asyncpg.Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    database, conn = production
    before = await fingerprints(conn)
    assert before["meter_event_log"][1] == 2673
    assert before["register_interval_hh"][1] > 0 and before["meter_csq"][1] > 0
    catalogue = await _rows(conn, "meter_event_log_type", before["meter_event_log_type"][0])
    legacy = await conn.fetch(
        'SELECT meter_id, "timestamp", event_type, event_set FROM flows.meter_event_log'
    )

    assert await _flowsd("migrate", "--database-url", database.url) == 0
    out = capsys.readouterr().out.splitlines()
    applied = [line.split()[1] for line in out if line.startswith("applied ")]
    assert applied == [m.file_name for m in load_migrations()]
    assert out[-1].startswith("migrated ")

    after = await fingerprints(conn, {t: c for t, (c, _, _) in before.items()})
    for table in before:
        if table in GROWING:
            kept = await _rows(conn, table, before[table][0])
            assert set(catalogue) <= set(kept), table
        else:
            assert after[table] == before[table], table

    rows = await conn.fetch(
        'SELECT position, meter_id, "timestamp", event_type, event_set, idempotency_key, '
        "payload, details FROM flows.meter_event_log ORDER BY position"
    )
    assert [r["position"] for r in rows] == list(range(1, len(legacy) + 1))
    order = [(r["timestamp"], str(r["meter_id"]), r["event_type"]) for r in rows]
    assert order == sorted(order)
    assert {tuple(r.values())[1:5] for r in rows} == {tuple(r.values()) for r in legacy}
    for row in rows:
        assert row["payload"] is None and row["details"] is None
        assert row["idempotency_key"] == idempotency_key(
            row["meter_id"], row["event_type"], row["timestamp"], str(row["event_set"])
        )

    objects = await conn.fetchval("SELECT count(*) FROM pg_class")
    recorded = await conn.fetch("SELECT * FROM flowsd.schema_migrations ORDER BY version")
    assert await _flowsd("migrate", "--database-url", database.url) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{database.url} is up to date (version {load_migrations()[-1].version})"
    ]
    assert await conn.fetchval("SELECT count(*) FROM pg_class") == objects
    assert await conn.fetch("SELECT * FROM flowsd.schema_migrations ORDER BY version") == recorded
    assert await fingerprints(conn) == await fingerprints(conn)


async def test_upgraded_log_takes_new_events_after_the_old_ones(
    production: tuple[HostedDatabase, asyncpg.Connection],
) -> None:
    _, conn = production
    legacy = await conn.fetch(
        'SELECT meter_id, "timestamp", event_type, event_set FROM flows.meter_event_log'
    )
    await migrate(conn)
    # Re-reading the meters' logs after the upgrade adds nothing.
    again = [
        Event(
            meter_id=r["meter_id"],
            observed_at=r["timestamp"],
            read_at=None,
            body=MeterLogEntry(emlite_type_id=r["event_type"], event_set=r["event_set"]),
        )
        for r in legacy[:500]
    ]
    result = await append_batch(conn, again)
    assert (result.events, result.duplicates) == ((), 500)
    # A second event in the same second and of the same type (another event_set) is kept now.
    twin = Event(
        meter_id=legacy[0]["meter_id"],
        observed_at=legacy[0]["timestamp"],
        read_at=None,
        body=MeterLogEntry(
            emlite_type_id=legacy[0]["event_type"], event_set=legacy[0]["event_set"] + 1
        ),
    )
    (stored,) = (await append_batch(conn, [twin])).events
    assert stored.position == len(legacy) + 1
    assert (await read_events(conn, len(legacy) - 1, 10))[-1] == stored


async def test_upgrade_moves_the_meter_foreign_key_to_the_meters_with_events(
    production: tuple[HostedDatabase, asyncpg.Connection],
) -> None:
    """Production's row foreign key on the log gives way to flowsd.event_log_meter, which
    starts with every meter that has events and keeps refusing their deletion."""
    _, conn = production
    with_events = {
        r[0] for r in await conn.fetch("SELECT DISTINCT meter_id FROM flows.meter_event_log")
    }
    await migrate(conn)
    keys = await conn.fetch(
        "SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'flows.meter_event_log'::regclass AND contype = 'f'"
    )
    assert keys == []
    noted = {r[0] for r in await conn.fetch("SELECT meter_id FROM flowsd.event_log_meter")}
    assert noted == with_events and noted
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'flowsd.event_log_meter'::regclass AND contype = 'f'"
    )
    assert "REFERENCES flows.meter_registry(id) ON UPDATE RESTRICT ON DELETE RESTRICT" in definition
    indexes = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'flows' "
        "AND tablename = 'meter_event_log' ORDER BY indexname"
    )
    assert [r[0] for r in indexes] == [
        "meter_event_log_meter_lookup_idx",
        "meter_event_log_pkey",
        "meter_event_log_recorded_at_brin",
    ]
    # Uniqueness of the keys across the log's partitions (migration 115): every key claimed.
    unclaimed = await conn.fetchval(
        "SELECT count(*) FROM flows.meter_event_log e "
        "WHERE NOT EXISTS (SELECT FROM flowsd.event_key k "
        "WHERE k.idempotency_key = e.idempotency_key)"
    )
    assert unclaimed == 0


async def test_upgrade_keeps_production_view_columns_and_replaces_shadow_triggers(
    production: tuple[HostedDatabase, asyncpg.Connection],
) -> None:
    _, conn = production

    async def view_columns() -> dict[str, list[str]]:
        rows = await conn.fetch(
            "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) AS columns "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
            "WHERE n.nspname = 'flows' AND c.relkind IN ('v', 'm') GROUP BY c.relname"
        )
        return {r["relname"]: list(r["columns"]) for r in rows}

    before = await view_columns()
    await migrate(conn)
    after = await view_columns()
    assert after.keys() == before.keys()
    for view, columns in before.items():
        assert after[view][: len(columns)] == columns, view  # extended at most, at the end
    assert after["circuit_interval_monthly"] == [
        "circuit_id", "month", "kwh", "total_import_kwh", "total_export_kwh", "days_in_month"
    ]  # fmt: skip
    definition = await conn.fetchval("SELECT pg_get_viewdef('flows.circuit_interval_daily')")
    assert "Europe/London" in definition

    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'flows.meter_shadows'::regclass "
        "AND NOT tgisinternal"
    )
    assert [t["tgname"] for t in triggers] == ["meter_shadows_set_updated_at"]
    history = await fingerprints(conn)
    await conn.execute("UPDATE flows.meter_shadows SET balance = 99, csq = 3, voltage = 230")
    changed = await fingerprints(conn)
    assert {t for t in history if changed[t] != history[t]} == {"meter_shadows"}
    # Production's own registry trigger still creates shadows (and flowsd's was not added).
    shadows = await conn.fetchval("SELECT count(*) FROM flows.meter_shadows")
    await conn.execute("INSERT INTO flows.meter_registry (serial) VALUES ('EML-NEW')")
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_shadows") == shadows + 1
    # No second unique index where production already had one under another name.
    for table in ("meter_csq", "meter_prepay_balance"):
        unique = await conn.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass AND indisunique",
            f"flows.{table}",
        )
        assert unique == 1, table


async def test_exact_duplicate_history_rows_collapse_and_a_conflict_is_named(
    production: tuple[HostedDatabase, asyncpg.Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    database, conn = production
    meter = await conn.fetchval("SELECT id FROM flows.meter_registry ORDER BY id LIMIT 1")
    when = datetime.fromisoformat("2025-06-01T00:00:00+00:00")
    for _ in range(3):
        await conn.execute("INSERT INTO flows.meter_voltage VALUES ($1, $2, 241)", meter, when)
    total = await conn.fetchval("SELECT count(*) FROM flows.meter_voltage")
    for health in ("healthy", "unhealthy"):
        await conn.execute(
            "INSERT INTO flows.meter_health_history VALUES ($1, $2, $3)", meter, when, health
        )
    with pytest.raises(MigrationFailedError) as failure:
        await migrate(conn)
    message = str(failure.value)
    assert message.startswith("migration 0002_event_store_and_widening.sql failed at line ")
    assert "CREATE UNIQUE INDEX IF NOT EXISTS meter_health_history_meter_id_timestamp_key" in (
        message
    )
    assert "is duplicated" in message and "\n" not in message
    # The command line: the same, as one line on stderr, exit status 2, no traceback.
    assert await _flowsd("migrate", "--database-url", database.url) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # 0001 was applied (and kept) by the first attempt
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("flowsd migrate: migration 0002_event_store_and_widening.sql")
    assert "Traceback" not in captured.err

    await conn.execute(
        "DELETE FROM flows.meter_health_history WHERE health = 'unhealthy' AND meter_id = $1 "
        'AND "timestamp" = $2',
        meter,
        when,
    )
    await migrate(conn)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_voltage") == total - 2


async def test_a_whole_replay_of_an_upgraded_database_keeps_the_history_before_the_log(
    production: tuple[HostedDatabase, asyncpg.Connection],
) -> None:
    """Production's history rows stand for no event; migration 117 keeps them for replays."""
    _, conn = production
    await migrate(conn)
    projections = all_projections()
    history = [p for p in projections if isinstance(p, KeyedRowsProjection)]

    async def contents() -> dict[str, list[str]]:
        return {p.name: await _rows(conn, p.table.split(".")[1], list(p.columns)) for p in history}

    before = await contents()
    assert all(before.values())
    await replay(conn, projections)
    assert await contents() == before
    verdicts = await verify(conn, projections)
    assert [(v.projection, v.first) for v in verdicts if not v.equal] == []
