"""Migrations 60 and 119: one meter, one active registry row. A netmask is normalised away, a second
active row on one host address or serial is refused (SQLSTATE 23505, naming the other row),
and duplicates already present are kept as they are (the daemon dials the oldest)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from flowsd.db.migrate import load_migrations, migrate
from tests.db.hosted import ERAS, Era, build_production, hosted_database

HYGIENE = 60


async def _insert(
    conn: asyncpg.Connection, serial: str | None, address: str | None, mode: str = "active"
) -> uuid.UUID:
    meter_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO flows.meter_registry (id, serial, ip_address, mode)
           VALUES ($1, $2, $3::inet, $4::flows.meter_mode_enum)""",
        meter_id,
        serial,
        address,
        mode,
    )
    return meter_id


async def _address(conn: asyncpg.Connection, meter_id: uuid.UUID) -> str:
    return str(
        await conn.fetchval(
            "SELECT ip_address::text FROM flows.meter_registry WHERE id = $1", meter_id
        )
    )


async def _indexes(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'flows' "
        "AND tablename = 'meter_registry'"
    )
    return {row["indexname"] for row in rows}


async def test_masks_are_dropped_and_duplicates_refused(
    migrated_conn: asyncpg.Connection,
) -> None:
    conn = migrated_conn
    first = await _insert(conn, "EML0000000001", "10.20.0.5/24")
    assert await _address(conn, first) == "10.20.0.5/32"
    with pytest.raises(asyncpg.UniqueViolationError, match=r"10\.20\.0\.5 is already used by"):
        await _insert(conn, "EML0000000002", "10.20.0.5")
    with pytest.raises(asyncpg.UniqueViolationError, match=r"already used by active meter EML0+1"):
        await _insert(conn, " eml0000000001 ", "10.20.0.6")
    # A passive row may share one (it is never dialled); activating it may not, nor moving an
    # active row onto another's address.
    spare = await _insert(conn, "Eml0000000001", "10.20.0.7", mode="passive")
    with pytest.raises(asyncpg.UniqueViolationError, match="serial Eml0000000001 is already"):
        await conn.execute("UPDATE flows.meter_registry SET mode = 'active' WHERE id = $1", spare)
    other = await _insert(conn, "EML0000000004", "10.20.0.8")
    with pytest.raises(asyncpg.UniqueViolationError, match=r"10\.20\.0\.5 is already used"):
        await conn.execute(
            "UPDATE flows.meter_registry SET ip_address = '10.20.0.5/16' WHERE id = $1", other
        )
    assert {"meter_registry_active_host_key", "meter_registry_active_serial_key"} <= (
        await _indexes(conn)
    )


async def test_more_meters_than_the_lock_table_holds_are_added_in_one_transaction(
    conn: asyncpg.Connection,
) -> None:
    """Migration 119: the check takes one lock per transaction. Migration 60's took two per
    row, and a fleet added at once overflowed the server's lock table (out of shared memory)."""
    await migrate(conn)
    slots = int(await conn.fetchval("SHOW max_locks_per_transaction")) * int(
        await conn.fetchval("SHOW max_connections")
    )
    meters = 4 * slots  # two locks a row: eight times what the table is sized for
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO flows.meter_registry (id, serial, ip_address, mode)
               SELECT gen_random_uuid(), 'EMLBULK' || n, '10.64.0.0'::inet + n, 'active'
               FROM generate_series(1, $1) n""",
            meters,
        )
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_registry") == meters
    # Still one active row per address and serial.
    with pytest.raises(asyncpg.UniqueViolationError, match="already used by active meter"):
        await _insert(conn, "EMLBULK1", "10.99.0.1")


async def test_existing_duplicates_are_kept_and_reported(conn: asyncpg.Connection) -> None:
    before = [m for m in load_migrations() if m.version < HYGIENE]
    await migrate(conn, before)
    kept = await _insert(conn, "EML0000000011", "127.195.0.5")
    masked = await _insert(conn, "EML0000000012", "127.195.0.5/24")  # the case
    lone = await _insert(conn, "EML0000000013", "127.195.0.9/16")
    twin = await _insert(conn, "eml0000000011", "127.195.0.10")
    warnings: list[str] = []
    conn.add_log_listener(lambda _c, message: warnings.append(message.message))
    await migrate(conn)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_registry") == 4
    assert await _address(conn, kept) == "127.195.0.5/32"
    assert await _address(conn, masked) == "127.195.0.5/24"  # normalising would collide
    assert await _address(conn, lone) == "127.195.0.9/32"
    assert any("share address 127.195.0.5" in w and "EML0000000012" in w for w in warnings)
    assert any("share serial EML0000000011" in w for w in warnings), warnings
    assert not {"meter_registry_active_host_key", "meter_registry_active_serial_key"} & (
        await _indexes(conn)
    )
    # Rewriting a duplicate's unchanged serial (the registry projection does) is allowed,
    # making one passive (the fix) too; a new duplicate is still refused.
    await conn.execute("UPDATE flows.meter_registry SET serial = serial WHERE id = $1", twin)
    await conn.execute("UPDATE flows.meter_registry SET mode = 'passive' WHERE id = $1", masked)
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert(conn, "EML0000000014", "127.195.0.9")


@pytest.mark.parametrize("era", ERAS)
async def test_a_production_shaped_database_with_duplicates_upgrades(
    pg_admin_url: str, era: Era
) -> None:
    async with hosted_database(pg_admin_url) as database:
        conn = await asyncpg.connect(database.url)
        try:
            await build_production(conn, database, era)
            await conn.execute(
                """INSERT INTO flows.meter_registry (id, serial, ip_address, hardware)
                   VALUES (gen_random_uuid(), 'EML2137580899', '100.79.0.1/24', 'C1.w'),
                          (gen_random_uuid(), 'eml2137580802', '100.79.1.2', 'C1.w')"""
            )
            rows = await conn.fetchval("SELECT count(*) FROM flows.meter_registry")
            await migrate(conn)
            assert await conn.fetchval("SELECT count(*) FROM flows.meter_registry") == rows
            duplicates = await conn.fetchval(
                """SELECT count(*) FROM (SELECT host(ip_address) FROM flows.meter_registry
                   WHERE mode = 'active' GROUP BY 1 HAVING count(*) > 1) AS d"""
            )
            assert duplicates == 1
            assert (await migrate(conn)).applied == ()
        finally:
            await conn.close()
