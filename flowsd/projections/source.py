"""Reading committed events for projectors: ranges (catch-up) and single positions (retries).

Every read is one statement, so it sees one snapshot; appends are serialised (see
:mod:`flowsd.events.store`), so ``position > checkpoint`` never skips an event committed later.
A row whose payload does not decode becomes an :class:`~flowsd.events.types.UnknownBody`, which
projections ignore (as the SQL rebuilds do for types they do not select).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from flowsd.events.codec import decode_row
from flowsd.events.types import RecordedEvent, UnknownBody

EVENT_COLUMNS = """position, recorded_at, meter_id, "timestamp", read_at, event_type, event_set,
       payload::text AS payload, idempotency_key"""

_SELECT_RANGE = f"""
SELECT {EVENT_COLUMNS}
FROM flows.meter_event_log
WHERE position > $1 AND position <= $2
ORDER BY position
LIMIT $3
"""

_SELECT_POSITIONS = f"""
SELECT {EVENT_COLUMNS}
FROM flows.meter_event_log
WHERE position = ANY($1::bigint[])
ORDER BY position
"""


def decode_event(row: asyncpg.Record) -> RecordedEvent:
    """A log row as a :class:`RecordedEvent`; an undecodable payload gives an unknown body."""
    try:
        return decode_row(row)
    except (msgspec.DecodeError, msgspec.ValidationError):
        payload = row["payload"]
        return RecordedEvent(
            position=row["position"],
            recorded_at=row["recorded_at"],
            meter_id=row["meter_id"],
            observed_at=row["timestamp"],
            read_at=row["read_at"],
            body=UnknownBody(
                type_id=row["event_type"], payload=None if payload is None else payload.encode()
            ),
            idempotency_key=row["idempotency_key"],
        )


async def read_range(
    conn: asyncpg.Connection, after: int, through: int, limit: int
) -> list[RecordedEvent]:
    """Up to ``limit`` events with ``after < position <= through``, in position order."""
    rows = await conn.fetch(_SELECT_RANGE, after, through, limit)
    return [decode_event(row) for row in rows]


async def read_positions(conn: asyncpg.Connection, positions: Sequence[int]) -> list[RecordedEvent]:
    """The events at ``positions`` (those still in the log), in position order."""
    rows = await conn.fetch(_SELECT_POSITIONS, list(positions))
    return [decode_event(row) for row in rows]
