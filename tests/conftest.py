"""Shared fixtures: the test suite's PostgreSQL and a migrated database on it.

``FLOWSD_TEST_DATABASE_URL`` names a server to use (each test gets its own database on it,
dropped afterwards). Without it the suite starts a throw-away embedded PostgreSQL once per
test session, so `make test` needs no database server on the machine.

``FLOWSD_TEST_DATABASE_ONLY=1`` keeps only the tests that use the test server (the second pass
of `make test-all`, on another PostgreSQL: the tests that never meet the server would only
repeat themselves).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from flowsd.db.embedded import start_embedded
from flowsd.db.urls import with_database
from tests.support import migrate_database

TEST_DATABASE_URL_ENV = "FLOWSD_TEST_DATABASE_URL"
DATABASE_ONLY_ENV = "FLOWSD_TEST_DATABASE_ONLY"

# Durability is irrelevant for a throw-away test server; these make it several times faster.
_FAST_UNSAFE_SETTINGS = (
    "ALTER SYSTEM SET fsync = off",
    "ALTER SYSTEM SET synchronous_commit = off",
    "ALTER SYSTEM SET full_page_writes = off",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(DATABASE_ONLY_ENV) != "1":
        return
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        uses_server = "pg_admin_url" in getattr(item, "fixturenames", ())
        (kept if uses_server else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a maintenance database on the test server (may create and drop databases)."""
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if configured:
        yield configured
        return
    # Not under pytest's basetemp: another pytest run on the machine re-chmods that tree to
    # 0700, which locks out the unprivileged user the server runs as when we are root.
    home = Path(tempfile.mkdtemp(prefix="flowsd-test-pg-"))
    server = start_embedded(home / "data", cleanup="delete")
    for statement in _FAST_UNSAFE_SETTINGS:
        server.psql(statement)
    server.psql("SELECT pg_reload_conf()")
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database that is dropped when the test ends."""
    name = f"flowsd_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(pg_admin_url, name)
    finally:
        admin = await asyncpg.connect(pg_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """URL of a new database with every flowsd migration applied (dropped at the end)."""
    await migrate_database(database_url)
    return database_url
