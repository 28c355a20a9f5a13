"""One projector transaction: apply a batch and move the checkpoint, or nothing.

Inside one transaction: take the projection's lock, check that the checkpoint is still where
this projector last saw it (compare-and-set; a second instance or a replay that moved it makes
the batch a no-op and the caller re-reads), apply the events of the batch that the projection
reads (events of meters with parked events are parked behind them), and advance the
checkpoint to the batch's last position. A crash anywhere before COMMIT leaves both the rows
and the checkpoint as they were, so the batch is applied again, once, on restart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from flowsd.events.checkpoints import CheckpointConflictError, advance_checkpoint, read_checkpoint
from flowsd.events.types import RecordedEvent
from flowsd.projections import metrics
from flowsd.projections.base import Projection, stored_type
from flowsd.projections.parking import apply_or_park, enter_projection, park, parked_meters


@dataclass(frozen=True)
class BatchOutcome:
    checkpoint: int
    applied: int
    parked: int


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
    the checkpoint is not at ``expected``.
    """
    started = time.monotonic()
    name = projection.name
    wanted = projection.event_types
    relevant = [e for e in events if expected < e.position <= through and stored_type(e) in wanted]
    async with conn.transaction():
        await enter_projection(conn, name)
        current = await read_checkpoint(conn, name)
        if current != expected:
            metrics.CONFLICTS.labels(name).inc()
            raise CheckpointConflictError(
                f"checkpoint {name!r} is at {current}, not at the expected {expected}"
            )
        held = await parked_meters(conn, name, {e.meter_id for e in relevant})
        behind = [e for e in relevant if e.meter_id in held]
        ready = [e for e in relevant if e.meter_id not in held]
        parked = await apply_or_park(conn, projection, ready) if ready else 0
        if behind:
            await park(conn, name, behind, "an earlier event of this meter is parked")
        if through > expected:
            await advance_checkpoint(conn, name, expected=expected, new=through)
    metrics.BATCH_SECONDS.labels(name).observe(time.monotonic() - started)
    metrics.BATCH_SIZE.labels(name).observe(len(relevant))
    metrics.EVENTS.labels(name).inc(sum(1 for e in events if expected < e.position <= through))
    metrics.CHECKPOINT.labels(name).set(through)
    return BatchOutcome(through, len(relevant) - parked - len(behind), parked + len(behind))
