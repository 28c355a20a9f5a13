"""The projector runner: one task per projection, fed in memory, catching up from the log.

Each :class:`ProjectorTask` keeps its projection's checkpoint. Its sources of work, in order:

1. committed batches handed over in memory by the appender (its own
   :class:`~flowsd.events.subscriptions.Subscription`): applied without reading them back,
   the batches queued behind the first and those arriving within ``merge_seconds`` of it
   merged into one transaction (rows and checkpoint), up to ``batch_max`` events;
2. the log, read only to catch up: after a start, when a batch does not follow on from the
   checkpoint (dropped because the buffer was full, appended by another process, or the
   checkpoint was moved by a replay), or when NOTIFY / the fallback poll shows a newer head.
   The page size doubles from ``batch_min`` while full pages keep coming, and halves back.

A task applies events only while *active*: with several daemons on one database, each
projection is active in one of them, the one whose LISTEN connection holds the projection's
lock (:mod:`flowsd.projections.leadership`); elsewhere it stands by (discarding its in-memory
batches) and, once made active, reads its checkpoint and catches up from the log. A daemon
alone holds every lock from the start.

The :class:`ProjectorRunner` runs the tasks in an anyio task group, each under a
:class:`~flowsd.supervision.Supervisor` (a task that fails unexpectedly is logged, counted and
restarted from its checkpoint; the others go on), LISTENs on the appender's NOTIFY channel on
one pooled connection (re-established after any failure, and checked every
``max(poll_interval_seconds, 1)`` seconds so a connection that died silently is noticed; each
time with a wake-up of every task, so nothing announced meanwhile waits for the poll), holds
the projections' locks on that connection, and reports
per-projection status for ``/readyz`` and statistics for ``/metrics``
(:meth:`ProjectorRunner.statistics`, exported by
:func:`~flowsd.projections.metrics.projector_families`). Database errors (any of
:data:`~flowsd.db.errors.DATABASE_ERRORS`) are retried with the shared backoff, and a lost
connection expires the pool's others (a server restart kills them all); data errors park the
meter's events (:mod:`flowsd.projections.parking`) and never stop the other meters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import anyio
import anyio.abc
import asyncpg
import structlog

from flowsd.backoff import Backoff, Retry
from flowsd.config import ProjectionsConfig
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.errors import DATABASE_ERRORS, describe, is_connection_lost
from flowsd.events.checkpoints import CheckpointConflictError, read_checkpoint
from flowsd.events.reader import head_position, read_events
from flowsd.events.store import NOTIFY_CHANNEL, AppendResult
from flowsd.events.subscriptions import Subscription
from flowsd.events.types import RecordedEvent
from flowsd.projections.base import Projection
from flowsd.projections.catalogue import select_projections
from flowsd.projections.leadership import Leadership, first_of
from flowsd.projections.projector import apply_batch
from flowsd.projections.status import ProjectorStatistics, ProjectorStatus
from flowsd.supervision import Supervisor

log = structlog.get_logger("flowsd.projections")

# How long a task woken by NOTIFY waits for the same batch to arrive in memory before it
# reads the log (both are sent at the appender's commit; memory usually wins).
IN_MEMORY_GRACE_SECONDS = 0.2


class ProjectorTask:
    """The loop of one projection: active (applying), or standing by while another daemon
    runs it (:mod:`flowsd.projections.leadership`), its in-memory batches discarded."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: Projection,
        config: ProjectionsConfig,
        subscription: Subscription | None,
        availability: DatabaseAvailability | None = None,
    ) -> None:
        self.projection = projection
        self.name = projection.name
        self.active = True
        self._standing_by = False  # in _stand_by: no step in progress reads the checkpoint
        self.availability = availability or DatabaseAvailability("the projections' database")
        self._pool = pool
        self._config = config
        self._subscription = subscription
        self._wake = asyncio.Event()
        self._page = config.batch_min
        self.checkpoint = 0
        self.known_head = 0
        self.running = False
        self.last_error: str | None = None
        self._lag_seconds = 0.0
        self._events = self._log_reads = self._parked = self._conflicts = self._errors = 0
        self._last_progress = time.monotonic()
        self._published = asyncio.Event()  # set (and replaced) whenever the state is published

    # -- signals from outside -----------------------------------------------------------------

    def note_head(self, head: int) -> None:
        """A newer head was announced (NOTIFY): wake up."""
        self.known_head = max(self.known_head, head)
        self._wake.set()

    def activate(self) -> None:
        """This daemon now holds the projection's lock: read the checkpoint, catch up."""
        self.active = True
        self._wake.set()

    def stand_down(self) -> None:
        """The lock is gone: apply nothing more (after the step in progress)."""
        self.active = False
        self._wake.set()
        self._publish()

    def observe_checkpoint(self, position: int) -> None:
        """The checkpoint as read while standing by (another daemon moves it)."""
        if self._standing_by and position != self.checkpoint:
            self.checkpoint = position
            self._publish()

    async def reached(self, position: int) -> None:
        """Return once the checkpoint is at ``position`` or beyond, or the task stands by."""
        while self.checkpoint < position and self.active:
            await self._published.wait()

    def status(self) -> ProjectorStatus:
        lag = max(self.known_head - self.checkpoint, 0)
        advancing = time.monotonic() - self._last_progress < self._config.stall_seconds
        # Standing by is healthy: the projection's progress is its active daemon's to report.
        healthy = self.running and (lag == 0 or advancing or not self.active)
        return ProjectorStatus(
            self.projection.name,
            self.checkpoint,
            self.known_head,
            lag,
            self.running,
            healthy,
            self.last_error,
            ("active" if self.active else "standby") if self.running else "stopped",
        )

    def statistics(self) -> ProjectorStatistics:
        status = self.status()
        return ProjectorStatistics(
            name=status.name,
            checkpoint=status.checkpoint,
            lag_events=status.lag_events,
            lag_seconds=self._lag_seconds,
            healthy=status.healthy,
            events=self._events,
            log_reads=self._log_reads,
            parked=self._parked,
            conflicts=self._conflicts,
            errors=self._errors,
            role=status.role,
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        name = self.projection.name
        await self._with_retries(self._load_checkpoint)
        self.running = True
        task_status.started()
        log.info("projector started", projection=name, checkpoint=self.checkpoint)
        try:
            while True:
                if not self.active:
                    await self._stand_by()
                await self._with_retries(self._step)
        finally:
            self.running = False

    def close(self) -> None:
        """Stop receiving batches in memory (once the task will not run again)."""
        if self._subscription is not None:
            self._subscription.close()

    async def _with_retries(self, step: Callable[[], Any]) -> None:
        retry = Retry(Backoff(self._config.retry_initial_seconds, self._config.retry_max_seconds))
        while True:
            try:
                await step()
                self.last_error = None
                self.availability.succeeded(f"projector {self.projection.name}")
                return
            except CheckpointConflictError as exc:
                self._conflicts += 1
                log.info(
                    "checkpoint moved elsewhere; re-reading",
                    projection=self.projection.name,
                    detail=str(exc),
                )
                step = self._load_checkpoint  # with the same retries
            except DATABASE_ERRORS as exc:
                self.last_error = describe(exc)
                self._errors += 1
                self.availability.failed(f"projector {self.projection.name}", exc)
                if is_connection_lost(exc):
                    await self._pool.expire_connections()
                delay = retry.next_delay()
                log.warning(
                    "projector failed; retrying",
                    projection=self.projection.name,
                    error=self.last_error,
                    retry_in=round(delay, 3),
                )
                await self.availability.wait(delay)

    async def _stand_by(self) -> None:
        """Until activated: discard the batches handed over; then read the checkpoint."""
        log.info("projector standing by", projection=self.name)
        self._standing_by = True
        try:
            while not self.active:
                self._wake.clear()
                if self._subscription is not None:
                    while self._subscription.get_nowait() is not None:
                        pass
                await first_of(self._wake.wait(), *self._batch_waiter())
        finally:
            self._standing_by = False
        await self._with_retries(self._load_checkpoint)
        self._last_progress = time.monotonic()
        log.info("projector active", projection=self.name, checkpoint=self.checkpoint)

    def _batch_waiter(self) -> list[Coroutine[Any, Any, Any]]:
        return [self._subscription.get()] if self._subscription is not None else []

    async def _load_checkpoint(self) -> None:
        async with _connection(self._pool) as conn:
            self.checkpoint = await read_checkpoint(conn, self.projection.name)
            self.known_head = max(self.known_head, await head_position(conn))
        self._publish()

    async def _step(self) -> None:
        batch = self._subscription.get_nowait() if self._subscription else None
        if not self.active:
            return
        if batch is not None:
            await self._take(batch)
        elif self.known_head > self.checkpoint:
            await self._catch_up(self.known_head)
        else:
            await self._wait()

    async def _wait(self) -> None:
        """Until a batch arrives, a NOTIFY wakes us, or the poll interval passes."""
        self._wake.clear()
        waiters: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self._wake.wait()): "notify"
        }
        if self._subscription is not None:
            waiters[asyncio.ensure_future(self._subscription.get())] = "batch"
        try:
            done, _ = await asyncio.wait(
                waiters,
                timeout=self._config.poll_interval_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for future in waiters:
                if not future.done():
                    future.cancel()
        if not self.active:
            return  # stood down: a batch taken is dropped, the log has it
        for future in done:
            if waiters[future] == "batch":
                await self._take(future.result())
                return
        if done and self._subscription is not None:
            # Woken by NOTIFY: give the in-memory copy of the batch a moment to arrive.
            with contextlib.suppress(TimeoutError):
                batch = await asyncio.wait_for(self._subscription.get(), IN_MEMORY_GRACE_SECONDS)
                await self._take(batch)
                return
        if self.known_head <= self.checkpoint:  # a poll, or a wake-up without a head
            async with _connection(self._pool) as conn:
                self.known_head = max(self.known_head, await head_position(conn))
            self._publish()

    async def _take(self, first: AppendResult) -> None:
        """Apply ``first`` and the batches queued behind it or arriving within
        ``merge_seconds``, or catch up to them."""
        batches = [first]
        size = len(first.events)
        deadline = time.monotonic() + self._config.merge_seconds
        while self._subscription is not None and size < self._config.batch_max:
            more = self._subscription.get_nowait()
            if more is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    more = await asyncio.wait_for(self._subscription.get(), left)
                except TimeoutError:
                    break
            batches.append(more)
            size += len(more.events)
        through = batches[-1].through_position
        self.known_head = max(self.known_head, through)
        if through <= self.checkpoint:
            return  # already covered (e.g. by a catch-up or a replay)
        contiguous = all(
            b.after_position == a.through_position for a, b in itertools.pairwise(batches)
        )
        if first.after_position > self.checkpoint or not contiguous:
            await self._catch_up(through)  # a hole: the log has what memory missed
            return
        events = [e for b in batches for e in b.events if e.position > self.checkpoint]
        await self._apply(events, through)

    async def _catch_up(self, until: int) -> None:
        """Read the log from the checkpoint up to ``until`` (inclusive) and apply it."""
        while self.checkpoint < until and self.active:
            async with _connection(self._pool) as conn:
                events = await read_events(conn, self.checkpoint, self._page, until=until)
            self._log_reads += 1
            full = len(events) == self._page
            # A short page reached `until`: positions up to it without events are gaps.
            through = events[-1].position if full else until
            await self._apply(events, through)
            self._page = (
                min(self._page * 2, self._config.batch_max)
                if full
                else max(self._page // 2, self._config.batch_min)
            )

    async def _apply(self, events: Sequence[RecordedEvent], through: int) -> None:
        async with _connection(self._pool) as conn:
            outcome = await apply_batch(
                conn, self.projection, events, expected=self.checkpoint, through=through
            )
        self.checkpoint = outcome.checkpoint
        self._events += outcome.events
        self._parked += outcome.parked
        self._last_progress = time.monotonic()
        behind = self.known_head > self.checkpoint
        if events and behind:
            age = (datetime.now(UTC) - events[-1].recorded_at).total_seconds()
            self._lag_seconds = max(age, 0.0)
        elif not behind:
            self._lag_seconds = 0.0
        self._publish()

    def _publish(self) -> None:
        self._published.set()
        self._published = asyncio.Event()


class ProjectorRunner:
    """Runs every enabled projection; start :meth:`run` in an anyio task group.

    ``subscribe`` is the appender's ``subscribe`` (one subscription per projection), or None
    in a process without an appender: the tasks then rely on NOTIFY and the poll.

    ``exclusive`` (with ``listen``): a projection is active only while the LISTEN connection
    holds its lock (:mod:`flowsd.projections.leadership`; ``instance`` orders the projections
    this daemon prefers). Otherwise every projection is always active.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: ProjectionsConfig,
        *,
        subscribe: Callable[[], Subscription] | None = None,
        projections: Sequence[Projection] | None = None,
        listen: bool = True,
        availability: DatabaseAvailability | None = None,
        supervisor: Supervisor | None = None,
        exclusive: bool = True,
        instance: str = "",
    ) -> None:
        chosen = (
            list(projections) if projections is not None else select_projections(config.enabled)
        )
        self._pool = pool
        self._listen = listen
        self._config = config
        self.availability = availability or DatabaseAvailability("the projections' database")
        self._supervisor = supervisor or Supervisor()
        self.tasks = [
            ProjectorTask(pool, p, config, subscribe() if subscribe else None, self.availability)
            for p in chosen
        ]
        self.leadership: Leadership | None = None
        if listen and exclusive:
            self.leadership = Leadership(self.tasks, instance=instance)
            for task in self.tasks:
                task.active = False  # until the first round takes the locks

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; ``task_status.started()`` once every task has its checkpoint."""
        supervise = self._supervisor.run
        try:
            async with anyio.create_task_group() as group:
                if self._listen:
                    await group.start(supervise, "projections_listen", self._listen_loop)
                for task in self.tasks:
                    await group.start(supervise, f"projector_{task.projection.name}", task.run)
                task_status.started()
        finally:
            for task in self.tasks:
                task.close()

    def status(self) -> list[ProjectorStatus]:
        return [task.status() for task in self.tasks]

    def statistics(self) -> list[ProjectorStatistics]:
        """Every projection's :class:`ProjectorStatistics`, in the order of :attr:`tasks`."""
        return [task.statistics() for task in self.tasks]

    async def wait_caught_up(self, head: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether every projector's checkpoint reaches ``head`` within ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            for task in self.tasks:
                await task.reached(head)
            return True
        return False

    def ready(self) -> bool:
        """Every projector is running and either caught up or advancing."""
        return all(s.healthy for s in self.status())

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            head = int(str(payload))
        except ValueError:
            head = 0
        for task in self.tasks:
            task.note_head(head)

    async def _listen_loop(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        retry = Retry(Backoff(self._config.retry_initial_seconds, self._config.retry_max_seconds))
        while True:
            try:
                async with _connection(self._pool) as conn:
                    try:
                        await self._listen_on(conn, task_status)
                        retry.reset()
                    finally:
                        if self.leadership is not None:
                            await self.leadership.remove(conn)
                        with contextlib.suppress(*DATABASE_ERRORS):
                            await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                log.warning("LISTEN connection lost; reconnecting")
            except DATABASE_ERRORS as exc:
                self.availability.failed("projections listen", exc)
                if is_connection_lost(exc):
                    await self._pool.expire_connections()
                delay = retry.next_delay()
                log.warning(
                    "cannot LISTEN for new events; the poll continues",
                    error=describe(exc),
                    retry_in=round(delay, 3),
                )
                task_status.started()  # the tasks run on their poll meanwhile
                await self.availability.wait(delay)

    async def _listen_on(
        self, conn: asyncpg.Connection, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """LISTEN on ``conn`` until it is lost or stops answering the periodic check."""
        lost = asyncio.Event()
        on_lost = _setter(lost)
        conn.add_termination_listener(on_lost)  # the pool reuses the connection: removed below
        check_every = max(self._config.poll_interval_seconds, 1.0)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            if self.leadership is not None:
                await self.leadership.start(conn)
            self.availability.succeeded("projections listen")
            # Anything announced while we were not listening: look at the log.
            for task in self.tasks:
                task.note_head(0)
            task_status.started()
            if self.leadership is not None:
                await self.leadership.keep(conn, lost, check_every)
            while not lost.is_set():
                with anyio.move_on_after(check_every):
                    await lost.wait()
                if not lost.is_set():
                    # A connection that died without a FIN (a cut network) never says so.
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), check_every * 5)
        finally:
            if self.leadership is not None:
                self.leadership.lost()
            conn.remove_termination_listener(on_lost)


@contextlib.asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, typed as the connection it proxies."""
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()
