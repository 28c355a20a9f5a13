"""Appending one batch of events in one transaction, serialised with every other writer.

Gap safety: the transaction takes the event log's advisory lock (``APPEND_LOCK_KEY``) before
any position is allocated and holds it until commit. The database takes the same lock in a
``BEFORE INSERT ... FOR EACH STATEMENT`` trigger, so writers that bypass this module (psql,
COPY, another process) are serialised too. Positions are therefore allocated in commit order,
and a reader that has seen position N can never later find a committed event below N: it reads
``position > checkpoint ORDER BY position`` with no gap heuristics. Rolled-back appends leave
permanent, harmless gaps. The price is one append transaction at a time, which group commit
(see :mod:`flowsd.events.appender`) turns into large batches.

Idempotency: events whose key is already stored are filtered out before they are given a
position (so re-reads do not burn positions), and ``ON CONFLICT (idempotency_key) DO NOTHING``
catches duplicates inside one batch; both are reported as duplicates, not errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from flowsd.events.codec import to_columns
from flowsd.events.types import Event, RecordedEvent

APPEND_LOCK_KEY = 7380396448181125121  # b"flowsd\x00\x01", also in migration 0002
NOTIFY_CHANNEL = "flowsd_events"  # payload: the new head position, one NOTIFY per batch

_INSERT = """
INSERT INTO flows.meter_event_log
    (meter_id, "timestamp", event_type, event_set, read_at, payload, idempotency_key)
SELECT meter_id, observed_at, event_type, event_set, read_at, payload::jsonb, idempotency_key
FROM unnest($1::uuid[], $2::timestamptz[], $3::integer[], $4::integer[], $5::timestamptz[],
            $6::text[], $7::uuid[])
     WITH ORDINALITY AS batch(meter_id, observed_at, event_type, event_set, read_at, payload,
                              idempotency_key, ordinal)
-- One index probe per row (a LATERAL with LIMIT cannot become a hash join over the whole log).
LEFT JOIN LATERAL (SELECT true AS found FROM flows.meter_event_log stored
                   WHERE stored.idempotency_key = batch.idempotency_key LIMIT 1) AS known ON true
WHERE known.found IS NULL
ORDER BY ordinal
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING position, idempotency_key, recorded_at
"""


class AppendResult(msgspec.Struct, frozen=True):
    """What one committed append did.

    ``events`` are exactly the committed events with positions in
    (``after_position``, ``through_position``], in position order; the batch's duplicates are
    not among them.
    """

    after_position: int
    through_position: int
    events: tuple[RecordedEvent, ...]
    duplicates: int


async def append_batch(
    conn: asyncpg.Connection, events: Sequence[Event], *, announce: bool = True
) -> AppendResult:
    """Append ``events`` in one transaction (opened here) and return what was stored.

    ``announce`` sends one ``NOTIFY flowsd_events`` at commit when anything was stored.
    """
    columns = to_columns(events)
    async with conn.transaction():
        after: int = await conn.fetchval("SELECT flowsd.begin_event_append()")
        rows = await conn.fetch(
            _INSERT,
            columns.meter_ids,
            columns.observed_at,
            columns.event_types,
            columns.event_sets,
            columns.read_at,
            columns.payloads,
            columns.keys,
        )
        through: int = await conn.fetchval(
            "SELECT flowsd.finish_event_append($1)", announce and bool(rows)
        )
    return AppendResult(
        after_position=after,
        through_position=through,
        events=_recorded(events, columns.keys, rows),
        duplicates=len(events) - len(rows),
    )


def _recorded(
    events: Sequence[Event], keys: list[UUID], rows: list[asyncpg.Record]
) -> tuple[RecordedEvent, ...]:
    by_key: dict[UUID, Event] = {}
    for key, event in zip(keys, events, strict=True):
        by_key.setdefault(key, event)
    recorded = []
    for row in rows:
        event = by_key[row["idempotency_key"]]
        recorded_at: datetime = row["recorded_at"]
        recorded.append(
            RecordedEvent(
                position=row["position"],
                recorded_at=recorded_at,
                meter_id=event.meter_id,
                observed_at=event.observed_at,
                read_at=event.read_at,
                body=event.body,
                idempotency_key=row["idempotency_key"],
            )
        )
    recorded.sort(key=lambda r: r.position)
    return tuple(recorded)
