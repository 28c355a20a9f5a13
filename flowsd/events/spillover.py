"""The appender's use of the spill journal (:class:`flowsd.events.spill.SpillJournal`).

Writes the backlog's memory (and, on stop or failure, its queue too) to the journal, fsync'd,
and frees the memory, logging why (``<reason>: events spilled to disk``: the database
unreachable, a stop during an outage, the appender task failed or cancelled, ...); drains
the oldest segment through a commit function and then removes it. A write that fails (disk
full, I/O error) leaves the events in memory; it, or a journal that cannot be scanned at
start, marks the spillover ``blocked`` (``flowsd_spill_disk_full``) until a write succeeds
or commits have brought memory below ``memory_max_events`` again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from flowsd.events.backlog import Backlog
from flowsd.events.spill import SpillDirectoryInUseError, SpillJournal
from flowsd.events.types import Event

log = structlog.get_logger("flowsd.events.appender")

DATABASE_UNREACHABLE = "database unreachable"


class Spillover:
    """Moves the backlog's memory to the journal and drains the journal, oldest first."""

    def __init__(self, journal: SpillJournal, backlog: Backlog) -> None:
        self.journal = journal
        self._backlog = backlog
        self.blocked = False  # the journal cannot be written now (or could not be scanned)
        self.spilled = 0  # events written to the journal (a drained one may count twice)
        self.write_errors = 0  # failed journal writes
        self.drained_segments = 0  # segments committed and removed

    async def scan(self) -> int:
        """Open the journal left by earlier runs; the events it holds. An unreadable journal
        blocks spilling (appends can still work) rather than stopping the appender; another
        process using the directory raises :class:`SpillDirectoryInUseError`."""
        try:
            return await asyncio.to_thread(self.journal.scan)
        except SpillDirectoryInUseError:
            raise
        except OSError as exc:
            self.blocked = True
            log.error(
                "spill journal unavailable",
                error=str(exc),
                directory=str(self.journal.directory),
            )
            return 0

    def memory_drained(self, memory_max_events: int) -> None:
        """After a commit from memory: once memory is below its bound again, the backlog the
        disk could not take is draining into the database, and spilling is no longer blocked."""
        if self.blocked and len(self._backlog.memory) < memory_max_events:
            self.blocked = False

    async def spill_everything(self, reason: str, **details: object) -> bool:
        """Queue and memory to the journal (on stop or failure while uncommitted); True if
        anything was written. ``reason`` (and ``details``) say why in the log line."""
        self._backlog.move_queue_to_memory()
        return await self.spill_memory(reason, **details)

    async def spill_memory(self, reason: str = DATABASE_UNREACHABLE, **details: object) -> bool:
        """Memory to the journal; True if anything was written. On a write failure the events
        stay in memory and spilling is blocked."""
        memory = self._backlog.memory
        if not memory:
            return False
        events = list(memory)
        try:
            await asyncio.to_thread(self.journal.write, events)
        except OSError as exc:
            self.blocked = True
            self.write_errors += 1
            log.error(
                "cannot write the spill journal: events held in memory, producers paused",
                error=str(exc),
                events_in_memory=len(events),
                directory=str(self.journal.directory),
            )
            return False
        self.blocked = False
        self.spilled += len(events)
        memory.clear()
        log.warning(f"{reason}: events spilled to disk", events=len(events), **details)
        return True

    async def drain_oldest_segment(
        self, commit: Callable[[list[Event]], Awaitable[None]], batch_max: int
    ) -> None:
        """Commit the oldest segment's events with ``commit``, ``batch_max`` at a time and in
        order, then remove the segment (a segment still being written is sealed first)."""
        segment = self.journal.oldest_segment()
        if self.journal.is_being_written(segment):
            self.journal.seal()
        events = await asyncio.to_thread(self.journal.read, segment)
        for start in range(0, len(events), batch_max):
            await commit(events[start : start + batch_max])
        await asyncio.to_thread(self.journal.remove, segment)
        self.drained_segments += 1
        log.info("spill segment committed", segment=segment.name, events=len(events))
