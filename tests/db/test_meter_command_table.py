"""The command table (migration 80): what callers may do, and tokens kept out of sight."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from flowsd.meters.operations import payload_digest
from tests.events.helpers import create_meters

TOKEN = "12340000000000000042"


@pytest.fixture
def conn(migrated_conn: asyncpg.Connection) -> asyncpg.Connection:
    """Every test here wants a migrated database (not the empty one of tests/db/conftest.py)."""
    return migrated_conn


async def _as_commander(conn: asyncpg.Connection) -> None:
    await conn.execute("SET ROLE flowsd_commander")


async def test_a_commander_inserts_and_reads_but_cannot_change_or_delete(
    conn: asyncpg.Connection,
) -> None:
    (meter,) = await create_meters(conn, 1)
    serial = await conn.fetchval("SELECT serial FROM flows.meter_registry WHERE id = $1", meter)
    await _as_commander(conn)
    row = await conn.fetchrow(
        "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, arguments, client) "
        "VALUES ('k1', $1, 'set_clock', '{}', 'app user 7') RETURNING id, status",
        serial,
    )
    assert row is not None and row["status"] == "pending"
    stored = await conn.fetchrow("SELECT * FROM flowsd.meter_command WHERE id = $1", row["id"])
    assert stored is not None
    assert stored["meter_id"] == meter and stored["requested_by"] == "flowsd_commander"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE flowsd.meter_command SET status = 'succeeded'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM flowsd.meter_command")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        # The outcome columns are the daemon's.
        await conn.execute(
            "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, status) "
            "VALUES ('k2', $1, 'poll', 'succeeded')",
            serial,
        )


async def test_unknown_serials_and_malformed_arguments_are_refused_at_insert(
    conn: asyncpg.Connection,
) -> None:
    (meter,) = await create_meters(conn, 1)
    serial = await conn.fetchval("SELECT serial FROM flows.meter_registry WHERE id = $1", meter)
    await _as_commander(conn)
    insert = "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, arguments) VALUES "
    with pytest.raises(asyncpg.NoDataFoundError, match="unknown meter serial NOPE"):
        await conn.execute(insert + "('a', 'NOPE', 'poll', '{}')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="token"):
        await conn.execute(insert + "('b', $1, 'top_up', '{\"token\": \"12ab\"}')", serial)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="enabled"):
        await conn.execute(insert + "('c', $1, 'prepay', '{\"enabled\": \"yes\"}')", serial)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert + "('d', $1, 'reboot', '{}')", serial)


async def test_a_token_is_kept_out_of_the_row_and_out_of_readers_sight(
    conn: asyncpg.Connection,
) -> None:
    (meter,) = await create_meters(conn, 1)
    serial = await conn.fetchval("SELECT serial FROM flows.meter_registry WHERE id = $1", meter)
    await _as_commander(conn)
    insert = (
        "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, arguments) "
        "VALUES ($1, $2, 'top_up', jsonb_build_object('token', $3::text)) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
    )
    command_id = await conn.fetchval(insert, "t1", serial, TOKEN)
    # The same key again: nothing inserted, and no second copy of the token anywhere.
    assert await conn.fetchval(insert, "t1", serial, TOKEN) is None
    arguments = await conn.fetchval(
        "SELECT arguments::text FROM flowsd.meter_command WHERE id = $1", command_id
    )
    assert TOKEN not in arguments
    assert payload_digest(meter, [TOKEN.encode()]) in arguments
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM flowsd_secret.meter_command_token")
    await conn.execute("RESET ROLE")
    await conn.execute("SET ROLE flowsd_reader")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM flowsd_secret.meter_command_token")
    await conn.execute("RESET ROLE")
    await conn.execute("SET ROLE flowsd_writer")
    rows = await conn.fetch("SELECT command_id, token FROM flowsd_secret.meter_command_token")
    assert [(r["command_id"], r["token"]) for r in rows] == [(command_id, TOKEN)]


async def test_an_insert_wakes_listeners(conn: asyncpg.Connection, migrated_url: str) -> None:
    (meter,) = await create_meters(conn, 1)
    serial = await conn.fetchval("SELECT serial FROM flows.meter_registry WHERE id = $1", meter)
    listener = await asyncpg.connect(migrated_url)
    heard: list[str] = []
    try:
        await listener.add_listener("flowsd_meter_command", lambda *a: heard.append(a[2]))
        await conn.execute(
            "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind) "
            "VALUES ($1, $2, 'poll')",
            str(uuid.uuid4()),
            serial,
        )
        await listener.fetchval("SELECT 1")  # notifications arrive with the next round trip
        for _ in range(50):
            if heard:
                break
            await listener.fetchval("SELECT pg_sleep(0.05)")
    finally:
        await listener.close()
    assert heard == ["flowsd_meter_command"]
