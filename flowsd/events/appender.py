"""The appender: one task that group-commits accepted events to the event log.

Producers call :meth:`Appender.append`; it waits while the bounded queue is full
(back-pressure on the meter sessions, nothing dropped). The appender task takes events from the
queue into memory and commits them in batches of up to ``batch_max`` events, or whatever
arrived within ``flush_interval_seconds`` of a batch's first event, one serialised transaction
per batch (:func:`flowsd.events.store.append_batch`). Each committed batch, with its positions,
is handed to subscribers in memory and announced to other processes with one NOTIFY.

Where accepted events are, oldest first: spill journal segments, then memory, then the queue.
They are committed in that order, so the log keeps acceptance order.

When the database is unusable (any of :data:`flowsd.db.errors.DATABASE_ERRORS`: unreachable,
restarting, the connection terminated or left in a state asyncpg refuses, a statement timeout)
the appender drops its connection, retries with the shared backoff (:mod:`flowsd.backoff`),
woken early when another component finds the database back
(:class:`~flowsd.db.availability.DatabaseAvailability`), and keeps taking events from the
queue; beyond ``memory_max_events`` in memory it writes them all to the spill journal (fsync'd)
and frees the memory. The journal is drained before anything newer, as soon as the database
answers again, and also by the next process after a restart. If the journal cannot be
written (disk full), the events stay in memory, ``flowsd_spill_disk_full`` is raised and the
appender stops taking from the queue, so producers wait: an alarm, never a silent loss.
On :meth:`stop` everything still in memory or in the queue is committed, or spilled if the
database is unreachable. If :meth:`run` fails for any other reason, it spills what it holds
before the exception leaves it, and can be run again (the daemon's supervisor restarts it):
it picks up the journal and its memory where they are.

Fencing: when the daemon shares the fleet (:mod:`flowsd.meters.ownership`), :attr:`Appender.epochs`
is the lease epoch it holds (or last held) for each meter, and every batch is appended with
it: events of meters whose lease has passed to another daemon are refused by the database
in the append's transaction, logged, counted in ``flowsd_fenced_writes_total`` and dropped
(the new holder reads the meter again from where the log stops).

Events the database refuses on their own merits (SQLSTATE classes 22 and 23, e.g. an unknown
``meter_id``) are found by halving the refused batch; the ones still refused alone are stored
whole in ``flowsd.rejected_event`` and counted, and the rest commit, in order.

What a SIGKILL can lose: events in the queue or in memory that were neither committed nor
spilled. Meters are re-read, and the idempotency keys make re-reading safe.

:class:`Appender` is the loop and the public face; the work is done by
:class:`~flowsd.events.backlog.Backlog` (queue and memory),
:class:`~flowsd.events.log_writer.LogWriter` (connection, commits, rejections),
:class:`~flowsd.events.outage.OutageRetry` (retrying, absorbing and spilling while the database
is away) and :class:`~flowsd.events.spillover.Spillover` (the journal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from uuid import UUID

import anyio
import msgspec
import structlog

from flowsd.backoff import Backoff
from flowsd.config import AppenderConfig, Config
from flowsd.db.availability import DatabaseAvailability
from flowsd.events.backlog import Backlog
from flowsd.events.log_writer import Connect, LogWriter
from flowsd.events.metrics import AppendErrorKind
from flowsd.events.outage import OutageRetry, SpilledSignal, StoppedSignal
from flowsd.events.spill import SpillJournal
from flowsd.events.spillover import Spillover
from flowsd.events.subscriptions import Listener, SubscriberHub, Subscription
from flowsd.events.types import Event

__all__ = ["Appender", "AppenderClosedError", "AppenderStatistics", "Connect"]

log = structlog.get_logger("flowsd.events.appender")


class AppenderClosedError(RuntimeError):
    """``append`` after ``stop``."""


class AppenderStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What the appender did since it was created (this process)."""

    accepted: int  # events taken by append()/append_nowait()
    committed: int  # new events written to the log
    duplicates: int  # events the log already held (same idempotency key)
    rejected: int  # events the database refused on their own merits
    fenced: int  # events refused because their meter's lease had moved to another daemon
    spilled: int  # events written to the spill journal (a drained one may count twice)
    drained_segments: int  # journal segments committed and removed
    spill_write_errors: int  # failed journal writes (disk full): events kept in memory
    spill_blocked: bool  # the journal cannot be written now; producers wait when memory is full
    queued: int
    in_memory: int
    pending_in_journal: int
    database_failures: int  # failed commit attempts
    database_failures_by_kind: dict[AppendErrorKind, int]  # the same, by kind
    database_up: bool  # the last database operation succeeded (False before the first)
    head_position: int  # the last committed batch's through_position (0 before the first)
    journal_bytes: int  # size of the spill journal's segments
    journal_corrupt_records: int  # spill records or segments that failed their checks
    subscriber_dropped_batches: int  # batches not handed to a subscriber whose buffer was full
    running: bool


class Appender:
    """Accepts events and commits them in order; run :meth:`run` as one task."""

    def __init__(
        self,
        connect: Connect,
        *,
        config: AppenderConfig,
        spill_directory: Path,
        reconnect_initial_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        connect_timeout_seconds: float = 10.0,
        availability: DatabaseAvailability | None = None,
    ) -> None:
        self._config = config
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._closed = False
        self._running = False
        self._backlog = Backlog(config.queue_size)
        self._spillover = Spillover(
            SpillJournal(spill_directory, segment_max_bytes=config.spill_segment_max_bytes),
            self._backlog,
        )
        self._writer = LogWriter(connect, config, connect_timeout_seconds)
        self._outage = OutageRetry(
            self._writer,
            self._backlog,
            self._spillover,
            backoff=Backoff(reconnect_initial_seconds, reconnect_max_seconds),
            availability=availability or DatabaseAvailability("the event log's database"),
            memory_max_events=config.memory_max_events,
            stopping=self._stopping,
        )
        self._hub = SubscriberHub(config.subscriber_max_batches)

    @classmethod
    def from_config(
        cls, config: Config, connect: Connect, availability: DatabaseAvailability | None = None
    ) -> Appender:
        """An appender set up by ``[appender]`` and ``[database]``, spilling under
        ``<state directory>/spill``."""
        return cls(
            connect,
            config=config.appender,
            spill_directory=config.state_directory / "spill",
            reconnect_initial_seconds=config.database.reconnect_initial_seconds,
            reconnect_max_seconds=config.database.reconnect_max_seconds,
            connect_timeout_seconds=config.database.connect_timeout_seconds,
            availability=availability,
        )

    @property
    def availability(self) -> DatabaseAvailability:
        return self._outage.availability

    @property
    def epochs(self) -> Mapping[UUID, int]:
        """Meter -> lease epoch held (or last held); empty: no fencing (one daemon)."""
        return self._writer.epochs

    @epochs.setter
    def epochs(self, epochs: Mapping[UUID, int]) -> None:
        self._writer.epochs = epochs

    # -- producers --------------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        """Accept ``event``; waits while the queue is full."""
        if self._closed:
            raise AppenderClosedError("the appender is stopping")
        self._idle.clear()
        await self._backlog.put(event)

    async def append_many(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.append(event)

    def append_nowait(self, event: Event) -> None:
        """Accept ``event`` or raise :class:`asyncio.QueueFull`."""
        if self._closed:
            raise AppenderClosedError("the appender is stopping")
        self._backlog.put_nowait(event)
        self._idle.clear()

    # -- subscribers --------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A buffer that receives every batch this appender commits from now on."""
        return self._hub.subscribe()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every committed batch, inside the appender task."""
        self._hub.add_listener(listener)

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting; :meth:`run` returns once everything is committed or spilled."""
        self._closed = True
        self._stopping.set()

    async def flush(self) -> None:
        """Wait until every event accepted so far is committed (or rejected)."""
        await self._idle.wait()

    @property
    def spilled_events(self) -> int:
        return self._spillover.journal.pending_events

    @property
    def running(self) -> bool:
        return self._running

    def statistics(self) -> AppenderStatistics:
        backlog, writer, outage, spillover = (
            self._backlog,
            self._writer,
            self._outage,
            self._spillover,
        )
        journal = spillover.journal
        return AppenderStatistics(
            accepted=backlog.accepted,
            committed=writer.committed,
            duplicates=writer.duplicates,
            rejected=writer.rejected,
            fenced=writer.fenced,
            spilled=spillover.spilled,
            drained_segments=spillover.drained_segments,
            spill_write_errors=spillover.write_errors,
            spill_blocked=spillover.blocked,
            queued=backlog.queue.qsize(),
            in_memory=len(backlog.memory),
            pending_in_journal=journal.pending_events,
            database_failures=outage.failures,
            database_failures_by_kind=dict(outage.failures_by_kind),
            database_up=outage.last_attempt_ok,
            head_position=writer.head_position,
            journal_bytes=journal.size_bytes,
            journal_corrupt_records=journal.corrupt_records,
            subscriber_dropped_batches=self._hub.dropped_batches,
            running=self._running,
        )

    async def run(self) -> None:
        """The appender task (may be run again after it failed)."""
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def spill_remaining(self, extra: Sequence[Event] = (), *, reason: str) -> bool:
        """Write everything in the queue and in memory, then ``extra``, to the journal now
        (the task is gone for good and the daemon must stop); True if anything was written.
        ``reason`` says why in the log line."""
        self._closed = True
        self._backlog.accept_into_memory(extra)
        return await self._spillover.spill_everything(reason)

    async def _run(self) -> None:
        pending = await self._spillover.scan()
        if pending:
            log.info("draining spill journal from an earlier run", events=pending)
        journal = self._spillover.journal
        try:
            while True:
                if journal.has_segments():
                    await self._spillover.drain_oldest_segment(
                        self._commit_from_journal, self._config.batch_max
                    )
                elif self._backlog.memory:
                    await self._commit_from_memory()
                elif not await self._take_batch_from_queue():
                    break
                self._note_idle()
        except StoppedSignal:
            log.info("appender stopped", spilled_events=journal.pending_events)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            # Shielded: in a cancelled scope the journal write would be cancelled in turn and
            # the events in memory lost with the process.
            with anyio.CancelScope(shield=True):
                await self._spillover.spill_everything(
                    "appender cancelled" if cancelled else "appender failed",
                    stopping=self._stopping.is_set(),
                    error=None if cancelled else repr(exc),
                )
            raise
        finally:
            journal.close()
            await self._writer.drop_connection()

    # -- the loop's steps ---------------------------------------------------------------------

    async def _take_batch_from_queue(self) -> bool:
        """Move up to one batch from the queue to memory; False once stopped and empty."""
        if self._backlog.queue.empty():
            self._note_idle()
            if self._stopping.is_set():
                return False
        return await self._backlog.take_batch(
            self._config.batch_max, self._config.flush_interval_seconds, self._stopping
        )

    async def _commit_from_memory(self) -> None:
        batch = self._backlog.oldest(self._config.batch_max)
        try:
            results = await self._outage.commit(batch, "memory")
        except SpilledSignal:
            return
        self._backlog.forget_oldest(len(batch))
        self._spillover.memory_drained(self._config.memory_max_events)
        for result in results:
            self._hub.publish(result)

    async def _commit_from_journal(self, batch: list[Event]) -> None:
        for result in await self._outage.commit(batch, "journal"):
            self._hub.publish(result)

    def _note_idle(self) -> None:
        if self._backlog.is_empty() and not self._spillover.journal.has_segments():
            self._idle.set()
