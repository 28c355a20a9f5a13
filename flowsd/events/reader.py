"""Reading the log in position order, for projectors catching up and for other processes.

Every read is one statement (one snapshot). Because appends are serialised (see
:mod:`flowsd.events.store`), ``position > after ORDER BY position`` never skips an event that
commits later: any event committed after this read gets a higher position than all it saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from flowsd.events.codec import decode_row
from flowsd.events.store import NOTIFY_CHANNEL
from flowsd.events.types import RecordedEvent

_SELECT_AFTER = """
SELECT position, recorded_at, meter_id, "timestamp", read_at, event_type, event_set,
       payload::text AS payload, idempotency_key
FROM flows.meter_event_log
WHERE position > $1
ORDER BY position
LIMIT $2
"""


async def read_events(
    conn: asyncpg.Connection, after: int, limit: int = 1000
) -> list[RecordedEvent]:
    """Up to ``limit`` committed events with ``position > after``, in position order."""
    rows = await conn.fetch(_SELECT_AFTER, after, limit)
    return [decode_row(row) for row in rows]


async def iter_batches(
    conn: asyncpg.Connection, after: int, *, batch_size: int = 1000, until: int | None = None
) -> AsyncIterator[list[RecordedEvent]]:
    """Batches after ``after`` up to the head (or ``until``, inclusive); ends when caught up."""
    cursor = after
    while until is None or cursor < until:
        batch = await read_events(conn, cursor, batch_size)
        if until is not None:
            batch = [e for e in batch if e.position <= until]
        if not batch:
            return
        yield batch
        cursor = batch[-1].position


async def head_position(conn: asyncpg.Connection) -> int:
    """The highest committed position (0 for an empty log)."""
    value: int | None = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
    return value or 0


async def listen_for_appends(conn: asyncpg.Connection, on_head: Callable[[int], None]) -> None:
    """Call ``on_head(position)`` whenever another process commits events.

    ``conn`` must be a dedicated connection (not from a pool) and stay open. Notifications are
    a wake-up, not a feed: after a reconnect, read from the checkpoint again, and keep a
    fallback poll, since a dropped connection loses notifications silently.
    """

    def deliver(*args: Any) -> None:
        on_head(int(args[3]))

    await conn.add_listener(NOTIFY_CHANNEL, deliver)
