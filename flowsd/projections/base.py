"""What every projection provides: a live apply step and a rebuild into a shadow table.

A projection owns one table. Live, :meth:`Projection.apply` turns a batch of committed events
into row changes with a pure function and writes them with set-based SQL, inside the
projector's transaction (the caller moves the checkpoint in the same transaction). For a
rebuild (``flowsd replay`` / ``flowsd verify``), :meth:`Projection.build` derives the same
rows straight from the log with one set-based statement per position range, into a shadow
table made by :meth:`Projection.create_shadow`; :meth:`Projection.swap` then replaces the live
rows with the shadow's. The property tests and ``flowsd verify`` hold the two paths equal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache

import asyncpg

from flowsd.events.types import (
    BODY_CLASSES,
    NATIVE_TYPE_ID_MAX,
    EventBody,
    MeterLogEntry,
    RecordedEvent,
    UnknownBody,
)


class Projection(ABC):
    """One read table derived from the event log."""

    #: Name used on the command line, in checkpoints, metrics and parked events.
    name: str
    #: The live table, schema-qualified.
    table: str
    #: Key columns, then the projected value columns (what ``verify`` compares).
    key: tuple[str, ...]
    values: tuple[str, ...]
    #: Event type ids the projection reads; batches without any are only checkpointed.
    event_types: frozenset[int]
    #: False when a rebuild must always start from position 0 (state tables).
    windowed: bool = True
    #: True when rows are per register: a rebuild first prepares the register segments.
    needs_registers: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.values

    @abstractmethod
    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply ``events`` (committed, in position order) to the live table."""

    @abstractmethod
    async def create_shadow(self, conn: asyncpg.Connection, shadow: str) -> None:
        """Create the empty shadow table ``shadow`` (schema-qualified) for a rebuild."""

    @abstractmethod
    async def build(self, conn: asyncpg.Connection, shadow: str, after: int, through: int) -> None:
        """Add the effect of events ``after < position <= through`` to ``shadow``.

        Called with increasing, adjacent ranges (by :func:`flowsd.projections.rebuild.
        build_range`, which prepares the register segments first); the first call of a full
        rebuild has ``after = 0``.
        """

    @abstractmethod
    def shadow_rows(self, shadow: str) -> str:
        """A SELECT of ``columns`` giving the rows the live table should hold."""

    async def lock_for_swap(self, conn: asyncpg.Connection, *, whole: bool) -> None:
        """Take every table lock :meth:`swap` will need, first thing in the swap's transaction.

        Nothing by default (row changes only); a swap that alters tables locks them here, in
        a fixed order, so that it never waits for a stronger lock on a table it already holds.
        """
        return None

    @abstractmethod
    async def swap(self, conn: asyncpg.Connection, shadow: str, *, whole: bool) -> None:
        """Make the live table hold the shadow's rows, inside the caller's transaction.

        ``whole``: the shadow was built from position 0 and replaces every row; otherwise it
        holds rows from a window of the log, which overwrite the live rows with their keys.
        """

    def compare_sql(self, live: str, shadow: str) -> str:
        """Rows only in the live table (side 'live') or only in the rebuild ('rebuilt')."""
        cols = ", ".join(quote(c) for c in self.columns)
        rebuilt = self.shadow_rows(shadow)
        return f"""
(SELECT 'live' AS side, {cols} FROM (SELECT {cols} FROM {live}
                                     EXCEPT ALL SELECT {cols} FROM ({rebuilt}) r) d)
UNION ALL
(SELECT 'rebuilt' AS side, {cols} FROM (SELECT {cols} FROM ({rebuilt}) r
                                        EXCEPT ALL SELECT {cols} FROM {live}) d)
ORDER BY 2, 1
"""


def quote(identifier: str) -> str:
    """A column name as SQL (quoted when it needs to be, e.g. ``"timestamp"``)."""
    if identifier.isidentifier() and identifier.islower() and identifier != "timestamp":
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def type_of(event: RecordedEvent) -> int:
    """The event's type id; 0 for a body this version cannot decode (never projected)."""
    body = event.body
    return 0 if isinstance(body, UnknownBody) else body.type_id()


def stored_type(event: RecordedEvent) -> int:
    """The ``event_type`` the log holds, also for a body that did not decode."""
    body = event.body
    return body.type_id if isinstance(body, UnknownBody) else body.type_id()


def events_in_range(
    events: Sequence[RecordedEvent], wanted: frozenset[int], *, after: int, through: int
) -> tuple[list[RecordedEvent], int]:
    """The events of positions ``(after, through]`` whose stored type is in ``wanted``, and
    how many events that range holds in all.

    Every projector filters every batch, so the test is a set lookup of the body's class,
    calling :func:`stored_type` only for bodies whose class does not fix their type id.
    """
    fixed, varying = _classes_of(wanted)
    relevant: list[RecordedEvent] = []
    covered = 0
    for event in events:
        if after < event.position <= through:
            covered += 1
            cls = type(event.body)
            if cls in fixed or (cls in varying and stored_type(event) in wanted):
                relevant.append(event)
    return relevant, covered


@lru_cache(maxsize=64)
def _classes_of(wanted: frozenset[int]) -> tuple[frozenset[type], frozenset[type]]:
    """Body classes whose every event is wanted, and those whose events must be asked."""
    fixed: set[type[EventBody]] = {
        cls for cls in BODY_CLASSES if cls is not MeterLogEntry and cls.TYPE_ID in wanted
    }
    varying: set[type] = {UnknownBody}
    if any(0 < type_id <= NATIVE_TYPE_ID_MAX for type_id in wanted):
        varying.add(MeterLogEntry)
    return frozenset(fixed), frozenset(varying)


class ProjectionError(Exception):
    """An event the projection cannot apply (the runner parks the meter's events)."""
