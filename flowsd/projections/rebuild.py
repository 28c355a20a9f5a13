"""Rebuilding projections from the log into shadow tables (shared by replay and verify).

A rebuild reads the log with set-based SQL per position range (no Python per event, except
the few last-per-group events of the state tables), into unlogged shadow tables in schema
``flowsd``. Row tables are built in position chunks, so progress can be shown and each chunk
of the log is read while still cached; the interval table and the state tables need one pass
over the whole range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from flowsd.projections.base import Projection
from flowsd.projections.progress import Progress
from flowsd.projections.registers import prepare_candidates
from flowsd.projections.rows import RowTableProjection

log = structlog.get_logger("flowsd.projections")

CHUNK_EVENTS = 1_000_000
# Sorting and hashing millions of rows in memory instead of in temporary files.
# A replay's commit need not wait for its WAL flush: a crash loses the whole swap (rows and
# checkpoint together, one transaction), never half of it.
SESSION_SETTINGS = (
    "SET work_mem = '256MB'",
    "SET maintenance_work_mem = '512MB'",
    "SET synchronous_commit = off",
)


@dataclass(frozen=True)
class Shadow:
    projection: Projection
    table: str


# Shadows carry the backend pid of the connection that builds them, so a shadow whose backend
# is gone (a replay or verify killed, or its server lost part-way) is recognisably orphaned.
_ORPHANED_SHADOWS = """
SELECT c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'flowsd' AND c.relkind = 'r'
  AND c.relname ~ '^(replay|verify)_[0-9]+_'
  AND NOT EXISTS (
      SELECT 1 FROM pg_stat_activity a
      WHERE a.pid = substring(c.relname FROM '^[a-z]+_([0-9]+)_')::int
  )
ORDER BY c.relname
"""


def shadow_name(projection: Projection, purpose: str, backend_pid: int) -> str:
    return f"flowsd.{purpose}_{backend_pid}_{projection.name}"


async def drop_orphaned_shadows(conn: asyncpg.Connection) -> list[str]:
    """Drop shadow tables left by a replay or verify whose database session has ended.

    Returns the names dropped. A table another role owns is left (and logged), not fatal.
    """
    dropped = []
    for row in await conn.fetch(_ORPHANED_SHADOWS):
        name = row["relname"]
        try:
            await conn.execute(f'DROP TABLE IF EXISTS flowsd."{name}"')
        except asyncpg.InsufficientPrivilegeError as exc:
            log.warning(
                "orphaned shadow table left in place", table=f"flowsd.{name}", error=str(exc)
            )
            continue
        log.info("orphaned shadow table dropped", table=f"flowsd.{name}")
        dropped.append(f"flowsd.{name}")
    return dropped


async def prepare_session(conn: asyncpg.Connection) -> None:
    for statement in SESSION_SETTINGS:
        await conn.execute(statement)


async def create_shadows(
    conn: asyncpg.Connection, projections: Sequence[Projection], purpose: str
) -> list[Shadow]:
    await drop_orphaned_shadows(conn)
    backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
    shadows = []
    for projection in projections:
        table = shadow_name(projection, purpose, backend_pid)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await projection.create_shadow(conn, table)
        shadows.append(Shadow(projection, table))
    return shadows


async def drop_shadows(conn: asyncpg.Connection, shadows: Sequence[Shadow]) -> None:
    for shadow in shadows:
        await conn.execute(f"DROP TABLE IF EXISTS {shadow.table}")


async def build_range(
    conn: asyncpg.Connection,
    shadows: Sequence[Shadow],
    after: int,
    through: int,
    progress: Progress | None = None,
) -> None:
    """Add the events ``after < position <= through`` to every shadow."""
    span = max(through - after, 0)
    if span == 0:
        return
    if any(s.projection.needs_registers for s in shadows):
        await prepare_candidates(conn)
    row_tables = [s for s in shadows if isinstance(s.projection, RowTableProjection)]
    others = [s for s in shadows if not isinstance(s.projection, RowTableProjection)]
    low = after
    while low < through:
        high = min(low + CHUNK_EVENTS, through)
        for shadow in row_tables:
            await shadow.projection.build(conn, shadow.table, low, high)
            if progress is not None:
                progress.advance(high - low, shadow.projection.name)
        low = high
    for shadow in others:
        if progress is not None:
            progress.set_phase(shadow.projection.name)
        await shadow.projection.build(conn, shadow.table, after, through)
        if progress is not None:
            progress.advance(span, shadow.projection.name)
