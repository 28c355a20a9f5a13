"""Fixtures for the event-store tests: a migrated database and a connection to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.events.helpers import create_meters, migrate_database


@pytest.fixture
async def event_db(database_url: str) -> str:
    """URL of a fresh database with the flows schema migrated."""
    await migrate_database(database_url)
    return database_url


@pytest.fixture
async def conn(event_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(event_db)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def meters(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return await create_meters(conn, 4)
