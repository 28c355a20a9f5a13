"""Finding the database and connecting to it.

:func:`resolve_database` turns a :class:`flowsd.config.Config` into a URL: the configured one
(``[database] url``, ``FLOWSD_DATABASE_URL`` or ``--database-url``, already applied by
``load_config`` / ``with_database_url``). Only ``flowsd demo`` (and the tests) may fall back to
the embedded PostgreSQL under ``<state directory>/pg``, started on demand and stopped when the
last user exits; every other command without a URL is told how to give one.
:func:`create_pool` and :func:`connect` open asyncpg connections with flowsd's session name and
classify a failure once (:mod:`flowsd.db.errors`): :class:`DatabaseRefusedError` (one line,
exit status 2) or :class:`DatabaseUnavailableError` (retry). Both refuse a connection pooler in
transaction mode (:mod:`flowsd.db.pooler`, a refusal). TLS follows the URL's ``sslmode`` (and
``sslrootcert``, ``sslcert``, ``sslkey``), as asyncpg reads them.

The daemon's sessions (:func:`daemon_settings`, given to both) carry
``idle_in_transaction_session_timeout`` (``[database] idle_in_transaction_timeout_seconds``):
a daemon paused inside a transaction (SIGSTOP, a frozen VM, a stalled event loop) holds the
event log's append lock and its row locks only that long; then the server ends the session
and the others' appends go on. To the paused daemon, when it wakes, that is a lost connection
like any other (:data:`flowsd.db.errors.DATABASE_ERRORS`): the transaction did not commit and
is tried again on a new connection. Not bounded by it: a daemon frozen in the middle of a
``COPY`` (appends of 250 events or more, :mod:`flowsd.events.store`) holds the lock until it
resumes: the server waits for the copy data, which is neither idle nor ended by
``statement_timeout`` or ``transaction_timeout`` (PostgreSQL 15 and 18 alike). One-shot
commands (``flowsd replay``, ``verify``, ``export``, ``events``) are not given it: a rebuild
works in Python between the statements of its transactions, and none of them holds a lock
the daemons' appends wait for.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from flowsd.config import DATABASE_URL_ENV, Config
from flowsd.db.embedded import EmbeddedPostgres, start_embedded
from flowsd.db.errors import (
    DATABASE_ERRORS,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    describe,
    is_refusal,
)
from flowsd.db.pooler import refuse_transaction_pooler
from flowsd.db.urls import check_url, redact
from flowsd.errors import UserError

APPLICATION_NAME = "flowsd"
# A bad port in the URL is asyncpg's ValueError: a refusal like any other unusable URL.
_CONNECT_FAILURES: tuple[type[Exception], ...] = (*DATABASE_ERRORS, ValueError)

NO_DATABASE_HINT = (
    "no database configured: give --database-url postgresql://USER@HOST:PORT/DATABASE, "
    f"set {DATABASE_URL_ENV}, or set [database] url in the configuration file "
    "(only `flowsd demo` starts an embedded PostgreSQL)"
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


def resolve_database(config: Config, *, embedded: bool = False) -> DatabaseTarget:
    """The configured database (its URL checked); without one, the embedded server under the
    state directory when ``embedded`` (``flowsd demo``), else a :class:`UserError` saying how
    to configure one."""
    if config.database.url:
        check_url(config.database.url)
        return DatabaseTarget(config.database.url)
    if not embedded:
        raise UserError(NO_DATABASE_HINT)
    server = start_embedded(config.state_directory / "pg", cleanup="stop")
    return DatabaseTarget(server.url("postgres"), server)


def daemon_settings(config: Config) -> dict[str, str]:
    """The session settings of the daemon's connections (see the module docstring)."""
    timeout = config.database.idle_in_transaction_timeout_seconds
    if not timeout:
        return {}
    return {"idle_in_transaction_session_timeout": f"{max(1, round(timeout * 1000))}ms"}


async def connect(
    url: str, *, connect_timeout: float = 10.0, settings: Mapping[str, str] | None = None
) -> asyncpg.Connection:
    """One connection, with ``settings`` (server settings) in its start-up packet; a failure
    is a :class:`DatabaseRefusedError` or a :class:`DatabaseUnavailableError` naming the
    (redacted) URL."""
    try:
        conn = await _open(url, connect_timeout, settings)
    except _CONNECT_FAILURES as exc:
        raise connection_failure(url, exc) from exc
    try:
        await _refuse_pooler(conn, url, connect_timeout, settings)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 8,
    connect_timeout: float = 10.0,
    settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """A connection pool; settings and failures as for :func:`connect`."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            server_settings=_server_settings(settings),
        )
    except _CONNECT_FAILURES as exc:
        raise connection_failure(url, exc) from exc
    try:
        async with pool.acquire() as conn:
            await _refuse_pooler(conn, url, connect_timeout, settings)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def create_pool_from_config(config: Config, url: str) -> asyncpg.Pool:
    """The daemon's :func:`create_pool`: sized and timed by ``[database]``, its sessions
    with :func:`daemon_settings`."""
    return await create_pool(
        url,
        min_size=config.database.pool_min_size,
        max_size=config.database.pool_max_size,
        connect_timeout=config.database.connect_timeout_seconds,
        settings=daemon_settings(config),
    )


def _server_settings(settings: Mapping[str, str] | None) -> dict[str, str]:
    return {"application_name": APPLICATION_NAME, **(settings or {})}


async def _open(
    url: str, connect_timeout: float, settings: Mapping[str, str] | None
) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        url, timeout=connect_timeout, server_settings=_server_settings(settings)
    )
    return conn


async def _refuse_pooler(
    conn: asyncpg.Connection | PoolConnectionProxy,
    url: str,
    connect_timeout: float,
    settings: Mapping[str, str] | None,
) -> None:
    """:func:`flowsd.db.pooler.refuse_transaction_pooler`, failing as :func:`connect` does."""
    try:
        await refuse_transaction_pooler(
            cast(asyncpg.Connection, conn), url, lambda: _open(url, connect_timeout, settings)
        )
    except _CONNECT_FAILURES as exc:
        raise connection_failure(url, exc) from exc


def connection_failure(
    url: str, exc: BaseException
) -> DatabaseRefusedError | DatabaseUnavailableError:
    """The classified error for a failed connection attempt to ``url``."""
    if isinstance(exc, DatabaseRefusedError | DatabaseUnavailableError):
        return exc
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Refused by flowsd itself: the server's certificate fails the URL's sslmode.
        return DatabaseRefusedError(f"cannot connect to {redact(url)}: {reason}")
    if is_refusal(exc) or isinstance(exc, ValueError):
        return DatabaseRefusedError(f"{redact(url)} refused the connection: {reason}")
    return DatabaseUnavailableError(f"cannot connect to {redact(url)}: {describe_reason(exc)}")


def describe_reason(exc: BaseException) -> str:
    """The reason of a connection failure without asyncpg's class names for the plain cases."""
    if isinstance(exc, OSError | TimeoutError):
        text = str(exc).strip().splitlines()
        return text[0] if text else "timed out"
    return describe(exc)


async def close_quietly(conn: asyncpg.Connection, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Close ``conn``; one that cannot close cleanly within ``timeout`` (lost, or in a state
    asyncpg refuses to use) is terminated instead. Never raises a database error."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout)
    except DATABASE_ERRORS:
        conn.terminate()
