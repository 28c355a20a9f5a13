"""Shared fixtures: the test suite's PostgreSQL and a migrated database on it.

``FLOWSD_TEST_DATABASE_URL`` names a server to use (each test gets its own database on it,
dropped afterwards). Without it the suite starts a throw-away embedded PostgreSQL once per
test session, so `make test` needs no database server on the machine.

A test that wants an empty database (``database_url``: to migrate it itself, or to test what
flowsd does with an unmigrated one) gets a new one from the server's ``template1``. A test that
wants a migrated database (``migrated_url``) gets a copy of a template database that the
session migrated once (``CREATE DATABASE ... TEMPLATE``, much faster than running every
migration again). The template, ``flowsd_test_template_<uuid>``, is private to the session: it
is created on the first ``migrated_url``, refuses connections once migrated (a copy cannot be
taken while anyone is connected to it), and is dropped when the session ends, however it ends.
Nothing else on a shared server is changed, except the cluster-wide roles the migrations create
when they do not exist yet (``flowsd_writer``, ``flowsd_reader``, ``flowsd_commander``), as any
migration on that server does.

A copy is the database as migrated, but for what the migrations leave outside it: none of them
sets anything per database (``ALTER DATABASE``), which a copy would not inherit, and the roles
are cluster-wide, shared by every copy. What depends on when it was migrated is the event log's
monthly partitions (migration 115: the months from the migration's UTC month on, by the
server's clock): a template is copied only within the UTC month it was migrated in, so a
session that runs across the turn of a month migrates a new one (the old one is dropped).

``FLOWSD_TEST_DATABASE_ONLY=1`` keeps only the tests that use the test server (the second pass
of `make test-all`, on another PostgreSQL: the tests that never meet the server would only
repeat themselves).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
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

# The server's UTC month, which decides the event log partitions a migration creates.
_UTC_MONTH = "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')"


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


class MigratedTemplate:
    """The session's migrated template database on the test server (see the module's
    docstring): made on the first :meth:`copy`, and again when the server's UTC month is no
    longer the one it was migrated in; :meth:`drop` removes it."""

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._name: str | None = None  # set before it is created, so a failure drops it too
        self._month: str | None = None

    async def copy(self, admin: asyncpg.Connection, name: str) -> None:
        """Create database ``name`` as a copy of the template, through ``admin``."""
        month = await admin.fetchval(_UTC_MONTH)
        if self._name is None or month != self._month:
            await self._make(admin)
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._name}"')

    async def _make(self, admin: asyncpg.Connection) -> None:
        await self._drop(admin)
        # Taken first: if the month turns while migrating, the next copy makes a new template.
        month = await admin.fetchval(_UTC_MONTH)
        self._name = f"flowsd_test_template_{uuid.uuid4().hex}"
        await admin.execute(f'CREATE DATABASE "{self._name}"')
        # The migration's connection is closed when this returns.
        await migrate_database(with_database(self._admin_url, self._name))
        self._month = month
        # Nobody connects to it from now on (TEMPLATE refuses a database in use).
        await admin.execute(f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS false')

    async def _drop(self, admin: asyncpg.Connection) -> None:
        if self._name is not None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')
            self._name = self._month = None

    async def drop(self) -> None:
        """Drop the template, if one was made."""
        if self._name is None:
            return
        admin = await asyncpg.connect(self._admin_url)
        try:
            await self._drop(admin)
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url: str, request: pytest.FixtureRequest) -> MigratedTemplate:
    """The session's migrated template database, dropped at the end of the session."""
    template = MigratedTemplate(pg_admin_url)
    # A finalizer runs however the session ends (failures, errors, an interrupt).
    request.addfinalizer(lambda: asyncio.run(template.drop()))
    return template


@asynccontextmanager
async def _test_database(
    pg_admin_url: str, template: MigratedTemplate | None = None
) -> AsyncIterator[str]:
    """A new database of this test (a copy of ``template`` if given), dropped at the end."""
    name = f"flowsd_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        if template is None:
            await admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await template.copy(admin, name)
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
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database that is dropped when the test ends."""
    async with _test_database(pg_admin_url) as url:
        yield url


@pytest.fixture
async def migrated_url(
    pg_admin_url: str, migrated_template: MigratedTemplate
) -> AsyncIterator[str]:
    """URL of a new database with every flowsd migration applied (a copy of the session's
    migrated template), dropped when the test ends. Not the same database as
    ``database_url``'s: a test wants one or the other."""
    async with _test_database(pg_admin_url, migrated_template) as url:
        yield url
