"""The fault suite's private PostgreSQL servers: the embedded 18 and, where this machine has
it, its PostgreSQL 15 (what operators run), each started once per test session, on its own
port and data directory. The machine's shared server on 5432 is never touched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from flowsd.db.migrate import migrate
from tests.faults.server import Binaries, PrivateServer, embedded_binaries, system_binaries

SERVERS = [embedded_binaries(), system_binaries(15)]


async def _migrates(server: PrivateServer) -> str | None:
    """None when flowsd's migrations run on this server, else why not."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(server.url(name))
        try:
            await migrate(conn)
        except asyncpg.PostgresError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await conn.close()
        return None
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session", params=SERVERS, ids=lambda b: b.label.replace(" ", ""))
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    binaries: Binaries = request.param
    if not binaries.available:
        pytest.skip(f"no PostgreSQL binaries at {binaries.bindir} ({binaries.label})")
    server = PrivateServer(binaries)
    try:
        server.init()
        server.start()
        problem = asyncio.run(_migrates(server))
        if problem is not None:
            pytest.skip(
                f"flowsd's migrations do not run on PostgreSQL {binaries.version()} yet "
                f"(issue 9): {problem}"
            )
        yield server
    finally:
        server.destroy()
