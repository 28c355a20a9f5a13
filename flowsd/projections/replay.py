"""``flowsd replay``: rebuild projections from the log and swap them in atomically.

1. Note the head ``H1`` and build every chosen projection into a shadow table from the start
   position (0, or ``--from-position`` / ``--since`` for the time-series tables) to ``H1``,
   while the live projectors keep running.
2. Then, per projection, one short transaction holding the projection's lock (its live
   projector waits only for this): extend the shadow to the current head ``H2``, replace the
   live rows, move the checkpoint to ``H2``, and forget parked events the rebuild applied.

Swap strategy: the live table is kept and its *contents* are replaced inside that transaction
(TRUNCATE + INSERT from the shadow for history tables, with the table's own keys, FKs and
indexes dropped for the load and recreated from their catalog definitions before the commit;
one UPDATE for the per-meter tables).
Renaming the shadow into place would be quicker for huge tables, but views (the circuit views,
the offline views) and TimescaleDB continuous aggregates are bound to the table's identity,
hypertables cannot be swapped by rename, and FKs, grants, comments, indexes and triggers would
all have to be recreated. TRUNCATE is transactional: readers either wait for the swap's commit
or see the old rows, never a half-built table. ``meter_registry`` and ``meter_shadows`` are
updated in place (operators' columns and rows are never touched). A windowed replay merges the
rebuilt rows over the live ones (upsert) instead of replacing the table.

A whole replay alters the history tables' constraints and indexes, so it runs as their owner.

``from_snapshot``: each projection's shadow starts as a copy of its newest snapshot
(:mod:`flowsd.projections.snapshot`) at position ``P`` and only the events after ``P`` are
read; the result replaces the whole table, as a replay from position 0 does. A replay from
position 0 starts from the history that pre-dates the log, where migration 117 kept one
(:func:`flowsd.projections.snapshot.seed_baseline`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import anyio
import asyncpg
import structlog

from flowsd.db.connect import close_quietly
from flowsd.events.checkpoints import read_checkpoint
from flowsd.events.reader import head_position
from flowsd.projections.base import Projection
from flowsd.projections.parking import enter_projection
from flowsd.projections.progress import Progress
from flowsd.projections.rebuild import Shadow, build_range, prepare_session
from flowsd.projections.snapshot import Snapshot, built_shadow, snapshots_for

log = structlog.get_logger("flowsd.projections")

Connect = Callable[[], Awaitable[asyncpg.Connection]]
# Relative rebuild cost, for ordering work across lanes.
_WEIGHT = {
    "register_interval_hh": 8,
    "meter_shadows": 2,
    "meter_prepay_balance": 2,
    "meter_voltage": 2,
    "meter_csq": 2,
}

# Swap transactions ended by a deadlock with another session are tried this many times.
SWAP_ATTEMPTS = 3

CONTINUOUS_AGGREGATES = (
    "flows.circuit_interval_hh_agg",
    "flows.circuit_interval_daily_agg",
    "flows.circuit_interval_monthly_agg",
)


@dataclass(frozen=True)
class ReplayReport:
    projections: tuple[str, ...]
    events: int  # log positions rebuilt (per projection)
    checkpoint: dict[str, int]
    seconds: float


async def position_since(conn: asyncpg.Connection, since: datetime) -> int:
    """The last position recorded before ``since`` (replays start after it)."""
    found: int | None = await conn.fetchval(
        "SELECT min(position) - 1 FROM flows.meter_event_log WHERE recorded_at >= $1", since
    )
    if found is None:
        return await head_position(conn)
    return found


async def replay(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    *,
    from_position: int = 0,
    progress_label: str = "replay",
    progress: Progress | None = None,
    connect: Connect | None = None,
    workers: int = 1,
    from_snapshot: bool = False,
) -> ReplayReport:
    """Rebuild ``projections`` and swap them in; ``from_position`` > 0 rebuilds a window.

    With ``connect`` and ``workers`` > 1, that many projections are rebuilt at once, each on
    its own connection (the server does the work: one lane per core is the useful maximum).
    """
    head = await head_position(conn)
    starts = {p.name: (from_position if p.windowed else 0) for p in projections}
    snapshots: dict[str, Snapshot] = {}
    if from_snapshot:
        snapshots = await snapshots_for(conn, projections, head)
        starts = {name: snapshot.position for name, snapshot in snapshots.items()}
    total = sum(max(head - starts[p.name], 0) for p in projections)
    progress = progress or Progress(total, label=progress_label)
    # The costliest first, so that the lanes finish together.
    pending = sorted(projections, key=lambda p: -_WEIGHT.get(p.name, 1))
    checkpoints: dict[str, int] = {}

    async def lane(lane_conn: asyncpg.Connection) -> None:
        await prepare_session(lane_conn)
        while pending:
            projection = pending.pop(0)
            start = starts[projection.name]
            snapshot = snapshots.get(projection.name)
            async with built_shadow(
                lane_conn, projection, "replay", head, progress, snapshot=snapshot, start=start
            ) as shadow:
                progress.set_phase(f"swap {projection.name}")
                checkpoints[projection.name] = await _swap(
                    lane_conn, shadow, start, head, whole=start == 0 or snapshot is not None
                )

    extra = [await connect() for _ in range(max(workers, 1) - 1)] if connect else []
    try:
        async with anyio.create_task_group() as group:
            for lane_conn in [conn, *extra]:
                group.start_soon(lane, lane_conn)
    finally:
        for lane_conn in extra:
            await close_quietly(lane_conn)
    progress.finish()
    if any(p.name == "register_interval_hh" for p in projections):
        await _refresh_continuous_aggregates(conn)
    return ReplayReport(tuple(p.name for p in projections), head, checkpoints, progress.elapsed)


async def _swap(
    conn: asyncpg.Connection, shadow: Shadow, start: int, built_to: int, *, whole: bool
) -> int:
    """The swap transaction, tried again (whole) if PostgreSQL ends it to break a deadlock.

    Lanes cannot deadlock with each other (see :meth:`Projection.lock_for_swap`), but a
    session outside flowsd that holds a projection's parent table and waits for the
    projection's table can; the swap is all or nothing, so trying it again is safe.
    """
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            return await _swap_once(conn, shadow, start, built_to, whole=whole)
        except asyncpg.DeadlockDetectedError as exc:
            if attempt == SWAP_ATTEMPTS:
                raise
            log.warning(
                "swap ended by a deadlock; trying again",
                projection=shadow.projection.name,
                attempt=attempt,
                detail=str(exc),
            )
    raise AssertionError("unreachable")


async def _swap_once(
    conn: asyncpg.Connection, shadow: Shadow, start: int, built_to: int, *, whole: bool
) -> int:
    """``whole``: the shadow holds every row (built from position 0 or from a snapshot)."""
    projection = shadow.projection
    async with conn.transaction():
        await enter_projection(conn, projection.name)
        # Before the catch-up reads any table: see Projection.lock_for_swap.
        await projection.lock_for_swap(conn, whole=whole)
        head = await head_position(conn)
        await build_range(conn, [shadow], built_to, head)
        live_checkpoint = await read_checkpoint(conn, projection.name)
        await projection.swap(conn, shadow.table, whole=whole)
        # A window that starts beyond the live checkpoint leaves events before it to the
        # live projector (re-applying them is idempotent).
        checkpoint = head if whole or start <= live_checkpoint else live_checkpoint
        await conn.execute(
            """
INSERT INTO flowsd.projector_checkpoint (name, position) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
""",
            projection.name,
            checkpoint,
        )
        await conn.execute(
            "DELETE FROM flowsd.projection_parked_event "
            "WHERE projection = $1 AND position > $2 AND position <= $3",
            projection.name,
            0 if whole else start,
            head,
        )
    log.info("projection replayed", projection=projection.name, checkpoint=checkpoint)
    return checkpoint


async def _refresh_continuous_aggregates(conn: asyncpg.Connection) -> None:
    """TimescaleDB only: re-materialise the circuit aggregates after their source changed."""
    for name in CONTINUOUS_AGGREGATES:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        if exists:
            await conn.execute(f"CALL refresh_continuous_aggregate('{name}', NULL, NULL)")
