"""`flowsd migrate` on a database in production's shape: widened, nothing lost."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from flowsd.db.migrate import migrate
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.types import Event, MeterLogEntry, idempotency_key

PRODUCTION_SHAPE = (Path(__file__).parent / "production_shape.sql").read_text()

COUNTED = [
    "meter_registry", "meter_shadows", "meter_registers", "meter_prepay_balance", "meter_csq",
    "meter_voltage", "meter_health_history", "meter_event_log", "escos", "regions",
]  # fmt: skip


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM flows.{t}") for t in COUNTED}


async def test_upgrade_keeps_every_row_and_widens_the_event_log(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(PRODUCTION_SHAPE)
    legacy = await conn.fetch(
        'SELECT meter_id, "timestamp", event_type, event_set FROM flows.meter_event_log'
    )
    before = await _counts(conn)
    assert before["meter_event_log"] == 3020
    assert before["meter_voltage"] == 100

    await migrate(conn)

    assert await _counts(conn) == before
    rows = await conn.fetch(
        'SELECT position, meter_id, "timestamp", event_type, event_set, idempotency_key, payload'
        " FROM flows.meter_event_log ORDER BY position"
    )
    assert [r["position"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert {tuple(r.values())[1:5] for r in rows} == {tuple(r.values()) for r in legacy}
    for row in rows:
        assert row["payload"] is None
        assert row["idempotency_key"] == idempotency_key(
            row["meter_id"], row["event_type"], row["timestamp"], str(row["event_set"])
        )

    # Re-reading the meters' logs after the upgrade adds nothing; new events follow the old.
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
    assert result.events == ()
    assert result.duplicates == 500
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
    assert stored.position == len(rows) + 1
    assert (await read_events(conn, len(rows) - 1, 10))[-1] == stored


async def test_upgrade_moves_the_meter_foreign_key_to_the_meters_with_events(
    conn: asyncpg.Connection,
) -> None:
    """Production's row foreign key on the log gives way to flowsd.event_log_meter, which
    starts with every meter that has events and keeps refusing their deletion."""
    await conn.execute(PRODUCTION_SHAPE)
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
    assert noted == with_events and len(noted) == 20
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
        "meter_event_log_idempotency_key_key",
        "meter_event_log_meter_lookup_idx",
        "meter_event_log_pkey",
        "meter_event_log_recorded_at_brin",
    ]


async def test_upgrade_replaces_production_shadow_triggers(conn: asyncpg.Connection) -> None:
    await conn.execute(PRODUCTION_SHAPE)
    await migrate(conn)
    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'flows.meter_shadows'::regclass "
        "AND NOT tgisinternal"
    )
    assert [t["tgname"] for t in triggers] == ["meter_shadows_set_updated_at"]
    before = await _counts(conn)
    await conn.execute("UPDATE flows.meter_shadows SET balance = 99, csq = 3, voltage = 230")
    assert await _counts(conn) == before
    # Production's own registry trigger still creates shadows (and ours was not added twice).
    await conn.execute("INSERT INTO flows.meter_registry (serial) VALUES ('EML-NEW')")
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_shadows") == 21


async def test_upgrade_adds_documented_columns_and_rebuilds_circuit_views(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(PRODUCTION_SHAPE)
    await migrate(conn)
    columns = await conn.fetch(
        "SELECT table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_schema = 'flows'"
    )
    names = {r[0] for r in columns}
    for documented in (
        "meter_shadows.balance_updated_at",
        "meter_shadows.emergency_credit",
        "meter_prepay_balance.emergency_credit",
        "meter_registers.direction_reversed",
        "sites_new.location",
        "sites_new.capacity_kw",
        "properties.site",
        "properties.address",
        "properties.type",
        "circuits.site",
        "circuits.rating_amps",
        "feeder_registry.substation",
        "feeder_registry.rating_amps",
        "circuit_interval_daily.total_import_kwh",
        "circuit_interval_monthly.days_in_month",
    ):
        assert documented in names, documented
    definition = await conn.fetchval("SELECT pg_get_viewdef('flows.circuit_interval_daily')")
    assert "Europe/London" in definition


async def test_exact_duplicate_history_rows_collapse_and_conflicts_are_named(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(PRODUCTION_SHAPE)
    meter = await conn.fetchval("SELECT id FROM flows.meter_registry LIMIT 1")
    when = datetime.fromisoformat("2025-06-01T00:00:00+00:00")
    for _ in range(3):
        await conn.execute("INSERT INTO flows.meter_voltage VALUES ($1, $2, 241)", meter, when)
    total = await conn.fetchval("SELECT count(*) FROM flows.meter_voltage")
    await conn.execute(
        "INSERT INTO flows.meter_health_history VALUES ($1, $2, 'healthy')", meter, when
    )
    await conn.execute(
        "INSERT INTO flows.meter_health_history VALUES ($1, $2, 'unhealthy')", meter, when
    )
    with pytest.raises(asyncpg.UniqueViolationError, match="meter_health_history"):
        await migrate(conn)
    await conn.execute(
        "DELETE FROM flows.meter_health_history WHERE health = 'unhealthy' AND meter_id = $1",
        meter,
    )
    await migrate(conn)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_voltage") == total - 2
