"""State tables: one row per meter whose columns take the latest value the log gives them.

A subclass says which *groups* of columns each event sets (:meth:`PatchProjection.
contributions`) and mirrors that in SQL (:meth:`PatchProjection.groups_sql`). Within a group
the event with the highest position wins. A meter's change is a *patch*: the columns set by a
batch and their values; patches merge by letting later keys override earlier ones.

A rebuild needs only the last event of every (meter, group): SQL finds their positions in one
aggregate pass over the log, and the same pure function as the live path turns those few
events into patches. So the values are computed by one piece of code in both paths.

The rebuild's shadow table holds merged patches ``(id, p jsonb, updated_at)``; the live table
is brought to them by one UPDATE (in place: rows, ids, triggers, FKs and grants are untouched).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from flowsd.events.reader import read_positions
from flowsd.events.types import RecordedEvent
from flowsd.projections.base import Projection, quote

_encoder = msgspec.json.Encoder()


@dataclass
class Patch:
    """Columns set for one meter, and the newest observation time among its events."""

    values: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None

    def merge(self, later: Patch) -> None:
        self.values.update(later.values)
        if later.updated_at is not None and (
            self.updated_at is None or later.updated_at > self.updated_at
        ):
            self.updated_at = later.updated_at


class PatchProjection(Projection):
    """A per-meter state table maintained by patches."""

    windowed = False
    key = ("id",)
    #: Column -> SQL expression turning the patch's JSON text ``{}`` into the column's type.
    casts: Mapping[str, str]
    #: Whether rows carry ``updated_at`` = newest observation time (meter_shadows).
    tracks_updated_at: bool = False
    #: Whether a whole rebuild clears columns no event ever set (False: operators own them).
    reset_unset: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        extra = ("updated_at",) if self.tracks_updated_at else ()
        return self.key + self.values + extra

    @abstractmethod
    def contributions(self, event: RecordedEvent) -> dict[str, dict[str, Any]]:
        """Pure: group -> {column: value} that ``event`` sets (empty when none)."""

    @abstractmethod
    def groups_sql(self) -> str:
        """SQL text[] of the groups event ``e`` (a log row) sets: the twin of contributions."""

    def patches(self, events: Iterable[RecordedEvent]) -> dict[UUID, Patch]:
        """Pure: the merged patch of each meter, events taken in position order."""
        found: dict[UUID, Patch] = {}
        for e in sorted(events, key=lambda event: event.position):
            contributed = self.contributions(e)
            if not contributed:
                continue
            patch = found.setdefault(e.meter_id, Patch())
            for columns in contributed.values():
                patch.values.update(columns)
            if self.tracks_updated_at and (
                patch.updated_at is None or e.observed_at > patch.updated_at
            ):
                patch.updated_at = e.observed_at
        return found

    # -- live -------------------------------------------------------------------------------

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await self.write_patches(conn, self.patches(events))

    async def write_patches(self, conn: asyncpg.Connection, patches: dict[UUID, Patch]) -> None:
        if not patches:
            return
        ids = list(patches)
        await conn.execute(
            self._update_sql(),
            ids,
            [_encoder.encode(patches[i].values).decode() for i in ids],
            [patches[i].updated_at for i in ids],
        )

    def _value(self, column: str, patch: str, otherwise: str) -> str:
        cast = self.casts[column].format(f"{patch} ->> '{column}'", json=f"{patch} -> '{column}'")
        return f"CASE WHEN {patch} ? '{column}' THEN {cast} ELSE {otherwise} END"

    def _update_sql(self) -> str:
        sets = [f"{quote(c)} = {self._value(c, 'u.p', 'l.' + quote(c))}" for c in self.values]
        if self.tracks_updated_at:
            sets.append("updated_at = greatest(l.updated_at, u.updated_at)")
        changed = self._changed("l", [self._value(c, "u.p", "l." + quote(c)) for c in self.values])
        if self.tracks_updated_at:
            changed += " OR u.updated_at > l.updated_at"
        return f"""
UPDATE {self.table} AS l SET {", ".join(sets)}
FROM unnest($1::uuid[], $2::jsonb[], $3::timestamptz[]) AS u(id, p, updated_at)
WHERE l.id = u.id AND ({changed})
"""

    def _changed(self, live: str, new_values: list[str]) -> str:
        old = ", ".join(f"{live}.{quote(c)}" for c in self.values)
        return f"ROW({', '.join(new_values)}) IS DISTINCT FROM ROW({old})"

    # -- rebuild ----------------------------------------------------------------------------

    async def create_shadow(self, conn: asyncpg.Connection, shadow: str) -> None:
        await conn.execute(
            f"CREATE UNLOGGED TABLE {shadow} "
            "(id uuid PRIMARY KEY, p jsonb NOT NULL, updated_at timestamptz)"
        )

    async def build(self, conn: asyncpg.Connection, shadow: str, after: int, through: int) -> None:
        types = ", ".join(str(t) for t in sorted(self.event_types))
        rows = await conn.fetch(
            f"""
SELECT e.meter_id, max(e.position) AS position, max(e."timestamp") AS newest
FROM flows.meter_event_log e
CROSS JOIN LATERAL unnest({self.groups_sql()}) AS g(grp)
WHERE e.position > $1 AND e.position <= $2 AND e.event_type IN ({types})
GROUP BY e.meter_id, g.grp
""",
            after,
            through,
        )
        events = await read_positions(conn, sorted({row["position"] for row in rows}))
        patches = self.patches(events)
        if self.tracks_updated_at:
            # The newest observation among *all* the meter's events, not only the last ones.
            newest: dict[UUID, datetime] = {}
            for row in rows:
                meter, moment = row["meter_id"], row["newest"]
                if meter not in newest or moment > newest[meter]:
                    newest[meter] = moment
            for meter, patch in patches.items():
                patch.updated_at = newest[meter]
        if not patches:
            return
        ids = list(patches)
        await conn.execute(
            f"""
INSERT INTO {shadow} AS s (id, p, updated_at)
SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::timestamptz[])
ON CONFLICT (id) DO UPDATE
SET p = s.p || EXCLUDED.p, updated_at = greatest(s.updated_at, EXCLUDED.updated_at)
""",
            ids,
            [_encoder.encode(patches[i].values).decode() for i in ids],
            [patches[i].updated_at for i in ids],
        )

    def _rebuilt_values(self) -> list[str]:
        return [
            self._value(c, "s.p", "NULL" if self.reset_unset else "l." + quote(c))
            for c in self.values
        ]

    def shadow_rows(self, shadow: str) -> str:
        values = [
            f"{v} AS {quote(c)}" for v, c in zip(self._rebuilt_values(), self.values, strict=True)
        ]
        if self.tracks_updated_at:
            values.append("greatest(l.created_at, s.updated_at) AS updated_at")
        return f"""
SELECT l.id, {", ".join(values)}
FROM {self.table} l LEFT JOIN {shadow} s ON s.id = l.id"""

    async def swap(self, conn: asyncpg.Connection, shadow: str, *, whole: bool) -> None:
        rebuilt = self._rebuilt_values()
        sets = [f"{quote(c)} = {v}" for c, v in zip(self.values, rebuilt, strict=True)]
        changed = self._changed("l", rebuilt)
        if self.tracks_updated_at:
            sets.append("updated_at = greatest(l.created_at, s.updated_at)")
            changed += " OR l.updated_at IS DISTINCT FROM greatest(l.created_at, s.updated_at)"
        join = "LEFT JOIN" if self.reset_unset else "JOIN"
        await conn.execute(
            f"""
UPDATE {self.table} AS l SET {", ".join(sets)}
FROM {self.table} l2 {join} {shadow} s ON s.id = l2.id
WHERE l.id = l2.id AND ({changed})
"""
        )
