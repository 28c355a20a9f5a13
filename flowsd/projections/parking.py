"""Parked events: what a projector could not apply, kept per meter until retried.

When applying a batch fails on data (an SQL data or integrity error, or the pure function
rejecting an event), the projector retries meter by meter; the events of the meters that still
fail are parked (``flowsd.projection_parked_event``), logged and counted, and the checkpoint
moves on for everyone else. Every later event of a parked meter is parked too, so that a
meter's events are always applied in order. :func:`retry_parked` applies them again (after the
cause is fixed), oldest first, meter by meter.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import structlog

from flowsd.events.types import RecordedEvent
from flowsd.projections import metrics
from flowsd.projections.base import Projection, ProjectionError, type_of
from flowsd.projections.source import read_positions

log = structlog.get_logger("flowsd.projections")

# Python-side failures of a pure function that mean "this event cannot be applied".
DATA_ERRORS: tuple[type[BaseException], ...] = (
    ProjectionError,
    ValueError,
    TypeError,
    ArithmeticError,
    KeyError,
)


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` is about the events themselves, not the database being away."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in ("22", "23")
    return isinstance(exc, DATA_ERRORS)


def lock_key(projection: str) -> int:
    """The advisory-lock key of one projection (its projector, replays and retries)."""
    digest = hashlib.blake2b(f"flowsd.projection.{projection}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def enter_projection(conn: asyncpg.Connection, projection: str) -> None:
    """First statements of every transaction that writes a projection's table.

    Takes the projection's lock (held to commit), marks the session as a projector so that
    ``meter_shadows.updated_at`` keeps the observation time, and checks foreign keys per
    statement, so that a bad row fails where a savepoint can catch it.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1), set_config('flowsd.projector', 'on', true)",
        lock_key(projection),
    )
    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")


def by_meter(events: Iterable[RecordedEvent]) -> dict[UUID, list[RecordedEvent]]:
    grouped: dict[UUID, list[RecordedEvent]] = defaultdict(list)
    for e in events:
        grouped[e.meter_id].append(e)
    return grouped


async def parked_meters(
    conn: asyncpg.Connection, projection: str, meters: Iterable[UUID]
) -> set[UUID]:
    wanted = list(set(meters))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT meter_id FROM flowsd.projection_parked_event "
        "WHERE projection = $1 AND meter_id = ANY($2::uuid[])",
        projection,
        wanted,
    )
    return {row["meter_id"] for row in rows}


async def park(
    conn: asyncpg.Connection, projection: str, events: Sequence[RecordedEvent], error: str
) -> None:
    if not events:
        return
    await conn.execute(
        """
INSERT INTO flowsd.projection_parked_event (projection, position, meter_id, event_type, error)
SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::integer[], $5::text[])
ON CONFLICT (projection, position) DO UPDATE SET error = EXCLUDED.error
""",
        projection,
        [e.position for e in events],
        [e.meter_id for e in events],
        [type_of(e) for e in events],
        [error] * len(events),
    )
    metrics.PARKED_EVENTS.labels(projection).inc(len(events))


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:1000]


async def apply_or_park(
    conn: asyncpg.Connection, projection: Projection, events: Sequence[RecordedEvent]
) -> int:
    """Apply ``events`` inside the caller's transaction, parking the meters that fail.

    Returns the number of events parked. Errors that are not about the data propagate.
    """
    try:
        async with conn.transaction():
            await projection.apply(conn, events)
        return 0
    except Exception as exc:
        if not is_data_error(exc):
            raise
        first_error = exc
    parked = 0
    for meter, group in by_meter(events).items():
        try:
            async with conn.transaction():
                await projection.apply(conn, group)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            reason = describe(exc)
            log.error(
                "projection parked a meter's events",
                projection=projection.name,
                meter_id=str(meter),
                events=len(group),
                first_position=group[0].position,
                error=reason,
                batch_error=describe(first_error),
            )
            await park(conn, projection.name, group, reason)
            parked += len(group)
    return parked


@dataclass(frozen=True)
class RetryReport:
    applied: int
    still_parked: int


async def retry_parked(
    conn: asyncpg.Connection, projection: Projection, meter: UUID | None = None
) -> RetryReport:
    """Apply the projection's parked events again (one meter, or all), oldest first."""
    applied = still = 0
    async with conn.transaction():
        await enter_projection(conn, projection.name)
        rows = await conn.fetch(
            "SELECT position FROM flowsd.projection_parked_event "
            "WHERE projection = $1 AND ($2::uuid IS NULL OR meter_id = $2) ORDER BY position",
            projection.name,
            meter,
        )
        events = await read_positions(conn, [row["position"] for row in rows])
        for meter_id, group in by_meter(events).items():
            try:
                async with conn.transaction():
                    await projection.apply(conn, group)
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                await park(conn, projection.name, group, describe(exc))
                still += len(group)
                log.warning(
                    "parked events still fail",
                    projection=projection.name,
                    meter_id=str(meter_id),
                    error=describe(exc),
                )
                continue
            await conn.execute(
                "DELETE FROM flowsd.projection_parked_event "
                "WHERE projection = $1 AND position = ANY($2::bigint[])",
                projection.name,
                [e.position for e in group],
            )
            applied += len(group)
        # Rows whose event left the log (retention) cannot be applied any more.
        gone = {row["position"] for row in rows} - {e.position for e in events}
        if gone:
            await conn.execute(
                "DELETE FROM flowsd.projection_parked_event "
                "WHERE projection = $1 AND position = ANY($2::bigint[])",
                projection.name,
                sorted(gone),
            )
    return RetryReport(applied, still)
