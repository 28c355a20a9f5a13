"""Fixtures for the event-store tests: a migrated database and a connection to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.events.helpers import (
    create_meters,
)


@pytest.fixture
async def conn(migrated_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def meters(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return await create_meters(conn, 4)
