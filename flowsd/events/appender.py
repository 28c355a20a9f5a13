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
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec
import structlog

from flowsd.backoff import Backoff, Retry
from flowsd.config import AppenderConfig, Config
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.connect import close_quietly
from flowsd.db.errors import DATABASE_ERRORS, describe, is_data_rejection
from flowsd.db.meter_names import serials_of
from flowsd.events import metrics
from flowsd.events.codec import payload_json
from flowsd.events.metrics import APPEND_ERROR_KINDS, AppendErrorKind, append_error_kind
from flowsd.events.spill import SpillDirectoryInUseError, SpillJournal
from flowsd.events.store import AppendResult, append_batch
from flowsd.events.subscriptions import Listener, SubscriberHub, Subscription
from flowsd.events.types import Event

Connect = Callable[[], Awaitable[asyncpg.Connection]]
Source = Literal["memory", "journal"]

log = structlog.get_logger("flowsd.events.appender")

_ABSORB_POLL_SECONDS = 0.1


class AppenderClosedError(RuntimeError):
    """``append`` after ``stop``."""


class _StoppedSignal(Exception):  # noqa: N818 (control flow, not an error)
    """Raised inside the task once stop was requested and everything is committed or spilled."""


class _SpilledSignal(Exception):  # noqa: N818 (control flow, not an error)
    """The in-flight memory batch moved to the journal while the database was away."""


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
        self._connect = connect
        self._config = config
        self._journal = SpillJournal(
            spill_directory, segment_max_bytes=config.spill_segment_max_bytes
        )
        self._backoff = Backoff(reconnect_initial_seconds, reconnect_max_seconds)
        self._connect_timeout = connect_timeout_seconds
        self.availability = availability or DatabaseAvailability("the event log's database")
        # A commit that outlives this is abandoned and retried (the key makes the retry safe):
        # the server's statement_timeout cannot fire across a dead network.
        self._append_timeout = config.statement_timeout_seconds + config.lock_timeout_seconds + 5
        self._queue: asyncio.Queue[Event] = asyncio.Queue(config.queue_size)
        self._memory: deque[Event] = deque()
        self._hub = SubscriberHub(config.subscriber_max_batches)
        # Meter -> lease epoch held (or last held); empty: no fencing (one daemon, no leases).
        self.epochs: Mapping[UUID, int] = {}
        self._conn: asyncpg.Connection | None = None
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._spill_blocked = False
        self._closed = False
        self._database_up = True  # until an append fails
        self._last_attempt_ok = False  # what flowsd_appender_database_up says: 0 until one works
        self._head_position = 0
        self._failures_by_kind = dict.fromkeys(APPEND_ERROR_KINDS, 0)
        self._running = False
        self._counts = {
            "accepted": 0,
            "committed": 0,
            "duplicates": 0,
            "rejected": 0,
            "fenced": 0,
            "spilled": 0,
            "drained_segments": 0,
            "spill_write_errors": 0,
            "database_failures": 0,
        }

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

    # -- producers --------------------------------------------------------------------------

    async def append(self, event: Event) -> None:
        """Accept ``event``; waits while the queue is full."""
        if self._closed:
            raise AppenderClosedError("the appender is stopping")
        self._idle.clear()
        await self._queue.put(event)
        self._counts["accepted"] += 1

    async def append_many(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.append(event)

    def append_nowait(self, event: Event) -> None:
        """Accept ``event`` or raise :class:`asyncio.QueueFull`."""
        if self._closed:
            raise AppenderClosedError("the appender is stopping")
        self._queue.put_nowait(event)
        self._counts["accepted"] += 1
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
        return self._journal.pending_events

    @property
    def running(self) -> bool:
        return self._running

    def statistics(self) -> AppenderStatistics:
        return AppenderStatistics(
            **self._counts,
            spill_blocked=self._spill_blocked,
            queued=self._queue.qsize(),
            in_memory=len(self._memory),
            pending_in_journal=self._journal.pending_events,
            database_failures_by_kind=dict(self._failures_by_kind),
            database_up=self._last_attempt_ok,
            head_position=self._head_position,
            journal_bytes=self._journal.size_bytes,
            journal_corrupt_records=self._journal.corrupt_records,
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

    async def spill_remaining(self, extra: Sequence[Event] = ()) -> bool:
        """Write everything in the queue and in memory, then ``extra``, to the journal now
        (the task is gone for good and the daemon must stop); True if anything was written."""
        self._closed = True
        self._memory.extend(extra)
        self._counts["accepted"] += len(extra)
        return await self._spill_everything()

    async def _run(self) -> None:
        try:
            pending = await asyncio.to_thread(self._journal.scan)
        except SpillDirectoryInUseError:
            raise
        except OSError as exc:
            # Appends can still work; an outage now has nowhere to spill. Alarm, don't stop.
            pending = 0
            self._spill_blocked = True
            log.error(
                "spill journal unavailable",
                error=str(exc),
                directory=str(self._journal.directory),
            )
        if pending:
            log.info("draining spill journal from an earlier run", events=pending)
        try:
            while True:
                if self._journal.has_segments():
                    await self._drain_oldest_segment()
                elif self._memory:
                    await self._commit_from_memory()
                elif not await self._take_batch_from_queue():
                    break
                self._note_idle()
        except _StoppedSignal:
            log.info("appender stopped", spilled_events=self._journal.pending_events)
        except BaseException:
            await self._spill_everything()
            raise
        finally:
            self._journal.close()
            await self._drop_connection()

    # -- the loop's steps ---------------------------------------------------------------------

    async def _take_batch_from_queue(self) -> bool:
        """Move up to one batch from the queue to memory; False once stopped and empty."""
        loop = asyncio.get_running_loop()
        if self._queue.empty():
            self._note_idle()
            if self._stopping.is_set():
                return False
            first = await self._first_event_or_stop()
            if first is None:
                return not self._queue.empty()
            self._memory.append(first)
        deadline = loop.time() + self._config.flush_interval_seconds
        limit = self._config.batch_max
        while len(self._memory) < limit:
            while len(self._memory) < limit and not self._queue.empty():
                self._memory.append(self._queue.get_nowait())
            remaining = deadline - loop.time()
            if len(self._memory) >= limit or remaining <= 0 or self._stopping.is_set():
                break
            try:
                self._memory.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return True

    async def _first_event_or_stop(self) -> Event | None:
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def _commit_from_memory(self) -> None:
        batch = list(islice(self._memory, self._config.batch_max))
        try:
            results = await self._append_with_retry(batch, "memory")
        except _SpilledSignal:
            return
        for _ in batch:
            self._memory.popleft()
        if self._spill_blocked and len(self._memory) < self._config.memory_max_events:
            # The backlog the disk could not take is draining into the database again.
            self._spill_blocked = False
        for result in results:
            self._hub.publish(result)

    async def _drain_oldest_segment(self) -> None:
        segment = self._journal.oldest_segment()
        if self._journal.is_being_written(segment):
            self._journal.seal()
        events = await asyncio.to_thread(self._journal.read, segment)
        for start in range(0, len(events), self._config.batch_max):
            chunk = events[start : start + self._config.batch_max]
            for result in await self._append_with_retry(chunk, "journal"):
                self._hub.publish(result)
        await asyncio.to_thread(self._journal.remove, segment)
        self._counts["drained_segments"] += 1
        log.info("spill segment committed", segment=segment.name, events=len(events))

    # -- committing --------------------------------------------------------------------------

    async def _append_with_retry(self, batch: list[Event], source: Source) -> list[AppendResult]:
        """Commit ``batch``, retrying until it is in (or, from memory, moved to the journal)."""
        retry = Retry(self._backoff)
        while True:
            if self._stopping.is_set() and not self._database_up:
                # Stopping during an outage: no more attempts, everything goes to the journal.
                spilled = await self._spill_everything()
                if spilled and source == "memory":
                    raise _SpilledSignal
                if not self._memory and self._queue.empty():
                    raise _StoppedSignal
            try:
                conn = await self._connection()
                try:
                    results = [await self._timed_append(conn, batch)]
                except asyncpg.PostgresError as exc:
                    if not is_data_rejection(exc):
                        raise
                    results = await self._append_individually(conn, batch)
                self._database_up = self._last_attempt_ok = True
                self.availability.succeeded("appender")
                return results
            except DATABASE_ERRORS as exc:
                self._database_up = self._last_attempt_ok = False
                self._counts["database_failures"] += 1
                self._failures_by_kind[append_error_kind(exc)] += 1
                self.availability.failed("appender", exc)
                delay = retry.next_delay()
                log.warning(
                    "append failed; retrying",
                    error=describe(exc),
                    retry_in_seconds=round(delay, 3),
                    events=len(batch),
                    source=source,
                )
                await self._drop_connection()
            spilled = await self._wait_absorbing(delay)
            if spilled and source == "memory":
                raise _SpilledSignal
            if self._stopping.is_set() and not self._memory and self._queue.empty():
                raise _StoppedSignal

    async def _timed_append(self, conn: asyncpg.Connection, batch: list[Event]) -> AppendResult:
        started = time.perf_counter()
        result = await asyncio.wait_for(
            append_batch(conn, batch, epochs=self.epochs), self._append_timeout
        )
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        if result.fenced_events:
            self._counts["fenced"] += result.fenced_events
            log.warning(
                "events refused: their meters' leases passed to another daemon",
                events=result.fenced_events,
                meters=len(result.fenced),
            )
        metrics.BATCH_SIZE.observe(len(batch))
        self._counts["committed"] += len(result.events)
        self._counts["duplicates"] += result.duplicates
        self._head_position = result.through_position
        return result

    async def _append_individually(
        self, conn: asyncpg.Connection, batch: list[Event]
    ) -> list[AppendResult]:
        """Commit what the database accepts of a refused ``batch``, in order; reject the rest.

        The batch is halved until each refused part is a single event, so one bad event in a
        batch of N costs about 2·log2(N) appends rather than N.
        """
        results: list[AppendResult] = []
        await self._append_halves(conn, batch, results)
        return results

    async def _append_halves(
        self, conn: asyncpg.Connection, refused: list[Event], results: list[AppendResult]
    ) -> None:
        middle = len(refused) // 2
        for part in (refused[:middle], refused[middle:]):
            if not part:
                continue
            try:
                results.append(await self._timed_append(conn, part))
            except asyncpg.PostgresError as exc:
                if not is_data_rejection(exc):
                    raise
                if len(part) == 1:
                    await self._reject(conn, part[0], exc)
                else:
                    await self._append_halves(conn, part, results)

    async def _reject(self, conn: asyncpg.Connection, event: Event, exc: BaseException) -> None:
        await conn.execute(
            """
            INSERT INTO flowsd.rejected_event (idempotency_key, meter_id, event_type, event, error)
            VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (idempotency_key) DO NOTHING
            """,
            event.idempotency_key(),
            event.meter_id,
            event.type_id,
            msgspec.json.encode(event).decode(),
            str(exc),
        )
        self._counts["rejected"] += 1
        serials = await serials_of(conn, [event.meter_id])
        log.error(
            "event rejected by the database",
            meter_serial=serials[event.meter_id],
            meter_id=str(event.meter_id),
            event_type=event.type_id,
            payload=payload_json(event.body),
            error=str(exc),
        )

    # -- while the database is away -----------------------------------------------------------

    async def _wait_absorbing(self, seconds: float) -> bool:
        """Wait ``seconds`` (less once the database is reported back) while taking events
        from the queue; True if memory was spilled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        bound = self._config.memory_max_events
        spilled = False
        recoveries = self.availability.recoveries
        while True:
            if self._stopping.is_set():
                return await self._spill_everything() or spilled
            remaining = deadline - loop.time()
            if remaining <= 0 or self.availability.recoveries != recoveries:
                return spilled
            if self._spill_blocked and len(self._memory) >= bound:
                # Disk full too: leave events in the queue so producers wait; retry the disk
                # once per retry period.
                await asyncio.sleep(min(remaining, _ABSORB_POLL_SECONDS))
                if remaining <= _ABSORB_POLL_SECONDS:
                    spilled = await self._spill_memory() or spilled
                continue
            try:
                timeout = min(remaining, _ABSORB_POLL_SECONDS)
                self._memory.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                pass
            while len(self._memory) <= bound and not self._queue.empty():
                self._memory.append(self._queue.get_nowait())
            if len(self._memory) > bound:
                spilled = await self._spill_memory() or spilled

    async def _spill_everything(self) -> bool:
        """Memory and queue to the journal (on stop or crash while uncommitted)."""
        while not self._queue.empty():
            self._memory.append(self._queue.get_nowait())
        return await self._spill_memory()

    async def _spill_memory(self) -> bool:
        if not self._memory:
            return False
        events = list(self._memory)
        try:
            await asyncio.to_thread(self._journal.write, events)
        except OSError as exc:
            self._spill_blocked = True
            self._counts["spill_write_errors"] += 1
            log.error(
                "cannot write the spill journal: events held in memory, producers paused",
                error=str(exc),
                events_in_memory=len(events),
                directory=str(self._journal.directory),
            )
            return False
        self._spill_blocked = False
        self._counts["spilled"] += len(events)
        self._memory.clear()
        log.warning("database unreachable: events spilled to disk", events=len(events))
        return True

    # -- connection ---------------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncio.wait_for(self._connect(), self._connect_timeout)
            try:
                await conn.execute(
                    "SELECT set_config('statement_timeout', $1, false),"
                    " set_config('lock_timeout', $2, false)",
                    f"{int(self._config.statement_timeout_seconds * 1000)}ms",
                    f"{int(self._config.lock_timeout_seconds * 1000)}ms",
                )
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    # -- bookkeeping -------------------------------------------------------------------------

    def _note_idle(self) -> None:
        if self._queue.empty() and not self._memory and not self._journal.has_segments():
            self._idle.set()
