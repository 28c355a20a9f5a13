"""Migration 118: flows.meter_registry announces an UPDATE on flowsd_meter_registry only when a
column of the daemon's meter list changes; inserts and deletes always. Heard on a real LISTEN
connection; a marker NOTIFY sent after each statement shows what arrived before it (PostgreSQL
delivers notifications in commit order)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from flowsd.meters.registry import NOTIFY_CHANNEL

MARKER = "marker"


class Heard:
    """Payloads received on the channel, read up to the next marker."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.queue.put_nowait(str(payload))

    async def until_marker(self, writer: asyncpg.Connection) -> list[str]:
        await writer.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, MARKER)
        heard: list[str] = []
        while (payload := await asyncio.wait_for(self.queue.get(), 10)) != MARKER:
            heard.append(payload)
        return heard


@pytest.fixture
async def meter(migrated_url: str) -> uuid.UUID:
    writer = await asyncpg.connect(migrated_url)
    try:
        return await writer.fetchval(  # type: ignore[no-any-return]
            """INSERT INTO flows.meter_registry (serial, ip_address, hardware, name)
               VALUES ('EML0000000118', '10.118.0.1', 'EML2', 'before') RETURNING id"""
        )
    finally:
        await writer.close()


@pytest.mark.parametrize(
    ("assignment", "announced"),
    [
        ("name = 'after'", False),
        ("firmware_version = '2.0', installation_status = NULL", False),
        ("updated_at = now() + interval '1 day'", False),
        ("ip_address = ip_address", False),  # an assignment that changes nothing
        ("serial = 'EML0000000119'", True),
        ("ip_address = '10.118.0.2'", True),
        ("hardware = 'EML3'", True),
        ("hardware = NULL", True),
        ("mode = 'passive'", True),
        ("created_at = created_at - interval '1 day'", True),
        ("name = 'after', ip_address = '10.118.0.3'", True),
    ],
)
async def test_an_update_is_announced_only_when_a_dial_column_changes(
    migrated_url: str, meter: uuid.UUID, assignment: str, announced: bool
) -> None:
    listener = await asyncpg.connect(migrated_url)
    writer = await asyncpg.connect(migrated_url)
    heard = Heard()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, heard)
        await writer.execute(f"UPDATE flows.meter_registry SET {assignment} WHERE id = $1", meter)
        assert await heard.until_marker(writer) == (["UPDATE"] if announced else [])
    finally:
        await writer.close()
        await listener.close()


async def test_inserts_deletes_and_many_changed_rows_are_announced_once_per_statement(
    migrated_url: str, meter: uuid.UUID
) -> None:
    listener = await asyncpg.connect(migrated_url)
    writer = await asyncpg.connect(migrated_url)
    heard = Heard()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, heard)
        await writer.execute(
            """INSERT INTO flows.meter_registry (serial, ip_address)
               SELECT 'EML1' || lpad(n::text, 9, '0'), ('10.119.0.' || n)::inet
               FROM generate_series(1, 20) AS n"""
        )
        assert await heard.until_marker(writer) == ["INSERT"]
        await writer.execute("UPDATE flows.meter_registry SET hardware = 'EML9'")
        assert await heard.until_marker(writer) == ["UPDATE"]
        await writer.execute("UPDATE flows.meter_registry SET name = 'renamed'")
        assert await heard.until_marker(writer) == []
        await writer.execute("DELETE FROM flows.meter_shadows WHERE id = $1", meter)
        await writer.execute("DELETE FROM flows.meter_registry WHERE id = $1", meter)
        assert await heard.until_marker(writer) == ["DELETE"]
    finally:
        await writer.close()
        await listener.close()
