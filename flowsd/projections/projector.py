"""One projector transaction: apply a batch and move the checkpoint, or nothing.

Inside one transaction: take the projection's lock, move the checkpoint from where this
projector last saw it to the batch's last position (compare-and-set; a second instance or a
replay that moved it makes the batch a no-op and the caller re-reads) and, in the same
statement, find which of the batch's meters have parked events; then apply the events of the
batch that the projection reads (events of meters with parked events are parked behind them).
A crash anywhere before COMMIT leaves both the rows and the checkpoint as they were, so the
batch is applied again, once, on restart.

The events are first applied without a savepoint (BEGIN, lock, checkpoint, the projection's
statements, COMMIT). Should that fail on the data, the transaction is rolled back and done
again the careful way (:func:`~flowsd.projections.parking.apply_or_park`: the batch in a
savepoint, then meter by meter, parking the meters that fail).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from flowsd.events.checkpoints import CheckpointConflictError, read_checkpoint
from flowsd.events.types import RecordedEvent
from flowsd.projections import metrics
from flowsd.projections.base import Projection, events_in_range
from flowsd.projections.parking import (
    apply_or_park,
    enter_projection,
    is_data_error,
    park,
    parked_meters,
    undecodable,
)


@dataclass(frozen=True)
class BatchOutcome:
    checkpoint: int  # ``through``
    applied: int  # events the projection applied
    parked: int  # events parked (failing, or held behind a meter's parked events)
    events: int  # events of ``(expected, through]`` given, of every type


async def apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    events: Sequence[RecordedEvent],
    *,
    expected: int,
    through: int,
) -> BatchOutcome:
    """Apply the events in ``(expected, through]`` and move the checkpoint to ``through``.

    ``events`` must be every committed event of that range the projection could read (the
    whole range, from memory or from the log). Raises :class:`CheckpointConflictError` when
    the checkpoint is not at ``expected``. Observes the batch histograms of
    :mod:`flowsd.projections.metrics`; the counts are the caller's to keep.
    """
    started = time.monotonic()
    name = projection.name
    relevant, covered = events_in_range(
        events, projection.event_types, after=expected, through=through
    )
    careful = any(undecodable(projection, e) is not None for e in relevant)
    try:
        applied, parked = await _transaction(
            conn, projection, relevant, expected=expected, through=through, careful=careful
        )
    except Exception as exc:
        if careful or not is_data_error(exc):
            raise
        applied, parked = await _transaction(
            conn, projection, relevant, expected=expected, through=through, careful=True
        )
    metrics.BATCH_SECONDS.labels(name).observe(time.monotonic() - started)
    metrics.BATCH_SIZE.labels(name).observe(len(relevant))
    return BatchOutcome(through, applied, parked, covered)


async def _transaction(
    conn: asyncpg.Connection,
    projection: Projection,
    relevant: Sequence[RecordedEvent],
    *,
    expected: int,
    through: int,
    careful: bool,
) -> tuple[int, int]:
    """The transaction of :func:`apply_batch`: events applied, events parked."""
    name = projection.name
    async with conn.transaction():
        await enter_projection(conn, name)
        meters = list({e.meter_id for e in relevant})
        if through > expected:
            held = await advance_checkpoint_and_find_parked(
                conn, name, expected=expected, new=through, meters=meters
            )
        else:
            current = await read_checkpoint(conn, name)
            if current != expected:
                raise CheckpointConflictError(
                    f"checkpoint {name!r} is at {current}, not at the expected {expected}"
                )
            held = await parked_meters(conn, name, meters)
        behind = [e for e in relevant if e.meter_id in held]
        ready = [e for e in relevant if e.meter_id not in held] if held else relevant
        parked = 0
        if ready and careful:
            parked = await apply_or_park(conn, projection, ready)
        elif ready:
            await projection.apply(conn, ready)
        if behind:
            await park(conn, name, behind, "an earlier event of this meter is parked")
    return len(relevant) - parked - len(behind), parked + len(behind)


async def advance_checkpoint_and_find_parked(
    conn: asyncpg.Connection, name: str, *, expected: int, new: int, meters: Sequence[UUID]
) -> set[UUID]:
    """Move checkpoint ``name`` from ``expected`` to ``new`` and return which of ``meters``
    have parked events, in one statement (inside the caller's transaction, under the
    projection's lock). Raises :class:`CheckpointConflictError` when it is not at ``expected``.
    """
    if new <= expected:
        raise ValueError(f"checkpoint {name!r} cannot move from {expected} to {new}")
    row = await conn.fetchrow(
        _ADVANCE_FROM_ZERO if expected == 0 else _ADVANCE, name, expected, new, meters
    )
    assert row is not None
    if not row["moved"]:
        current = await read_checkpoint(conn, name)
        raise CheckpointConflictError(
            f"checkpoint {name!r} is at {current}, not at the expected {expected}"
        )
    return set(row["held"])


_PARKED_OF = """
ARRAY(SELECT DISTINCT meter_id FROM flowsd.projection_parked_event
      WHERE projection = $1 AND meter_id = ANY($4::uuid[])) AS held"""

_ADVANCE = f"""
WITH moved AS (
    UPDATE flowsd.projector_checkpoint SET position = $3, updated_at = now()
    WHERE name = $1 AND position = $2
    RETURNING true
)
SELECT EXISTS (SELECT FROM moved) AS moved, {_PARKED_OF}
"""

_ADVANCE_FROM_ZERO = f"""
WITH moved AS (
    INSERT INTO flowsd.projector_checkpoint AS c (name, position) VALUES ($1, $3)
    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
        WHERE c.position = $2::bigint
    RETURNING true
)
SELECT EXISTS (SELECT FROM moved) AS moved, {_PARKED_OF}
"""
