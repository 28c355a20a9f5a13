"""Fixtures for projection tests: a migrated database with meters and registers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture
async def conn(migrated_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated_url)
    try:
        yield connection
    finally:
        await connection.close()


async def add_meter(
    conn: asyncpg.Connection, *, serial: str | None = None, meter_id: uuid.UUID | None = None
) -> uuid.UUID:
    meter = meter_id or uuid.uuid4()
    await conn.execute(
        "INSERT INTO flows.meter_registry (id, serial) VALUES ($1, $2)", meter, serial
    )
    return meter


async def add_register(
    conn: asyncpg.Connection,
    meter: uuid.UUID,
    element: str,
    *,
    start: object = None,
    end: object = None,
    status: str = "enabled",
    reversed_: bool = False,
    register_id: uuid.UUID | None = None,
) -> uuid.UUID:
    register = register_id or uuid.uuid4()
    await conn.execute(
        """INSERT INTO flows.meter_registers
           (register_id, meter_id, element, start_time, end_time, status, direction_reversed)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        register,
        meter,
        element,
        start,
        end,
        status,
        reversed_,
    )
    return register
