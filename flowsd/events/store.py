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
positions). The database's guarantee behind both is ``flowsd.event_key``: a statement trigger
on the log claims every appended key there (its primary key), in the same statement, across
all the log's partitions (migration 115; a unique index on the partitioned log would have to
contain the partition key). A key that slips past the filter fails the insert with a unique
violation, and the batch is tried once more, looking its keys up again. Duplicates are
reported as such, not as errors.

How a batch travels (one transaction, the advisory lock held from the first statement):

1. ``flowsd.begin_event_append()``: the lock, the head position and the transaction's ``now()``
   (which is every new row's ``recorded_at``);
2. the keys already in the log are looked up in ``flowsd.event_key``, ``_PART_EVENTS`` at a
   time (the next part is keyed in Python meanwhile), under the lock, so none can arrive
   before the insert: one array index scan per part on PostgreSQL 17 and later, one index
   probe per key before;
3. the other events go straight into the log with one binary ``COPY``, in batch order
   (encoded piece by piece by :meth:`flowsd.events.codec.KeyedBatch.copy_data` while the
   server stores the previous piece; the returned events are built while it finishes):
   positions are allocated in row order while the lock is held, so the new events hold
   exactly the positions after the old head, and nothing per row comes back. If the numbers
   disagree (someone called ``nextval`` on the sequence by hand), the positions are read
   back by key instead;
4. ``flowsd.finish_event_append()``: the new head and the NOTIFY.

Batches below ``_COPY_MIN_EVENTS`` do steps 2 and 3 in one ``INSERT ... SELECT`` from
``unnest``ed arrays (one round trip fewer); so does the retry after a unique violation.

Fencing (several daemons, :mod:`flowsd.meters.ownership`): given ``epochs`` (meter -> the
lease epoch the caller holds), step 1 is ``flowsd.begin_fenced_event_append()``, which takes
the same lock and then names the meters whose lease has changed hands since (migration 110).
Changes of hands take the append lock too, so none can commit between that check and this
commit. The fenced meters' events are left out of the batch (not stored, not positioned) and
reported in :attr:`AppendResult.fenced`; gap safety and idempotency are those of the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import msgspec

from flowsd.events.codec import COPY_COLUMNS, KeyedBatch, to_staged_rows
from flowsd.events.types import Event, RecordedEvent

APPEND_LOCK_KEY = 7380396448181125121  # b"flowsd\x00\x01", also in migration 0002
NOTIFY_CHANNEL = "flowsd_events"  # payload: the new head position, one NOTIFY per batch

# The predicate of the log's per-meter index (migration 100): a query that looks a meter's
# events up by type states it, so the planner can use the partial index.
METER_INDEX_PREDICATE = "event_type NOT BETWEEN 1001 AND 1013"
_METER_INDEX_LEAVES_OUT = range(1001, 1014)


def meter_index_covers(type_id: int) -> bool:
    """Whether events of this type are in the log's per-meter index."""
    return type_id not in _METER_INDEX_LEAVES_OUT


# Below this many events a batch binds unnest arrays in one statement instead of a key lookup
# and a COPY (one round trip fewer). Measured here (CPU per event, client and server): equal
# at 100 events, COPY cheaper on both sides from 300.
_COPY_MIN_EVENTS = 250
# A copied batch is keyed and looked up in parts of this many events, so that Python keys
# the next part while the server looks this one up (see _copy).
_PART_EVENTS = 2000
# How long a cancelled lookup or COPY may take to end before the append gives up on it.
_STOP_SECONDS = 5.0

_BEGIN = "SELECT flowsd.begin_event_append() AS head, now() AS recorded_at"
_BEGIN_FENCED = """
SELECT begun.head, begun.fenced, now() AS recorded_at
FROM flowsd.begin_fenced_event_append($1::uuid[], $2::bigint[]) AS begun
"""

# The keys already stored, on PostgreSQL 17 and later: one index scan for the whole array,
# which since 17 reads each leaf page once for all the keys on it (a batch's keys are
# neighbours, time-ordered): about 0.25 us per key on the server against 0.8 for a probe each.
_STORED_KEYS_ANY = """
SELECT coalesce(array_agg(idempotency_key), '{}') FROM flowsd.event_key
WHERE idempotency_key = ANY($1::uuid[])
"""
_ANY_FROM_VERSION = 17
# The (1-based) indexes of the keys already stored, before 17: one index probe each. (Their
# planner costs an array scan at a descent per key and picks a sequential scan of the whole
# key table instead while it has fewer than some millions of rows.)
_STORED_KEYS = """
SELECT coalesce(array_agg(batch.index), '{}')
FROM unnest($1::uuid[]) WITH ORDINALITY AS batch(key, index)
WHERE EXISTS (SELECT FROM flowsd.event_key stored WHERE stored.idempotency_key = batch.key)
"""

# The batch from unnested arrays into the log. Keys already stored are found with one index
# probe per row (a LATERAL with LIMIT cannot become a hash join over the whole log) and
# skipped before the row is given a position. The append lock is held since the first
# statement, so no other key can arrive before the insert: a plain INSERT suffices, which
# saves ON CONFLICT's speculative insertion (an extra WAL record and lock per row). A writer
# that bypasses the lock (a direct insert into a partition or into flowsd.event_key) makes it
# fail with a unique violation, and the batch is tried again.
_INSERT = """
WITH batch AS (
    SELECT * FROM unnest($1::integer[], $2::uuid[], $3::timestamptz[], $4::integer[],
                         $5::integer[], $6::timestamptz[], $7::text[]::jsonb[], $8::uuid[])
        AS t(ordinal, meter_id, observed_at, event_type, event_set, read_at, payload,
             idempotency_key)
),
known AS (
    SELECT batch.ordinal FROM batch
    CROSS JOIN LATERAL (SELECT FROM flowsd.event_key stored
                        WHERE stored.idempotency_key = batch.idempotency_key LIMIT 1) AS hit
),
stored AS (
    INSERT INTO flows.meter_event_log
        (meter_id, "timestamp", event_type, event_set, read_at, payload, idempotency_key)
    SELECT meter_id, observed_at, event_type, event_set, read_at, payload, idempotency_key
    FROM batch
    WHERE ordinal NOT IN (SELECT ordinal FROM known)
    ORDER BY ordinal
    RETURNING position
)
SELECT (SELECT coalesce(array_agg(ordinal), '{}') FROM known) AS known,
       (SELECT count(*) FROM stored) AS stored
"""
_READ_BACK = """
SELECT position, idempotency_key FROM flows.meter_event_log
WHERE position > $1 AND position <= $2
"""


class AppendResult(msgspec.Struct, frozen=True):
    """What one committed append did.

    ``events`` are exactly the committed events with positions in
    (``after_position``, ``through_position``], in position order; the batch's duplicates are
    not among them, nor are the events of ``fenced`` meters (their lease moved on).
    """

    after_position: int
    through_position: int
    events: tuple[RecordedEvent, ...]
    duplicates: int
    fenced: frozenset[UUID] = frozenset()
    fenced_events: int = 0


async def append_batch(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    announce: bool = True,
    epochs: Mapping[UUID, int] | None = None,
) -> AppendResult:
    """Append ``events`` in one transaction (opened here) and return what was stored.

    ``announce`` sends one ``NOTIFY flowsd_events`` at commit when anything was stored.
    ``epochs``: the lease epochs the caller holds; events of a meter in it whose lease has
    moved on are refused (see Fencing above). Meters not in it are not checked.
    """
    copied = len(events) >= _COPY_MIN_EVENTS
    fence = _fence(events, epochs)
    try:
        return await _append(conn, events, copied=copied, announce=announce, fence=fence)
    except asyncpg.UniqueViolationError:
        # A writer that bypasses the append lock stored one of these keys meanwhile.
        return await _append(conn, events, copied=False, announce=announce, fence=fence)


def _fence(
    events: Sequence[Event], epochs: Mapping[UUID, int] | None
) -> tuple[list[UUID], list[int]] | None:
    """The distinct (meter, epoch) pairs of the batch to check, as two arrays."""
    if not epochs:
        return None
    held: dict[UUID, int] = {}
    for event in events:
        meter_id = event.meter_id
        if meter_id not in held:
            epoch = epochs.get(meter_id)
            if epoch is not None:
                held[meter_id] = epoch
    return (list(held), list(held.values())) if held else None


class _Inserted(msgspec.Struct):
    """What the insert step did with a batch's rows."""

    ordinals: list[int]  # of each row's event in the batch
    keys: list[UUID]  # of each row
    known: frozenset[int] = frozenset()  # ordinals of the rows whose key was stored already
    stored: int = 0  # rows added
    # The rows added, as committed events at the positions after the old head (built while
    # the server works); None: to be built afterwards.
    recorded: list[RecordedEvent] | None = None


async def _append(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    copied: bool,
    announce: bool,
    fence: tuple[list[UUID], list[int]] | None = None,
) -> AppendResult:
    fenced: frozenset[UUID] = frozenset()
    offered = len(events)
    async with conn.transaction():
        if fence is None:
            begun = await conn.fetchrow(_BEGIN)
        else:
            begun = await conn.fetchrow(_BEGIN_FENCED, *fence)
        assert begun is not None
        after: int = begun["head"]
        recorded_at: datetime = begun["recorded_at"]
        if fence is not None and begun["fenced"]:
            fenced = frozenset(begun["fenced"])
            events = [e for e in events if e.meter_id not in fenced]
        if copied:
            inserted = await _copy(conn, events, after=after, recorded_at=recorded_at)
        else:
            inserted = await _insert(conn, events)
        through: int = await conn.fetchval(
            "SELECT flowsd.finish_event_append($1)", announce and inserted.stored > 0
        )
        positions: dict[UUID, int] | None = None
        if through - after != inserted.stored:
            # Positions were allocated outside this batch too: read
            # back which are ours.
            rows = await conn.fetch(_READ_BACK, after, through)
            positions = {row["idempotency_key"]: row["position"] for row in rows}
    if positions is None and inserted.recorded is not None:
        recorded = tuple(inserted.recorded)
    else:
        recorded = _recorded(events, inserted, positions, after=after, recorded_at=recorded_at)
    return AppendResult(
        after_position=after,
        through_position=through,
        events=recorded,
        duplicates=len(events) - len(recorded),
        fenced=fenced,
        fenced_events=offered - len(events),
    )


async def _stored_indexes(conn: asyncpg.Connection, keys: list[UUID]) -> frozenset[int]:
    """The indexes in ``keys`` of the keys already stored."""
    if conn.get_server_version().major >= _ANY_FROM_VERSION:
        found: list[UUID] = await conn.fetchval(_STORED_KEYS_ANY, keys)
        if not found:
            return frozenset()
        stored = set(found)
        return frozenset(index for index, key in enumerate(keys) if key in stored)
    indexes: list[int] = await conn.fetchval(_STORED_KEYS, keys)
    return frozenset(index - 1 for index in indexes)


async def _copy(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    after: int,
    recorded_at: datetime,
) -> _Inserted:
    """Look up the keys of ``events`` and COPY the new ones in one statement, building the
    returned events as if their positions follow ``after``.

    Python's work overlaps the server's: the keys are computed and looked up in parts of
    ``_PART_EVENTS`` (the next part is keyed while this one is looked up), the COPY data is
    encoded while the server stores the previous piece, and the returned events are built
    while the server finishes the COPY (its statement triggers, which claim the keys and note
    the meters, run after the last row). One COPY, not one per part: each statement would
    run those triggers again for its meters.
    """
    rows = KeyedBatch(events)
    skip: set[int] = set()
    first, keyed = 0, rows.key(0, _PART_EVENTS)
    for start in range(_PART_EVENTS, len(events) + _PART_EVENTS, _PART_EVENTS):
        lookup = asyncio.ensure_future(_stored_indexes(conn, rows.keys[first:keyed]))
        try:
            await asyncio.sleep(0)  # the lookup is sent before the next part is keyed
            following = rows.key(start, start + _PART_EVENTS)
            found = await lookup
        except BaseException:
            await _stop(lookup)
            raise
        skip.update(first + index for index in found)
        first, keyed = keyed, following
    skipped = frozenset(skip)
    recorded: list[RecordedEvent] = []
    inserted = _Inserted(
        rows.ordinals,
        rows.keys,
        frozenset(rows.ordinals[index] for index in skipped),
        len(rows.ordinals) - len(skipped),
        recorded=recorded,
    )
    if inserted.stored:
        copy = _Copy(conn, rows, skipped)
        await copy.sent()
        try:
            await _record(
                events, rows, skipped, after=after, recorded_at=recorded_at, recorded=recorded
            )
        finally:
            await copy.done()
    return inserted


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` (a statement on the append's connection) and wait until it has ended,
    within :data:`_STOP_SECONDS`: the caller's ROLLBACK on that connection would otherwise
    fail with "another operation is in progress" instead of reporting the timeout or
    cancellation that got here. Its own error, if any, is dropped: the caller's is raised."""
    task.cancel()
    with anyio.move_on_after(_STOP_SECONDS, shield=True):
        await asyncio.wait({task})
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: asyncio would log it as never retrieved


class _Copy:
    """A binary COPY of a batch's rows into the log, running as a task, and whether all its
    data is with the connection."""

    def __init__(self, conn: asyncpg.Connection, rows: KeyedBatch, skip: frozenset[int]) -> None:
        self._rows = rows
        self._skip = skip
        self._handed_over = asyncio.Event()
        self._task = asyncio.ensure_future(
            conn.copy_to_table(
                "meter_event_log",
                source=self._data(),
                columns=list(COPY_COLUMNS),
                schema_name="flows",
                format="binary",
            )
        )

    async def _data(self) -> AsyncIterator[bytes]:
        for chunk in self._rows.copy_data(self._skip):
            yield chunk
        self._handed_over.set()

    async def sent(self) -> None:
        """Until the last piece of data is handed to the connection (or the COPY ended)."""
        waiting = asyncio.ensure_future(self._handed_over.wait())
        try:
            await asyncio.wait({self._task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _stop(self._task)
            raise
        finally:
            waiting.cancel()

    async def done(self) -> None:
        """Until the server has stored the rows; raises what the COPY raised."""
        await self._task


# Rows built between two yields to the event loop while a COPY's data may still be waiting
# in the connection's buffer (a yield lets the loop write it).
_RECORD_SLICE = 1000


async def _record(
    events: Sequence[Event],
    rows: KeyedBatch,
    skip: frozenset[int],
    *,
    after: int,
    recorded_at: datetime,
    recorded: list[RecordedEvent],
) -> None:
    """Add the rows not in ``skip`` to ``recorded`` as committed events, at the positions
    after ``after``."""
    position = after
    ordinals, keys = rows.ordinals, rows.keys
    for index, ordinal in enumerate(ordinals):
        if index in skip:
            continue
        position += 1
        recorded.append(_committed(events[ordinal], position, recorded_at, keys[index]))
        if index % _RECORD_SLICE == 0:
            await asyncio.sleep(0)


def _committed(event: Event, position: int, recorded_at: datetime, key: UUID) -> RecordedEvent:
    return RecordedEvent(
        position=position,
        recorded_at=recorded_at,
        meter_id=event.meter_id,
        observed_at=event.observed_at,
        read_at=event.read_at,
        body=event.body,
        idempotency_key=key,
    )


async def _insert(conn: asyncpg.Connection, events: Sequence[Event]) -> _Inserted:
    rows = to_staged_rows(events)
    inserted = _Inserted([row[0] for row in rows], [row[7] for row in rows])
    if rows:
        result = await conn.fetchrow(_INSERT, *zip(*rows, strict=True))
        assert result is not None
        inserted.known = frozenset(result["known"])
        inserted.stored = result["stored"]
    return inserted


def _recorded(
    events: Sequence[Event],
    inserted: _Inserted,
    positions: dict[UUID, int] | None,
    *,
    after: int,
    recorded_at: datetime,
) -> tuple[RecordedEvent, ...]:
    """The committed events in position order: the rows not stored already, at the positions
    after the old head, or at ``positions`` (key -> position) when they were read back."""
    skip = inserted.known
    recorded = []
    position = after
    for ordinal, key in zip(inserted.ordinals, inserted.keys, strict=True):
        if ordinal in skip:
            continue
        if positions is None:
            position += 1
        else:
            found = positions.get(key)
            if found is None:
                continue  # not stored
            position = found
        recorded.append(_committed(events[ordinal], position, recorded_at, key))
    if positions is not None:
        recorded.sort(key=lambda r: r.position)
    return tuple(recorded)
