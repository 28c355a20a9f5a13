"""Refusing connection poolers in transaction mode (PgBouncer's ``pool_mode = transaction``,
the pooler hosted platforms put on port 6543).

Such a pooler hands a client's server connection to other clients between transactions, so
everything flowsd keeps in a session is lost or leaks: asyncpg's prepared statements, the
``LISTEN`` that wakes the projectors and reloads the meter list, the event store's staging
table for COPY, a replay's session settings. flowsd does not work around that; it refuses at
connection time with one line, and the operator gives the database's direct address (or a
pooler in session mode, which keeps one server connection per client and works).

How it is told: a pooler answers the connection with its own backend key, so the server
process id asyncpg was given differs from ``pg_backend_pid()``; a direct connection (also
through a plain TCP proxy) has the same. Only then a second client opens a transaction: in
transaction mode it is served by the server connection the first client just released (what
PgBouncer does: it reuses the most recently released one), or the first client, asking again
while the second holds its server connection, is moved to another one. In session mode
neither can happen. Every probe runs inside a transaction, so that it stays on one server
connection whatever the mode.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from flowsd.db.errors import DatabaseRefusedError
from flowsd.db.urls import redact


class TransactionPoolerError(DatabaseRefusedError):
    """The URL leads to a connection pooler in transaction mode."""


async def refuse_transaction_pooler(
    conn: asyncpg.Connection, url: str, connect: Callable[[], Awaitable[asyncpg.Connection]]
) -> None:
    """Raise :class:`TransactionPoolerError` if ``conn`` goes through a transaction pooler.

    ``connect`` opens another connection to the same URL (used only when a pooler is seen).
    """
    first = await _backend(conn, 1)
    if first == conn.get_server_pid():
        return  # no pooler in between
    other = await connect()
    try:
        async with other.transaction():
            taken = await _backend(other, 2)
            again = await _backend(conn, 3)
    finally:
        await other.close()
    if taken == first or again != first:
        raise TransactionPoolerError(
            f"{redact(url)} leads to a connection pooler in transaction mode (such as PgBouncer "
            "or a hosted pooler on port 6543), which flowsd cannot use: give the database's "
            "direct address, or a pooler in session mode"
        )


async def _backend(conn: asyncpg.Connection, probe: int) -> int:
    # A distinct text per probe: a statement prepared on one server connection is unknown on
    # another, and asyncpg would reuse the cached one.
    async with conn.transaction():
        pid: int = await conn.fetchval(f"SELECT pg_backend_pid() /* flowsd probe {probe} */")
    return pid
