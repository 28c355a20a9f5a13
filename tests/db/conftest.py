"""Fixtures for the schema tests: a connection to an empty database, for the tests of the
migrations themselves, or to a migrated one, for the tests of what they built."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh, empty (not migrated) database."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def migrated_conn(migrated_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh database with every migration applied (``migrated_url``)."""
    connection = await asyncpg.connect(migrated_url)
    try:
        yield connection
    finally:
        await connection.close()
