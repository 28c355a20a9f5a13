"""Parked events: what a projector could not apply, kept per meter until retried.

When applying a batch fails on data (an SQL data or integrity error, the pure function
rejecting an event, or a stored payload this version cannot decode), the projector retries
meter by meter; the events of the meters that still fail are parked
(``flowsd.projection_parked_event``) and logged, and the checkpoint moves on for everyone
else (the projector task counts the parked events from the batch's outcome). Every later
event of a parked meter is parked too, so that a meter's events are always applied in order.
:func:`retry_parked` applies them again (after the cause is fixed), oldest first, meter by
meter.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import msgspec
import structlog

from flowsd.db.meter_names import serials_of
from flowsd.events.codec import decode_payload
from flowsd.events.reader import read_positions
from flowsd.events.types import RecordedEvent, UnknownBody, body_class_for
from flowsd.projections.base import Projection, ProjectionError, stored_type

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
    """First statement of every transaction that writes a projection's table.

    Takes the projection's lock (held to commit), marks the session as a projector so that
    ``meter_shadows.updated_at`` keeps the observation time, and checks foreign keys per
    statement, so that a bad row fails where a savepoint can catch it.
    """
    await conn.execute(
        f"SELECT pg_advisory_xact_lock({lock_key(projection)}), "
        "set_config('flowsd.projector', 'on', true); SET CONSTRAINTS ALL IMMEDIATE"
    )


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
    conn: asyncpg.Connection, projection: str, events: Sequence[RecordedEvent], reason: str
) -> None:
    """Park ``events`` (one meter's, or held behind parked ones): stored and logged (the
    projector counts them once their transaction has committed)."""
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
        [stored_type(e) for e in events],
        [reason] * len(events),
    )
    grouped = by_meter(events)
    serials = await serials_of(conn, grouped)
    for meter_id, group in grouped.items():
        log.error(
            "projection parked events",
            projection=projection,
            meter_serial=serials[meter_id],
            meter_id=str(meter_id),
            events=len(group),
            first_position=group[0].position,
            reason=reason,
        )


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:1000]


def undecodable(projection: Projection, event: RecordedEvent) -> str | None:
    """Why the stored payload of an event ``projection`` reads does not decode, if it does not.

    The reader turns such a row into an :class:`UnknownBody`, which a projection would pass
    over without a trace; it must be parked instead, until a flowsd that reads it is running.
    """
    body = event.body
    if not isinstance(body, UnknownBody) or body.type_id not in projection.event_types:
        return None
    cls = body_class_for(body.type_id)
    if body.payload is None or cls is None:
        return f"event type {body.type_id} has no payload"
    try:
        decode_payload(cls, body.payload.decode(errors="replace"))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"payload of event type {body.type_id} does not decode: {describe(exc)}"
    return f"event type {body.type_id} has no payload"


async def _try_apply(
    conn: asyncpg.Connection, projection: Projection, events: Sequence[RecordedEvent]
) -> str | None:
    """Apply ``events`` in a savepoint; the reason they cannot be applied, or None."""
    for event in events:
        reason = undecodable(projection, event)
        if reason is not None:
            return f"position {event.position}: {reason}"
    try:
        async with conn.transaction():
            await projection.apply(conn, events)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        return describe(exc)
    return None


async def apply_or_park(
    conn: asyncpg.Connection, projection: Projection, events: Sequence[RecordedEvent]
) -> int:
    """Apply ``events`` inside the caller's transaction, parking the meters that fail.

    Returns the number of events parked. Errors that are not about the data propagate.
    """
    if await _try_apply(conn, projection, events) is None:
        return 0
    parked = 0
    for group in by_meter(events).values():
        reason = await _try_apply(conn, projection, group)
        if reason is not None:
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
            positions = [e.position for e in group]
            reason = await _try_apply(conn, projection, group)
            if reason is None:
                await conn.execute(
                    "DELETE FROM flowsd.projection_parked_event "
                    "WHERE projection = $1 AND position = ANY($2::bigint[])",
                    projection.name,
                    positions,
                )
                applied += len(group)
                continue
            # Already parked and counted: only the reason is brought up to date.
            await conn.execute(
                "UPDATE flowsd.projection_parked_event SET error = $3 "
                "WHERE projection = $1 AND position = ANY($2::bigint[])",
                projection.name,
                positions,
                reason,
            )
            still += len(group)
            log.warning(
                "parked events still fail",
                projection=projection.name,
                meter_serial=(await serials_of(conn, [meter_id]))[meter_id],
                meter_id=str(meter_id),
                events=len(group),
                reason=reason,
            )
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
