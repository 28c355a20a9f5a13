"""Reading the log in position order, for projectors catching up and for other processes: the
one reader of ``flows.meter_event_log``. A payload that does not decode as its type is read as
an :class:`~flowsd.events.types.UnknownBody` (:func:`flowsd.events.codec.decode_body`), which
projections skip, as the SQL rebuilds do for types they do not select.

Every read is one statement (one snapshot). Because appends are serialised (see
:mod:`flowsd.events.store`), ``position > after ORDER BY position`` never skips an event that
commits later: any event committed after this read gets a higher position than all it saw.
For the same reason every position up to :func:`head_position` is settled once the head is
seen, so a reader that takes only some events (an :class:`EventFilter`, e.g. one meter's)
reads ``(cursor, head]`` and moves its cursor to the head, not to the last event it kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from flowsd.events.codec import decode_row
from flowsd.events.store import NOTIFY_CHANNEL
from flowsd.events.types import NATIVE_TYPE_ID_MAX, RecordedEvent

EVENT_COLUMNS = """position, recorded_at, meter_id, "timestamp", read_at, event_type, event_set,
       payload::text AS payload, idempotency_key"""

_SELECT_RANGE = f"""
SELECT {EVENT_COLUMNS}
FROM flows.meter_event_log
WHERE position > $1 AND position <= $2
ORDER BY position
LIMIT $3
"""

# The same read, bounded above and filtered; a NULL parameter does not filter.
_SELECT_MATCHING = f"""
SELECT {EVENT_COLUMNS}
FROM flows.meter_event_log
WHERE position > $1 AND position <= $3
  AND ($4::uuid IS NULL OR meter_id = $4)
  AND ($5::integer[] IS NULL OR event_type = ANY($5::integer[])
       OR ($6 AND event_type BETWEEN 1 AND $7))
ORDER BY position
LIMIT $2
"""

_SELECT_POSITIONS = f"""
SELECT {EVENT_COLUMNS}
FROM flows.meter_event_log
WHERE position = ANY($1::bigint[])
ORDER BY position
"""
_NO_UPPER_BOUND = 2**63 - 1


@dataclass(frozen=True)
class EventFilter:
    """Which events a read returns: one meter's, some types' (None: no restriction)."""

    meter_id: UUID | None = None
    type_ids: Sequence[int] | None = None
    # With type_ids: also every entry of the meters' own event logs (ids 1-999).
    meter_log_entries: bool = False


async def read_events(
    conn: asyncpg.Connection,
    after: int,
    limit: int = 1000,
    *,
    until: int | None = None,
    where: EventFilter | None = None,
) -> list[RecordedEvent]:
    """Up to ``limit`` committed events with ``after < position <= until`` (no upper bound
    by default) that ``where`` takes, in position order."""
    through = _NO_UPPER_BOUND if until is None else until
    if where is None:
        rows = await conn.fetch(_SELECT_RANGE, after, through, limit)
    else:
        type_ids = None if where.type_ids is None else list(where.type_ids)
        rows = await conn.fetch(
            _SELECT_MATCHING,
            after,
            limit,
            through,
            where.meter_id,
            type_ids,
            where.meter_log_entries,
            NATIVE_TYPE_ID_MAX,
        )
    return [decode_row(row) for row in rows]


async def read_positions(conn: asyncpg.Connection, positions: Sequence[int]) -> list[RecordedEvent]:
    """The events at ``positions`` (those still in the log), in position order (a projector
    retrying parked or patched events)."""
    rows = await conn.fetch(_SELECT_POSITIONS, list(positions))
    return [decode_row(row) for row in rows]


async def iter_batches(
    conn: asyncpg.Connection,
    after: int,
    *,
    batch_size: int = 1000,
    until: int | None = None,
    where: EventFilter | None = None,
) -> AsyncIterator[list[RecordedEvent]]:
    """Batches after ``after`` up to the head (or ``until``, inclusive); ends when caught up."""
    cursor = after
    while until is None or cursor < until:
        batch = await read_events(conn, cursor, batch_size, until=until, where=where)
        if not batch:
            return
        yield batch
        cursor = batch[-1].position


async def follow(
    conn: asyncpg.Connection,
    after: int,
    *,
    wait: Callable[[], Awaitable[bool]],
    where: EventFilter | None = None,
    batch_size: int = 1000,
) -> AsyncIterator[list[RecordedEvent]]:
    """Tail the log: batches after ``after`` that ``where`` takes, up to the head, then
    ``await wait()`` (e.g. for a NOTIFY or a poll interval) and on from that head, until
    ``wait`` returns False. Every committed event it takes comes exactly once, in order."""
    cursor = after
    while True:
        head = await head_position(conn)
        async for batch in iter_batches(
            conn, cursor, batch_size=batch_size, until=head, where=where
        ):
            yield batch
        cursor = max(cursor, head)
        if not await wait():
            return


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
