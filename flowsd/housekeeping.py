"""What the daemon tells others about itself: systemd, ``/healthz`` and ``/readyz``, the
heartbeat and session-state rows ``flowsd status`` reads, and the summary log line.

* ``WATCHDOG=1`` comes from a loop on the event loop (a blocked loop stops the pings), gated on
  no component having given up, never on the database; ``STATUS=`` with it.
* ``/healthz`` is liveness (no component gave up: a database outage is not a reason to be
  restarted); ``/readyz`` is whether flowsd can do its job (started, database usable, queue
  not nearly full, projectors advancing), with the database and why it is unavailable in its
  body.
* Every ``[daemon] state_flush_seconds`` the changed session-state rows and the heartbeat are
  upserted; a failed write is retried at the next one (the rows stay marked changed), and a
  final one marks the heartbeat stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import anyio.abc
import asyncpg
import structlog

from flowsd.config import Config
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.connect import close_quietly
from flowsd.db.errors import DATABASE_ERRORS, describe
from flowsd.events.appender import Appender
from flowsd.ingest.sessions import Heartbeat, SessionTracker, flush
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.ops.http import HealthChecks
from flowsd.ops.notify import SystemdNotifier
from flowsd.projections.runner import ProjectorRunner
from flowsd.supervision import Supervisor

log = structlog.get_logger("flowsd.app")

_STATUS_EVERY_SECONDS = 5.0
_FINAL_FLUSH_SECONDS = 5.0

Connect = Callable[[], Awaitable[asyncpg.Connection]]


@dataclass(eq=False, kw_only=True)
class Housekeeping:
    """The daemon's reports; the daemon hands it the parts it reports on."""

    config: Config
    instance: str
    started_at: datetime
    fleet: FleetSupervisor
    appender: Appender
    availability: DatabaseAvailability
    tracker: SessionTracker
    components: Supervisor
    notifier: SystemdNotifier
    ready: anyio.Event
    connect: Connect
    projectors: ProjectorRunner | None = None  # once started
    _state_scope: anyio.CancelScope | None = field(default=None, init=False)
    _state_stopped: bool = field(default=False, init=False)

    # -- snapshots ------------------------------------------------------------------------------

    def heartbeat(self, *, stopped: bool = False) -> Heartbeat:
        status = self.fleet.status(top=0)
        appender = self.appender.statistics()
        return Heartbeat(
            instance=self.instance,
            started_at=self.started_at,
            meters=status.meters,
            online=status.online,
            offline=status.offline,
            never_answered=status.never_answered,
            queue_depth=appender.queued,
            spilled_events=appender.pending_in_journal,
            events_appended=appender.committed,
            database_up=self.availability.up,
            status=self.status_line(),
            stopped=stopped,
        )

    def status_line(self) -> str:
        status = self.fleet.status(top=0)
        appender = self.appender.statistics()
        never = f", {status.never_answered} never answered" if status.never_answered else ""
        waiting = f", {status.waiting_to_start} waiting to start" if status.waiting_to_start else ""
        return (
            f"meters {status.online}/{status.meters} online{never}{waiting}; "
            f"db {'ok' if self.availability.up else 'down'}; queue {appender.queued}; "
            f"spilled {appender.pending_in_journal}"
        )

    def health_checks(self) -> HealthChecks:
        queue_limit = self.config.appender.queue_size * 0.9
        return HealthChecks(
            liveness={"components": self.components.alive},
            readiness={
                "started": self.ready.is_set,
                "database": lambda: self.availability.up,
                "queue": lambda: self.appender.statistics().queued < queue_limit,
                "projectors": lambda: self.projectors is None or self.projectors.ready(),
            },
            details={"database": self.availability.describe},
        )

    # -- session state ----------------------------------------------------------------------------

    async def state_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Session state and heartbeat every ``state_flush_seconds`` until :meth:`final_flush`."""
        conn: asyncpg.Connection | None = None
        task_status.started()
        with anyio.CancelScope() as scope:
            self._state_scope = scope
            if self._state_stopped:
                return
            try:
                while True:
                    await anyio.sleep(self.config.daemon.state_flush_seconds)
                    try:
                        if conn is None or conn.is_closed():
                            conn = await self.connect()
                        await flush(conn, self.tracker, self.heartbeat())
                        self.availability.succeeded("session state")
                    except DATABASE_ERRORS as exc:
                        self.availability.failed("session state", exc)
                        log.warning("session state not written; will retry", error=describe(exc))
                        if conn is not None:
                            conn.terminate()
                        conn = None
            finally:
                if conn is not None:
                    conn.terminate()

    async def final_flush(self) -> None:
        """Stop the periodic writes, then write the state once more with the heartbeat marked
        stopped (no periodic write may land after it and undo that)."""
        if self._state_scope is None:
            return
        self._state_stopped = True
        self._state_scope.cancel()
        with anyio.move_on_after(_FINAL_FLUSH_SECONDS):
            try:
                conn = await self.connect()
                try:
                    await flush(conn, self.tracker, self.heartbeat(stopped=True))
                finally:
                    await close_quietly(conn)
            except DATABASE_ERRORS as exc:
                log.warning("final session state not written", error=describe(exc))

    # -- loops ------------------------------------------------------------------------------------

    async def systemd_loop(self) -> None:
        interval = self.notifier.watchdog_interval or _STATUS_EVERY_SECONDS
        interval = min(interval, _STATUS_EVERY_SECONDS)
        while True:
            if self.components.alive():
                self.notifier.watchdog()
            else:
                log.error("a component gave up; withholding the systemd watchdog ping")
            if self.ready.is_set():
                self.notifier.status(self.status_line())
            await anyio.sleep(interval)

    async def summary_loop(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.config.daemon.summary_seconds)
            status = self.fleet.status(top=1)
            appender = self.appender.statistics()
            log.info(
                "summary",
                meters=status.meters,
                online=status.online,
                offline=status.offline,
                awaiting_first_answer=status.awaiting_first_answer,
                never_answered=status.never_answered,
                stale=status.stale,
                polls=status.polls,
                requests_ok=status.requests_ok,
                request_failures=sum(status.request_failures.values()),
                events_appended=appender.committed,
                queue=appender.queued,
                spilled=appender.pending_in_journal,
            )
