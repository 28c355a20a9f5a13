"""Appending one batch of events in one transaction, serialised with every other writer.

Gap safety: the transaction takes the event log's advisory lock (``APPEND_LOCK_KEY``) before
any position is allocated and holds it until commit. The database takes the same lock in a
``BEFORE INSERT ... FOR EACH STATEMENT`` trigger, so writers that bypass this module (psql,
COPY, another process) are serialised too. Positions are therefore allocated in commit order,
and a reader that has seen position N can never later find a committed event below N: it reads
``position > checkpoint ORDER BY position`` with no gap heuristics. Rolled-back appends leave
permanent, harmless gaps. The price is one append transaction at a time, which group commit
(see :mod:`flowsd.events.appender`) turns into large batches.

Idempotency: duplicates inside one batch are dropped in Python, and events whose key is
already stored are filtered out before they are given a position (so re-reads do not burn
positions); the unique index on ``idempotency_key`` is the database's guarantee behind both
(a key that slips past the filter fails the insert, which is then retried with
``ON CONFLICT DO NOTHING``). Duplicates are reported as such, not as errors.

How a batch travels (one transaction, the advisory lock held from the first statement):

1. ``flowsd.begin_event_append()``: the lock, the head position and the transaction's ``now()``
   (which is every new row's ``recorded_at``), and whether the staging table exists;
2. binary ``COPY`` of the batch into a temporary staging table (one per session, created on
   first use, emptied at every commit), cheaper for Python than binding seven arrays;
3. one statement that finds the staged keys already in the log (one index probe each), inserts
   the rest in batch order and returns only the ordinals of those already stored and the
   number inserted. Positions are allocated in ordinal order while the lock is held, so the
   new events hold exactly the positions after the old head, in order: nothing per row comes
   back. If the numbers disagree (someone called ``nextval`` on the sequence by hand), the
   positions are read back by key instead;
4. ``flowsd.finish_event_append()``: the new head and the NOTIFY.

Batches below ``_COPY_MIN_EVENTS`` (1000) skip the staging table (its per-commit emptying
is a fixed cost only large batches amortise) and insert from ``unnest``ed arrays, with the
same filter and the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from flowsd.events.codec import StagedRow, to_staged_rows
from flowsd.events.types import Event, RecordedEvent

APPEND_LOCK_KEY = 7380396448181125121  # b"flowsd\x00\x01", also in migration 0002
NOTIFY_CHANNEL = "flowsd_events"  # payload: the new head position, one NOTIFY per batch

# Below this many events a batch binds unnest arrays instead: emptying the staging table at
# commit costs a fixed ~0.3-1 ms, which only large batches amortise (measured: COPY loses at
# 100 events, breaks even at 1000, wins at 10,000).
_COPY_MIN_EVENTS = 1000

_STAGING = "flowsd_append_staging"
# Set when the database refuses to create the staging table (TEMPORARY revoked).
_staging_refused = False
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (
    ordinal integer NOT NULL,
    meter_id uuid NOT NULL,
    observed_at timestamptz NOT NULL,
    event_type integer NOT NULL,
    event_set integer,
    read_at timestamptz,
    payload jsonb,
    idempotency_key uuid NOT NULL
) ON COMMIT DELETE ROWS
"""
_STAGING_COLUMNS = [
    "ordinal",
    "meter_id",
    "observed_at",
    "event_type",
    "event_set",
    "read_at",
    "payload",
    "idempotency_key",
]

_BEGIN = f"""
SELECT flowsd.begin_event_append() AS head, now() AS recorded_at,
       to_regclass('pg_temp.{_STAGING}') IS NOT NULL AS staging
"""

# The staged batch (``batch``, with ordinal) into the log. Keys already stored are found with
# one index probe per row (a LATERAL with LIMIT cannot become a hash join over the whole log)
# and skipped before the row is given a position. The append lock is held since the first
# statement, so no other key can arrive before the insert: a plain INSERT suffices, which
# saves ON CONFLICT's speculative insertion (an extra WAL record and lock per row). A writer
# that bypasses the lock makes it fail with a unique violation, and the batch is retried with
# ON CONFLICT DO NOTHING (the ``tolerant`` statements).
_INSERT_TEMPLATE = """
WITH {batch}known AS (
    SELECT batch.ordinal FROM {source} AS batch
    CROSS JOIN LATERAL (SELECT FROM flows.meter_event_log stored
                        WHERE stored.idempotency_key = batch.idempotency_key LIMIT 1) AS hit
),
stored AS (
    INSERT INTO flows.meter_event_log
        (meter_id, "timestamp", event_type, event_set, read_at, payload, idempotency_key)
    SELECT meter_id, observed_at, event_type, event_set, read_at, payload, idempotency_key
    FROM {source} AS batch
    WHERE ordinal NOT IN (SELECT ordinal FROM known)
    ORDER BY ordinal{on_conflict}
    RETURNING position
)
SELECT (SELECT coalesce(array_agg(ordinal), '{{}}') FROM known) AS known,
       (SELECT count(*) FROM stored) AS stored
"""
_ON_CONFLICT = "\n    ON CONFLICT (idempotency_key) DO NOTHING"
_STAGED_SOURCE = {"batch": "", "source": f"pg_temp.{_STAGING}"}
_UNNESTED_SOURCE = {
    "batch": """batch AS (
    SELECT * FROM unnest($1::integer[], $2::uuid[], $3::timestamptz[], $4::integer[],
                         $5::integer[], $6::timestamptz[], $7::text[]::jsonb[], $8::uuid[])
        AS t(ordinal, meter_id, observed_at, event_type, event_set, read_at, payload,
             idempotency_key)
),
""",
    "source": "batch",
}
_INSERT_STAGED = _INSERT_TEMPLATE.format(on_conflict="", **_STAGED_SOURCE)
_INSERT_UNNESTED = _INSERT_TEMPLATE.format(on_conflict="", **_UNNESTED_SOURCE)
_INSERT_STAGED_TOLERANT = _INSERT_TEMPLATE.format(on_conflict=_ON_CONFLICT, **_STAGED_SOURCE)
_INSERT_UNNESTED_TOLERANT = _INSERT_TEMPLATE.format(on_conflict=_ON_CONFLICT, **_UNNESTED_SOURCE)
_READ_BACK = """
SELECT position, idempotency_key FROM flows.meter_event_log
WHERE position > $1 AND position <= $2
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
    global _staging_refused  # noqa: PLW0603 (a process-wide fallback switch)
    rows = to_staged_rows(events)
    staged = len(rows) >= _COPY_MIN_EVENTS and not _staging_refused
    try:
        return await _append(conn, events, rows, staged=staged, announce=announce)
    except asyncpg.InsufficientPrivilegeError:
        if not staged:
            raise
        # No TEMPORARY privilege on this database: unnest from now on.
        _staging_refused = True
        return await _append(conn, events, rows, staged=False, announce=announce)
    except asyncpg.UniqueViolationError:
        # A writer that bypasses the append lock stored one of these keys meanwhile.
        return await _append(conn, events, rows, staged=staged, announce=announce, tolerant=True)


async def _append(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    rows: list[StagedRow],
    *,
    staged: bool,
    announce: bool,
    tolerant: bool = False,
) -> AppendResult:
    nested = conn.is_in_transaction()
    async with conn.transaction():
        begun = await conn.fetchrow(_BEGIN)
        assert begun is not None
        after: int = begun["head"]
        recorded_at: datetime = begun["recorded_at"]
        outcome: asyncpg.Record | None = None
        if not rows:
            pass
        elif staged:
            if not begun["staging"]:
                # First staged append of this session (or its temporary tables were discarded).
                await conn.execute(_CREATE_STAGING)
            elif nested:
                # An enclosing transaction may still hold an earlier batch's rows.
                await conn.execute(f"DELETE FROM pg_temp.{_STAGING}")
            await conn.copy_records_to_table(
                _STAGING, records=rows, columns=_STAGING_COLUMNS, schema_name="pg_temp"
            )
            outcome = await conn.fetchrow(_INSERT_STAGED_TOLERANT if tolerant else _INSERT_STAGED)
        else:
            statement = _INSERT_UNNESTED_TOLERANT if tolerant else _INSERT_UNNESTED
            outcome = await conn.fetchrow(statement, *zip(*rows, strict=True))
        known: Sequence[int] = () if outcome is None else outcome["known"]
        count: int = 0 if outcome is None else outcome["stored"]
        through: int = await conn.fetchval(
            "SELECT flowsd.finish_event_append($1)", announce and count > 0
        )
        positions: dict[UUID, int] | None = None
        if through - after != count:
            # Positions were allocated outside this batch too: read back which are ours.
            stored = await conn.fetch(_READ_BACK, after, through)
            positions = {row["idempotency_key"]: row["position"] for row in stored}
    return AppendResult(
        after_position=after,
        through_position=through,
        events=_recorded(events, rows, known, positions, after=after, recorded_at=recorded_at),
        duplicates=len(events) - count,
    )


def _recorded(
    events: Sequence[Event],
    rows: list[StagedRow],
    known: Sequence[int],
    positions: dict[UUID, int] | None,
    *,
    after: int,
    recorded_at: datetime,
) -> tuple[RecordedEvent, ...]:
    skip = set(known)
    recorded = []
    position = after
    for row in rows:
        ordinal, key = row[0], row[7]
        if ordinal in skip:
            continue
        if positions is None:
            position += 1
        else:
            found = positions.get(key)
            if found is None:
                continue  # dropped by ON CONFLICT
            position = found
        event = events[ordinal]
        recorded.append(
            RecordedEvent(
                position=position,
                recorded_at=recorded_at,
                meter_id=event.meter_id,
                observed_at=event.observed_at,
                read_at=event.read_at,
                body=event.body,
                idempotency_key=key,
            )
        )
    if positions is not None:
        recorded.sort(key=lambda r: r.position)
    return tuple(recorded)
