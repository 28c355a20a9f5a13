"""A connection that LISTENs on one channel, opened when first needed and again after it was
lost or closed.

A NOTIFY on the channel and the loss of the connection both call ``wake``: a lost connection
loses NOTIFYs too, so its owner should look again (reconnect and re-read) at once rather than
wait for its next poll. The meter list and the command table use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from flowsd.db.connect import close_quietly


class ListeningConnection:
    """The owner's one connection; :meth:`connection` opens it, :meth:`close` drops it."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        wake: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._wake = wake
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        """The open connection, LISTENing; a new one if there was none or it was lost."""
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            try:
                await conn.add_listener(self._channel, self._notified)
            except BaseException:
                conn.terminate()
                raise
            conn.add_termination_listener(self._notified)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        """Close the connection, if any (shielded: also on cancellation); never raises a
        database error."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._notified)
        with anyio.CancelScope(shield=True):
            await close_quietly(conn)

    def _notified(self, *_: object) -> None:
        self._wake()
