"""Finding the database and connecting to it.

:func:`resolve_database` turns a :class:`flowsd.config.Config` into a URL: the configured one
(``[database] url``, ``FLOWSD_DATABASE_URL`` or ``--database-url``, already applied by
``load_config`` / ``with_database_url``), or, when there is none, the embedded PostgreSQL under
``<state directory>/pg``, started on demand and stopped when the last user exits.
:func:`create_pool` and :func:`connect` open asyncpg connections with flowsd's session name and
turn "cannot reach the database" into a one-line :class:`flowsd.errors.UserError`; both refuse
a connection pooler in transaction mode (:mod:`flowsd.db.pooler`). TLS follows the URL's
``sslmode`` (and ``sslrootcert``, ``sslcert``, ``sslkey``), as asyncpg reads them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from flowsd.config import Config
from flowsd.db.embedded import EmbeddedPostgres, start_embedded
from flowsd.db.pooler import refuse_transaction_pooler
from flowsd.db.urls import redact
from flowsd.errors import UserError

APPLICATION_NAME = "flowsd"

# What "the database is not there" looks like from asyncpg (as opposed to a bad statement).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)


@dataclass(frozen=True)
class DatabaseTarget:
    """Where to connect; ``embedded`` is the server flowsd started, if it started one."""

    url: str
    embedded: EmbeddedPostgres | None = None

    def close(self) -> None:
        """Release the embedded server (it stops when its last user has released it)."""
        if self.embedded is not None:
            self.embedded.stop()


def resolve_database(config: Config) -> DatabaseTarget:
    """The configured database, or the embedded one under the state directory."""
    if config.database.url:
        return DatabaseTarget(config.database.url)
    server = start_embedded(config.state_directory / "pg", cleanup="stop")
    return DatabaseTarget(server.url("postgres"), server)


async def connect(url: str, *, connect_timeout: float = 10.0) -> asyncpg.Connection:
    """One connection, or a :class:`UserError` naming the (redacted) URL."""
    try:
        conn = await _open(url, connect_timeout)
    except CONNECTION_ERRORS as exc:
        raise UserError(f"cannot connect to {redact(url)}: {_reason(exc)}") from exc
    try:
        await _refuse_pooler(conn, url, connect_timeout)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 8, connect_timeout: float = 10.0
) -> asyncpg.Pool:
    """A connection pool, or a :class:`UserError` naming the (redacted) URL."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            server_settings={"application_name": APPLICATION_NAME},
        )
    except CONNECTION_ERRORS as exc:
        raise UserError(f"cannot connect to {redact(url)}: {_reason(exc)}") from exc
    try:
        async with pool.acquire() as conn:
            await _refuse_pooler(conn, url, connect_timeout)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def create_pool_from_config(config: Config, url: str) -> asyncpg.Pool:
    """:func:`create_pool` sized and timed by ``[database]``."""
    return await create_pool(
        url,
        min_size=config.database.pool_min_size,
        max_size=config.database.pool_max_size,
        connect_timeout=config.database.connect_timeout_seconds,
    )


async def _open(url: str, connect_timeout: float) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        url, timeout=connect_timeout, server_settings={"application_name": APPLICATION_NAME}
    )
    return conn


async def _refuse_pooler(
    conn: asyncpg.Connection | PoolConnectionProxy, url: str, connect_timeout: float
) -> None:
    """:func:`flowsd.db.pooler.refuse_transaction_pooler`, failing as :func:`connect` does."""
    try:
        await refuse_transaction_pooler(
            cast(asyncpg.Connection, conn), url, lambda: _open(url, connect_timeout)
        )
    except CONNECTION_ERRORS as exc:
        raise UserError(f"cannot connect to {redact(url)}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
