"""Helpers shared by projection tests: recorded events, in-memory register rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import asyncpg

from flowsd.events import types as t
from flowsd.events.checkpoints import read_checkpoint
from flowsd.events.store import AppendResult
from flowsd.projections.base import Projection
from flowsd.projections.projector import apply_batch
from flowsd.projections.registers import Lookup, RegisterRef

RECORDED_AT = datetime(2026, 3, 2, tzinfo=UTC)


def recorded(events: Sequence[t.Event]) -> list[t.RecordedEvent]:
    """What the log would hold: duplicates (same idempotency key) dropped, positions 1..n."""
    seen: set[uuid.UUID] = set()
    found: list[t.RecordedEvent] = []
    for e in events:
        key = e.idempotency_key()
        if key in seen:
            continue
        seen.add(key)
        found.append(
            t.RecordedEvent(
                position=len(found) + 1,
                recorded_at=RECORDED_AT,
                meter_id=e.meter_id,
                observed_at=e.observed_at,
                read_at=e.read_at,
                body=e.body,
                idempotency_key=key,
            )
        )
    return found


def simple_registers(
    lookups: Iterable[Lookup], reversed_meters: set[uuid.UUID]
) -> dict[Lookup, RegisterRef]:
    """One register per meter and element (A also takes SINGLE readings), no windows."""
    found = {}
    for meter, element, at in lookups:
        name = "A" if element == "SINGLE" else element
        register = uuid.uuid5(meter, name)
        found[(meter, element, at)] = RegisterRef(register, meter in reversed_meters)
    return found


async def apply_appended(
    conn: asyncpg.Connection, result: AppendResult, projections: Sequence[Projection]
) -> None:
    """Apply one append's events with each projection, from its current checkpoint."""
    for projection in projections:
        await apply_batch(
            conn,
            projection,
            result.events,
            expected=await read_checkpoint(conn, projection.name),
            through=result.through_position,
        )
