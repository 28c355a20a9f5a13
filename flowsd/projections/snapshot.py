"""Projection snapshots: a projection's rebuild state at a log position, kept in the database.

A replay rebuilds a projection into a shadow table (:mod:`flowsd.projections.rebuild`) by
adding the events of increasing position ranges; the shadow after position ``P`` depends on
the events up to ``P`` only. A snapshot keeps that shadow: ``flowsd projections snapshot``
builds it up to the log head (from the newest earlier snapshot when there is one, so each
snapshot reads only the events since the previous one) and stores it as the table
``flowsd.snapshot_<projection>_<P>``, listed in ``flowsd.projection_snapshot`` (migration
116). ``flowsd replay --from-snapshot`` and ``flowsd verify --from-snapshot`` copy the newest
snapshot into a fresh shadow and add only the events after ``P``: the same rows as a rebuild
from position 0 (the shadow a rebuild extends is exactly this state; property tests hold the
two equal), without reading the log below ``P``, which may then be detached
(``flowsd.detach_event_log_partitions``).

The history from before the log: an upgraded production database has history rows that no
event stands for. Migration 117 copies them into ``flowsd.baseline_<table>`` before any
projector runs; a rebuild from position 0 without a snapshot starts from that copy
(:func:`seed_baseline`, as from a snapshot at position 0), so a whole replay keeps them, and a
row an event gives later replaces the baseline's row with its key.

A snapshot's table has the layout of the shadow of the flowsd version that made it; a
version whose shadow differs refuses it (take a new one). Building one reads the log, not
the live table, so it neither locks nor waits for the projectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import structlog

from flowsd.errors import UserError
from flowsd.events.reader import head_position
from flowsd.projections.base import Projection, quote
from flowsd.projections.progress import Progress
from flowsd.projections.rebuild import (
    Shadow,
    build_range,
    create_shadows,
    drop_shadows,
    prepare_session,
)
from flowsd.projections.rows import KeyedRowsProjection

log = structlog.get_logger("flowsd.projections")


@dataclass(frozen=True)
class Snapshot:
    projection: str
    position: int
    table: str  # schema-qualified


class SnapshotMismatchError(UserError):
    """A snapshot's table does not have this version's shadow layout."""


async def newest_snapshot(
    conn: asyncpg.Connection, projection: str, at_most: int | None = None
) -> Snapshot | None:
    """The snapshot of ``projection`` with the highest position (not above ``at_most``)."""
    row = await conn.fetchrow(
        "SELECT position, table_name FROM flowsd.projection_snapshot "
        "WHERE projection = $1 AND ($2::bigint IS NULL OR position <= $2) "
        "ORDER BY position DESC LIMIT 1",
        projection,
        at_most,
    )
    if row is None:
        return None
    return Snapshot(projection, row["position"], f"flowsd.{row['table_name']}")


async def snapshots_for(
    conn: asyncpg.Connection, projections: Sequence[Projection], at_most: int
) -> dict[str, Snapshot]:
    """The newest snapshot of each projection not above ``at_most``; every one must have one."""
    found = {p.name: await newest_snapshot(conn, p.name, at_most) for p in projections}
    missing = [name for name, snapshot in found.items() if snapshot is None]
    if missing:
        raise UserError(
            f"no snapshot of {', '.join(missing)} at or below position {at_most}: take one "
            "with flowsd projections snapshot"
        )
    return {name: snapshot for name, snapshot in found.items() if snapshot is not None}


async def _layout(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [(r[0], r[1]) for r in rows]


async def seed_shadow(conn: asyncpg.Connection, shadow: Shadow, snapshot: Snapshot) -> None:
    """Fill the (empty) ``shadow`` with the snapshot's rows."""
    if await _layout(conn, shadow.table) != await _layout(conn, snapshot.table):
        raise SnapshotMismatchError(
            f"snapshot {snapshot.table} of {snapshot.projection} was made by a flowsd whose "
            "rebuild tables differ from this one's: take a new snapshot "
            "(flowsd projections snapshot)"
        )
    await conn.execute(f"INSERT INTO {shadow.table} SELECT * FROM {snapshot.table}")


async def seed_baseline(conn: asyncpg.Connection, shadow: Shadow) -> bool:
    """Fill the (empty) shadow of a rebuild from position 0 with the table's history from
    before the log, when migration 117 kept one; whether it did."""
    projection = shadow.projection
    if not isinstance(projection, KeyedRowsProjection):
        return False
    baseline = f"flowsd.baseline_{projection.table.split('.')[-1]}"
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", baseline):
        return False
    names = ", ".join(quote(c) for c in projection.columns)
    await conn.execute(
        f"INSERT INTO {shadow.table} (position, {names}) SELECT 0, {names} FROM {baseline}"
    )
    return True


@asynccontextmanager
async def built_shadow(
    conn: asyncpg.Connection,
    projection: Projection,
    purpose: str,
    through: int,
    progress: Progress | None = None,
    *,
    snapshot: Snapshot | None = None,
    start: int = 0,
) -> AsyncIterator[Shadow]:
    """A shadow of ``projection`` rebuilt through position ``through``, dropped on exit.

    It starts from ``snapshot`` (its rows, then the events after its position), else from
    ``start``: from position 0 with the history from before the log (:func:`seed_baseline`).
    """
    shadows = await create_shadows(conn, [projection], purpose)
    try:
        if snapshot is not None:
            await seed_shadow(conn, shadows[0], snapshot)
            start = snapshot.position
        elif start == 0:
            await seed_baseline(conn, shadows[0])
        await build_range(conn, shadows, start, through, progress)
        yield shadows[0]
    finally:
        await drop_shadows(conn, shadows)


async def take_snapshots(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    *,
    through: int | None = None,
    progress: Progress | None = None,
) -> list[Snapshot]:
    """A snapshot of each projection at ``through`` (default: the log head now)."""
    await prepare_session(conn)
    position = await head_position(conn) if through is None else through
    bases = {p.name: await newest_snapshot(conn, p.name, position) for p in projections}
    if progress is None:
        total = sum(position - (b.position if b else 0) for b in bases.values())
        progress = Progress(total, label="snapshot")
    taken = []
    for projection in projections:
        base = bases[projection.name]
        if base is not None and base.position == position:
            taken.append(base)
            continue
        # On exit the shadow is dropped: the renamed table is not it any more.
        async with built_shadow(
            conn, projection, "replay", position, progress, snapshot=base
        ) as shadow:
            name = f"snapshot_{projection.name}_{position}"
            async with conn.transaction():
                await conn.execute(f"ALTER TABLE {shadow.table} RENAME TO {name}")
                # Shadows are unlogged (a crash loses them, which is fine for a rebuild).
                await conn.execute(f"ALTER TABLE flowsd.{name} SET LOGGED")
                await conn.execute(
                    "INSERT INTO flowsd.projection_snapshot (projection, position, table_name) "
                    "VALUES ($1, $2, $3)",
                    projection.name,
                    position,
                    name,
                )
        snapshot = Snapshot(projection.name, position, f"flowsd.{name}")
        log.info("projection snapshot taken", projection=projection.name, position=position)
        taken.append(snapshot)
    progress.finish()
    return taken


async def drop_snapshots(conn: asyncpg.Connection, projection: str, below: int) -> list[str]:
    """Drop ``projection``'s snapshots below position ``below``; returns their tables."""
    dropped = []
    async with conn.transaction():
        rows = await conn.fetch(
            "DELETE FROM flowsd.projection_snapshot WHERE projection = $1 AND position < $2 "
            "RETURNING table_name",
            projection,
            below,
        )
        for row in rows:
            await conn.execute(f"DROP TABLE IF EXISTS flowsd.{row['table_name']}")
            dropped.append(f"flowsd.{row['table_name']}")
    return dropped
