"""What hosted PostgreSQL brings, on a private cluster of this module's own (same major version
as the suite's server when the machine has its binaries): no superuser for flowsd, a
connection pooler in front, TLS chosen by the URL's ``sslmode``.

A private cluster because these tests need what a shared server must not be given: a cluster
without flowsd's roles, TLS settings, and PgBouncer's way in.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio.to_thread
import asyncpg
import pytest

from flowsd.cli import main as flowsd_main
from flowsd.db.connect import connect, create_pool
from flowsd.db.migrate import migrate
from flowsd.db.pooler import TransactionPoolerError
from flowsd.errors import UserError
from tests.db.servers import (
    OPENSSL,
    PGBOUNCER,
    Certificates,
    PrivateServer,
    binaries,
    make_certificates,
    pgbouncer,
    private_server,
    scratch_directory,
    tls_binaries,
)

needs_pgbouncer = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (Debian package pgbouncer)"
)


async def _flowsd(*argv: str) -> int:
    return await anyio.to_thread.run_sync(flowsd_main, list(argv))


def _server_major(pg_admin_url: str) -> int:
    async def major() -> int:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    return asyncio.run(major())


@pytest.fixture(scope="module")
def server(pg_admin_url: str) -> Iterator[PrivateServer]:
    """A cluster of the suite's server's major version (the wheel's 18 when not installed)."""
    with private_server(binaries(_server_major(pg_admin_url))) as started:
        yield started


@pytest.fixture(scope="module")
def tls(pg_admin_url: str) -> Iterator[tuple[PrivateServer, Certificates]]:
    """A cluster with TLS on, its certificates signed by a private CA."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed (needed to make test certificates)")
    bin_dir = tls_binaries(_server_major(pg_admin_url))
    if bin_dir is None:
        pytest.skip("no PostgreSQL built with OpenSSL here (the embedded wheel's is not)")
    with scratch_directory("flowsd-test-certs-") as directory:
        certificates = make_certificates(directory)
        with private_server(bin_dir, certificates=certificates) as started:
            yield started, certificates


async def _admin(server: PrivateServer, sql: str) -> None:
    conn = await asyncpg.connect(server.url(), ssl=False)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def fresh(server: PrivateServer) -> AsyncIterator[str]:
    """A new database on the private cluster (its name)."""
    name = f"hosted_{uuid.uuid4().hex[:12]}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await _admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')


# -- roles ----------------------------------------------------------------------------------


async def test_roles_come_from_the_first_migration_or_an_administrator(
    server: PrivateServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # This cluster has no flowsd roles yet; the owner is a hosted admin: no superuser, and at
    # first not even CREATEROLE.
    await _admin(server, "DROP ROLE IF EXISTS flowsd_writer")
    await _admin(server, "DROP ROLE IF EXISTS flowsd_reader")
    await _admin(server, "DROP ROLE IF EXISTS flowsd_commander")
    await _admin(server, "CREATE ROLE admin LOGIN NOSUPERUSER NOCREATEROLE")
    await _admin(server, "CREATE DATABASE hosted_roles OWNER admin")
    url = server.url("hosted_roles", user="admin")
    try:
        assert await _flowsd("migrate", "--database-url", url) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "role flowsd_writer does not exist and admin may not create roles" in err
        assert "CREATE ROLE flowsd_writer NOLOGIN" in err  # the hint

        await _admin(server, "ALTER ROLE admin CREATEROLE")
        assert await _flowsd("migrate", "--database-url", url) == 0
        conn = await asyncpg.connect(url)
        try:
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'admin'")
            roles = await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'flowsd\\_%' ORDER BY 1"
            )
            assert [r[0] for r in roles] == ["flowsd_commander", "flowsd_reader", "flowsd_writer"]
        finally:
            await conn.close()
    finally:
        await _admin(server, "DROP DATABASE IF EXISTS hosted_roles WITH (FORCE)")
        await _admin(server, "DROP ROLE admin")


async def test_databases_migrating_at_once_create_the_roles_once(server: PrivateServer) -> None:
    await _admin(server, "DROP ROLE IF EXISTS flowsd_writer")
    await _admin(server, "DROP ROLE IF EXISTS flowsd_reader")
    names = [f"roles_race_{n}" for n in range(3)]
    for name in names:
        await _admin(server, f'CREATE DATABASE "{name}"')
    try:
        connections = [await asyncpg.connect(server.url(n), ssl=False) for n in names]
        try:
            await asyncio.gather(*(migrate(c) for c in connections))
        finally:
            for c in connections:
                await c.close()
    finally:
        for name in names:
            await _admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')


# -- connection poolers ---------------------------------------------------------------------


@needs_pgbouncer
async def test_a_transaction_pooler_is_refused_in_one_line(
    server: PrivateServer, fresh: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pgbouncer(server.port, "transaction") as bouncer:
        url = bouncer.url(fresh)
        for command in ("migrate", "status"):
            assert await _flowsd(command, "--database-url", url) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert "leads to a connection pooler in transaction mode" in err
            assert "direct address" in err
        with pytest.raises(TransactionPoolerError):
            await create_pool(url, min_size=2, max_size=4)
        with pytest.raises(TransactionPoolerError):
            await connect(url)
    # Nothing was written through it.
    conn = await asyncpg.connect(server.url(fresh), ssl=False)
    try:
        assert await conn.fetchval("SELECT to_regclass('flowsd.schema_migrations')") is None
    finally:
        await conn.close()


@needs_pgbouncer
async def test_a_session_pooler_works(
    server: PrivateServer, fresh: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pgbouncer(server.port, "session") as bouncer:
        url = bouncer.url(fresh)
        assert await _flowsd("migrate", "--database-url", url) == 0
        assert "migrated" in capsys.readouterr().out
        pool = await create_pool(url, min_size=2, max_size=4)
        try:
            assert await pool.fetchval("SELECT count(*) FROM flowsd.schema_migrations") > 0
        finally:
            await pool.close()


# -- TLS ------------------------------------------------------------------------------------


async def _tls(url: str) -> bool:
    conn = await connect(url, connect_timeout=10)
    try:
        return bool(await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    finally:
        await conn.close()


async def test_sslmode_in_the_url_is_honoured(
    tls: tuple[PrivateServer, Certificates], capsys: pytest.CaptureFixture[str]
) -> None:
    server, certificates = tls
    assert await _tls(server.url(query="sslmode=require"))
    assert not await _tls(server.url(query="sslmode=disable"))
    verified = server.url(query=f"sslmode=verify-full&sslrootcert={certificates.ca}")
    assert await _tls(verified)
    assert await _flowsd("migrate", "--database-url", verified) == 0
    capsys.readouterr()
    # A server certificate from another CA is refused, in one line.
    with scratch_directory("flowsd-test-other-ca-") as other:
        stranger = make_certificates(other, "stranger")
        wrong = server.url(query=f"sslmode=verify-full&sslrootcert={stranger.ca}")
        with pytest.raises(UserError, match="cannot connect to"):
            await connect(wrong, connect_timeout=10)
        assert await _flowsd("migrate", "--database-url", wrong) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "certificate" in err.lower(), err


async def test_sslmode_require_against_a_server_without_tls_is_one_line(
    server: PrivateServer, fresh: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url(fresh, query="sslmode=require")
    assert await _flowsd("migrate", "--database-url", url) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect to" in err, err
    preferred = server.url(fresh, query="sslmode=prefer")
    assert await _flowsd("migrate", "--database-url", preferred) == 0
