"""Committing through database outages: the appender's retry loop.

:meth:`OutageRetry.commit` commits a batch with :class:`flowsd.events.log_writer.LogWriter`,
and on any of :data:`flowsd.db.errors.DATABASE_ERRORS` drops the connection, counts the failure
(by kind), reports it to :class:`~flowsd.db.availability.DatabaseAvailability` and retries with
the shared backoff (:mod:`flowsd.backoff`), woken early when another component finds the
database back. While it waits it keeps taking events from the queue into memory, so producers
go on; beyond ``memory_max_events`` it spills memory to the journal. If the journal cannot be
written either, it leaves events in the queue (producers wait) and tries the disk once per
retry period. Stopping during an outage spills everything instead of retrying.

The batch being committed comes from memory or from the journal. If memory was spilled while
a batch from memory was waiting, that batch is now in the journal: :class:`SpilledSignal`
tells the caller so. :class:`StoppedSignal` says the appender is stopping and nothing is
left to commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

import structlog

from flowsd.backoff import Backoff, Retry
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.errors import DATABASE_ERRORS, describe
from flowsd.events.backlog import Backlog
from flowsd.events.log_writer import LogWriter
from flowsd.events.metrics import APPEND_ERROR_KINDS, AppendErrorKind, append_error_kind
from flowsd.events.spillover import Spillover
from flowsd.events.store import AppendResult
from flowsd.events.types import Event

Source = Literal["memory", "journal"]

log = structlog.get_logger("flowsd.events.appender")

_ABSORB_POLL_SECONDS = 0.1
_STOPPED_IN_OUTAGE = "stopping while the database is unreachable"


class StoppedSignal(Exception):  # noqa: N818 (control flow, not an error)
    """Stop was requested and everything is committed or spilled."""


class SpilledSignal(Exception):  # noqa: N818 (control flow, not an error)
    """The in-flight memory batch moved to the journal while the database was away."""


@dataclass(eq=False)
class OutageRetry:
    """Commits a batch, retrying until it is in, spilling while the database is away."""

    writer: LogWriter
    backlog: Backlog
    spillover: Spillover
    _: KW_ONLY
    backoff: Backoff
    availability: DatabaseAvailability
    memory_max_events: int
    stopping: asyncio.Event
    database_up: bool = field(default=True, init=False)  # until an append fails
    # What flowsd_appender_database_up says: 0 until one works.
    last_attempt_ok: bool = field(default=False, init=False)
    failures: int = field(default=0, init=False)  # failed commit attempts
    failures_by_kind: dict[AppendErrorKind, int] = field(
        default_factory=lambda: dict.fromkeys(APPEND_ERROR_KINDS, 0), init=False
    )

    async def commit(self, batch: list[Event], source: Source) -> list[AppendResult]:
        """Commit ``batch``, retrying until it is in (or, from memory, moved to the journal:
        :class:`SpilledSignal`)."""
        retry = Retry(self.backoff)
        while True:
            if self.stopping.is_set() and not self.database_up:
                # Stopping during an outage: no more attempts, everything goes to the journal.
                spilled = await self.spillover.spill_everything(_STOPPED_IN_OUTAGE)
                if spilled and source == "memory":
                    raise SpilledSignal
                if self.backlog.is_empty():
                    raise StoppedSignal
            try:
                results = await self.writer.commit(batch)
                self.database_up = self.last_attempt_ok = True
                self.availability.succeeded("appender")
                return results
            except DATABASE_ERRORS as exc:
                self.database_up = self.last_attempt_ok = False
                self.failures += 1
                self.failures_by_kind[append_error_kind(exc)] += 1
                self.availability.failed("appender", exc)
                delay = retry.next_delay()
                log.warning(
                    "append failed; retrying",
                    error=describe(exc),
                    retry_in_seconds=round(delay, 3),
                    events=len(batch),
                    source=source,
                )
                await self.writer.drop_connection()
            spilled = await self._wait_absorbing(delay)
            if spilled and source == "memory":
                raise SpilledSignal
            if self.stopping.is_set() and self.backlog.is_empty():
                raise StoppedSignal

    async def _wait_absorbing(self, seconds: float) -> bool:
        """Wait ``seconds`` (less once the database is reported back) while taking events
        from the queue; True if memory was spilled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        bound = self.memory_max_events
        memory = self.backlog.memory
        spilled = False
        recoveries = self.availability.recoveries
        while True:
            if self.stopping.is_set():
                return await self.spillover.spill_everything(_STOPPED_IN_OUTAGE) or spilled
            remaining = deadline - loop.time()
            if remaining <= 0 or self.availability.recoveries != recoveries:
                return spilled
            if self.spillover.blocked and len(memory) >= bound:
                # Disk full too: leave events in the queue so producers wait; retry the disk
                # once per retry period.
                await asyncio.sleep(min(remaining, _ABSORB_POLL_SECONDS))
                if remaining <= _ABSORB_POLL_SECONDS:
                    spilled = await self.spillover.spill_memory() or spilled
                continue
            await self.backlog.absorb(min(remaining, _ABSORB_POLL_SECONDS), bound)
            if len(memory) > bound:
                spilled = await self.spillover.spill_memory() or spilled
