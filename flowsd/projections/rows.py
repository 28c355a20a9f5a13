"""Row tables: history tables where each event gives at most a few keyed rows.

:class:`KeyedRowsProjection` holds what every such table shares (upsert, shadow, swap). A
:class:`RowTableProjection` names its columns with their SQL types, a pure ``rows`` (events
plus resolved registers -> rows, each tagged with its event's position), and the SQL SELECT
that derives the same rows from a range of the log. When two events give a row with the same
key, the later position wins, in both paths: live by upserting batches in order, in a rebuild
by keeping the highest position per key.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from flowsd.events.types import RecordedEvent
from flowsd.projections.base import Projection, quote
from flowsd.projections.registers import Lookup, RegisterRef, resolve_registers

Row = tuple[int, tuple[Any, ...]]  # (position of the event that gave it, column values)


def latest_per_key(rows: Iterable[Row], key_width: int) -> list[Row]:
    """One row per key, the one with the highest position."""
    chosen: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        key = row[1][:key_width]
        if key not in chosen or chosen[key][0] < row[0]:
            chosen[key] = row
    return list(chosen.values())


class KeyedRowsProjection(Projection):
    """A history table of keyed rows: upserted live, rebuilt into a shadow and swapped in."""

    #: SQL type of each column in :attr:`columns` order, for the unnest parameters.
    sql_types: tuple[str, ...]
    #: True when the shadow never holds two rows with one key (one source type whose
    #: idempotency key covers the row key, or a build that replaces rows by key): the swap
    #: then needs no de-duplication.
    unique_by_event: bool = False

    async def upsert(
        self, conn: asyncpg.Connection, table: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """INSERT ... ON CONFLICT (key) DO UPDATE, one statement for all ``rows``."""
        columns = self.columns
        params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(self.sql_types))
        names = ", ".join(quote(c) for c in columns)
        updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in self.values)
        conflict = ", ".join(quote(c) for c in self.key)
        sql = f"""
INSERT INTO {table} ({names})
SELECT * FROM unnest({params})
ON CONFLICT ({conflict}) DO UPDATE SET {updates}
"""
        arrays = [[row[i] for row in rows] for i in range(len(columns))]
        await conn.execute(sql, *arrays)

    async def create_shadow(self, conn: asyncpg.Connection, shadow: str) -> None:
        names = ", ".join(quote(c) for c in self.columns)
        await conn.execute(
            f"CREATE UNLOGGED TABLE {shadow} AS "
            f"SELECT 0::bigint AS position, {names} FROM {self.table} WITH NO DATA"
        )

    def shadow_rows(self, shadow: str) -> str:
        names = ", ".join(quote(c) for c in self.columns)
        key = ", ".join(quote(c) for c in self.key)
        if self.unique_by_event:
            return f"SELECT {names} FROM {shadow}"
        return f"SELECT DISTINCT ON ({key}) {names} FROM {shadow} ORDER BY {key}, position DESC"

    async def lock_for_swap(self, conn: asyncpg.Connection, *, whole: bool) -> None:
        if whole:
            await lock_for_replace(conn, self.table)

    async def swap(self, conn: asyncpg.Connection, shadow: str, *, whole: bool) -> None:
        names = ", ".join(quote(c) for c in self.columns)
        if whole:
            await replace_contents(
                conn, self.table, f"INSERT INTO {self.table} ({names}) {self.shadow_rows(shadow)}"
            )
            return
        updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in self.values)
        conflict = ", ".join(quote(c) for c in self.key)
        await conn.execute(
            f"INSERT INTO {self.table} ({names}) {self.shadow_rows(shadow)} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )


class RowTableProjection(KeyedRowsProjection):
    """Rows derived event by event: a pure :meth:`rows` live, :meth:`select_sql` to rebuild."""

    def register_lookups(self, events: Sequence[RecordedEvent]) -> Iterable[Lookup]:
        """Registers the pure function needs (none unless the table is per register)."""
        return ()

    @abstractmethod
    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        """Pure: the rows ``events`` give, at most one per key (the latest)."""

    @abstractmethod
    def select_sql(self) -> str:
        """SELECT position, <columns> for events ``$1 < position <= $2`` (same rows as
        :meth:`rows`, possibly several per key)."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        registers = await resolve_registers(conn, self.register_lookups(events))
        rows = self.rows(events, registers)
        if rows:
            await self.upsert(conn, self.table, [values for _, values in rows])

    async def build(self, conn: asyncpg.Connection, shadow: str, after: int, through: int) -> None:
        names = ", ".join(quote(c) for c in self.columns)
        await conn.execute(
            f"INSERT INTO {shadow} (position, {names}) {self.select_sql()}", after, through
        )


# Keys, foreign keys and plain indexes of a table, except keys other tables' FKs rely on.
_CONSTRAINTS = """
SELECT c.conname AS name, c.contype AS kind, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
WHERE c.conrelid = $1::regclass AND c.contype IN ('f', 'u', 'p')
  AND NOT EXISTS (SELECT FROM pg_constraint r WHERE r.contype = 'f' AND r.conindid = c.conindid
                                              AND r.confrelid = c.conrelid)
ORDER BY c.contype
"""
_PLAIN_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
WHERE i.indrelid = $1::regclass
  AND NOT EXISTS (SELECT FROM pg_constraint c
                  WHERE c.conindid = i.indexrelid AND (c.conrelid = i.indrelid OR c.contype = 'f'))
"""


_PARENTS = """
SELECT DISTINCT c.confrelid::regclass::text AS parent
FROM pg_constraint c
WHERE c.conrelid = $1::regclass AND c.contype = 'f' AND c.confrelid <> c.conrelid
ORDER BY 1
"""


async def lock_for_replace(conn: asyncpg.Connection, table: str) -> None:
    """The locks :func:`replace_contents` needs, taken before anything else reads a table.

    Dropping a foreign key takes ACCESS EXCLUSIVE on the table it references as well. Had a
    swap read that parent first (resolving registers while catching up), it would hold a
    weaker lock and then wait for the strongest one: two replay lanes doing this on the
    same parent (register_import and register_export on meter_registers) each waited for
    the other, and PostgreSQL killed one. Taken here, first the table and then its parents
    in name order, the locks form one order that every swap follows, and writers too (they
    lock a history table, then its parent for the foreign-key check).
    """
    parents = [row["parent"] for row in await conn.fetch(_PARENTS, table)]
    await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    for parent in parents:
        await conn.execute(f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE")


async def replace_contents(conn: asyncpg.Connection, table: str, insert_sql: str) -> None:
    """TRUNCATE ``table`` and load it with ``insert_sql``, inside the caller's transaction.

    Its keys, foreign keys and indexes are dropped for the load and recreated after it: one
    sort per index and one join per foreign key instead of a B-tree insertion and an FK check
    per row (the FK checks alone cost several times the load). The lock TRUNCATE takes keeps
    everyone out until the commit, so nobody sees the table without them; the definitions
    come from the catalog, so names, deferrability and actions are kept as they were.
    Call :func:`lock_for_replace` first in the transaction.
    """
    await conn.execute(f"TRUNCATE {table}")
    constraints = await conn.fetch(_CONSTRAINTS, table)
    indexes = await conn.fetch(_PLAIN_INDEXES, table)
    # Foreign keys ('f') before the keys they might use; recreated in the opposite order.
    for constraint in constraints:
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(constraint['name'])}")
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    await conn.execute(insert_sql)
    for index in indexes:
        await conn.execute(index["definition"])
    for constraint in reversed(constraints):
        await conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {quote(constraint['name'])} "
            f"{constraint['definition']}"
        )


def log_range(*, types: Iterable[int]) -> str:
    """WHERE clause selecting events of ``types`` in the range ``$1 < position <= $2``."""
    listed = ", ".join(str(t) for t in sorted(types))
    return f"e.position > $1 AND e.position <= $2 AND e.event_type IN ({listed})"
