"""The daemon's task tree: start-up order, steady state, reload and shutdown.

Start-up: the file-descriptor limit is raised, the systemd watchdog loop starts, the
management endpoint binds (a taken address is fatal, exit status 2, before anything is read;
from now on ``/healthz`` answers 200 and ``/readyz`` 503 naming the database until the
daemon is running), then the database is tried. A refusal (no such database, wrong password or
role, no ``pg_hba`` entry) is fatal at once (one line, exit status 2). An unreachable or
unusable server is retried with the shared backoff, and systemd hears ``READY=1`` with
``STATUS=waiting for the database: ...`` right after the first failed attempt: being up
and waiting for the database is the same state the daemon is in during any later outage, so
the unit's start timeout can never kill a daemon that is doing the right thing (the
alternative, ``EXTEND_TIMEOUT_USEC`` while waiting, would hold ``systemctl start`` and boot
ordering for as long as the database is away). Once connected the schema is checked (a
mismatch is fatal), the mediator API binds (a taken address is fatal), the appender, the
projector runner, the meter list with its resume points and change-detector state, the fleet
supervisor, the command table and the session-state writer start, each under the component
supervisor (:mod:`flowsd.supervision`), and ``READY=1`` follows if it was not sent yet.
While the daemon runs, the cycle collector collects its youngest generation less often, and
the heap is collected and frozen once the fleet is quiet after meters joined or left, and
hourly (:mod:`flowsd.ops.heap`); its collections are timed for ``/metrics``.

Steady state: every database-facing loop retries :data:`~flowsd.db.errors.DATABASE_ERRORS`
itself and reports to one :class:`~flowsd.db.availability.DatabaseAvailability`, which
``/readyz``, ``STATUS=`` and the heartbeat read. A component failing for any other reason is
restarted with backoff; past ``[daemon] restart_limit`` failures within
``restart_window_seconds`` the daemon stops as on SIGTERM (queued events committed or
spilled) and exits with status 1.

SIGTERM/SIGINT: ``STOPPING=1``; the meter list stops reloading, no new poll starts, queued
commands are refused (claimed rows of the command table go back to pending), started ones
run to their end, in-flight polls end between two plan items or are abandoned after ``[meters]
stop_deadline_seconds``; the events of grouped reads still open are built, except a tariff
the stop cut short (its money fields incomplete), which is logged and counted in
``flowsd_ingest_incomplete_groups_total{cause="poll_stopped"}`` (the next poll reads it
whole); the appender commits (or spills) everything queued within ``[daemon] drain_seconds``;
the session-state writer stops and a last flush marks the heartbeat stopped; exit status 0.

SIGHUP: the configuration file is read again; a valid one replaces the poll plan, the meter
settings, the drift threshold and ``[daemon] registry_reload_seconds`` (schedules of unchanged
cadences are kept, queued events untouched) and the meter list is reloaded; an invalid one is
logged and ignored.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import anyio
import anyio.abc
import msgspec
import structlog
from anyio.abc import TaskGroup
from prometheus_client.metrics_core import Metric

from flowsd.backoff import Backoff
from flowsd.config import Config, load_config, with_database_url
from flowsd.control.dispatch import Dispatcher
from flowsd.control.table import CommandTable
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.daemon import DaemonDatabase
from flowsd.db.urls import redact
from flowsd.errors import ConfigError, UserError
from flowsd.events.appender import Appender
from flowsd.events.metrics import appender_families
from flowsd.housekeeping import Housekeeping
from flowsd.ingest.detector import ChangeDetector
from flowsd.ingest.metrics import ingest_families
from flowsd.ingest.pipeline import Ingest
from flowsd.ingest.sessions import SessionTracker
from flowsd.mediator.auth import Policy
from flowsd.mediator.metrics import mediator_families
from flowsd.mediator.server import serve_mediator, tls_enabled
from flowsd.mediator.service import MediatorService, MediatorStatistics
from flowsd.meter_list import MeterList
from flowsd.meters.metrics import fleet_families, ownership_families, registry_families
from flowsd.meters.ownership import Ownership
from flowsd.meters.plan import PollPlan
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.ops import heap
from flowsd.ops.event_loop import loop_in_use
from flowsd.ops.http import serve_management
from flowsd.ops.limits import keep_large_blocks_mapped, raise_open_files_limit
from flowsd.ops.metrics import STATISTICS
from flowsd.ops.notify import SystemdNotifier
from flowsd.projections.metrics import projector_families
from flowsd.projections.runner import ProjectorRunner
from flowsd.supervision import (
    ComponentGaveUpError,
    RestartPolicy,
    Supervisor,
    component_families,
)

log = structlog.get_logger("flowsd.app")

WallClock = Callable[[], float]

_PROJECTOR_GRACE_SECONDS = 5.0
EXIT_COMPONENT_FAILED = 1


class Daemon:
    """One flowsd daemon; :meth:`run` returns the exit status (0, or 1 when a component gave
    up) and raises a :class:`UserError` for a fatal start-up problem."""

    def __init__(
        self,
        config: Config,
        database_url: str,
        *,
        config_path: str | None = None,
        cli_database_url: str | None = None,
        notifier: SystemdNotifier | None = None,
        wall_clock: WallClock = time.time,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.url = database_url
        self.config_path = config_path
        self.cli_database_url = cli_database_url
        self.notifier = notifier or SystemdNotifier()
        self.wall_clock = wall_clock
        self.handle_signals = handle_signals
        self.instance = config.daemon.instance or socket.gethostname()
        self.stop_requested = anyio.Event()
        self.ready = anyio.Event()
        self.started_at = datetime.now(UTC)
        self.availability = DatabaseAvailability(redact(database_url))
        self.database = DaemonDatabase(
            config,
            database_url,
            availability=self.availability,
            notifier=self.notifier,
            ready=self.ready,
        )
        connect = self.database.connect
        self.components = Supervisor(
            RestartPolicy(
                backoff=Backoff(
                    config.daemon.restart_initial_seconds, config.daemon.restart_max_seconds
                ),
                limit=config.daemon.restart_limit,
                window_seconds=config.daemon.restart_window_seconds,
            ),
            on_give_up=self._component_gave_up,
        )
        self.tracker = SessionTracker()
        self.detector = ChangeDetector(
            clock_drift_threshold_seconds=config.ingest.clock_drift_threshold_seconds
        )
        self.appender = Appender.from_config(config, connect, self.availability)
        self.ingest = Ingest(self.appender.append_many, self.detector, tracker=self.tracker)
        self.supervisor = FleetSupervisor(
            config.meters,
            PollPlan.from_config(config.poll),
            self.ingest,
            wall_clock=wall_clock,
            queue_size=config.commands.queue_size,
            readback_settle_seconds=config.commands.readback_settle_seconds,
        )
        self.dispatcher = Dispatcher(self.supervisor, lambda: self.database.pool)
        self.ownership = Ownership(
            connect,
            self.supervisor,
            # Late-bound: the meter list is made below, with these leases.
            lambda conn: self.meter_list.apply_owned(conn),  # noqa: PLW0108
            name=self.instance,
            lease_seconds=config.leases.lease_seconds,
            renew_seconds=config.leases.renew_seconds,
            availability=self.availability,
        )
        self.appender.epochs = self.ownership.epochs
        self.command_table = CommandTable(
            connect,
            self.dispatcher,
            instance=self.instance,
            poll_seconds=config.commands.table_poll_seconds,
            leases=self.ownership,
        )
        self.freezer = heap.Freezer()
        self.meter_list = MeterList(
            self.supervisor,
            self.ownership,
            self.ingest,
            self.tracker,
            connect,
            config.daemon.registry_reload_seconds,
            self.database.reconnect_backoff(),
            self.availability,
            fleet_changed=self.freezer.fleet_changed,
        )
        self._appender_done = anyio.Event()
        self._appender_started = False
        self._failure: ComponentGaveUpError | None = None
        self._fatal: UserError | None = None
        self._ownership_scope: anyio.CancelScope | None = None
        self.housekeeping = Housekeeping(
            config=config,
            instance=self.instance,
            started_at=self.started_at,
            fleet=self.supervisor,
            appender=self.appender,
            availability=self.availability,
            tracker=self.tracker,
            components=self.components,
            notifier=self.notifier,
            ready=self.ready,
            connect=connect,
        )
        self.projectors: ProjectorRunner | None = None
        self.management_address: tuple[str, int] | None = None
        self.mediator_address: tuple[str, int] | None = None
        self._mediator_scope: anyio.CancelScope | None = None
        self.mediator: MediatorService | None = None

    # -- running ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self) -> int:
        STATISTICS.attach(self.metric_families)
        try:
            with heap.HEAP.tuned():
                return await self._run()
        finally:
            STATISTICS.detach(self.metric_families)

    def metric_families(self) -> Iterator[Metric]:
        """The families ``/metrics`` serves from the components' statistics."""
        yield from appender_families(self.appender.statistics())
        yield from fleet_families(self.supervisor.statistics())
        yield from ingest_families(self.ingest.statistics())
        yield from registry_families(self.meter_list.registry.statistics())
        yield from ownership_families(self.ownership.statistics())
        yield from component_families(self.components.statistics())
        yield from heap.collector_families(heap.HEAP.statistics())
        mediator = self.mediator
        # Without a mediator its families are served empty: /metrics names the same families.
        idle = MediatorStatistics(calls={}, refusals={})
        yield from mediator_families(mediator.statistics() if mediator is not None else idle)
        projectors = self.projectors
        # Before the projectors start, their families are served without series.
        yield from projector_families(projectors.statistics() if projectors is not None else ())

    async def _run(self) -> int:
        soft, hard = raise_open_files_limit()
        log.info(
            "flowsd starting",
            database=redact(self.url),
            open_files=soft,
            hard_limit=hard,
            large_blocks_mapped=keep_large_blocks_mapped(),
            event_loop=loop_in_use(),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.housekeeping.systemd_loop)
            if self.handle_signals:
                tg.start_soon(self._signals)
            try:
                with anyio.CancelScope() as starting:
                    tg.start_soon(self._cancel_on_stop, starting)
                    await self._serve_management(tg)
                    if await self.database.wait_until_open(self.stop_requested):
                        await self._start(tg)
                await self.stop_requested.wait()
                await self._shutdown()
            except UserError as exc:  # e.g. the schema needs `flowsd migrate`
                self._fatal = exc
            except ComponentGaveUpError as exc:  # failed for good before it ever started
                self._failure = exc
                await self._shutdown()
            finally:
                tg.cancel_scope.cancel()
        await self.database.close()
        if self._fatal is not None:
            self.notifier.status(f"cannot start: {self._fatal}")
            raise self._fatal
        if self._failure is not None:
            self.notifier.status(f"stopped: {self._failure}")
            return EXIT_COMPONENT_FAILED
        return 0

    async def _cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        """A stop request during start-up (e.g. while the database is away) ends the start."""
        await self.stop_requested.wait()
        scope.cancel()

    def _component_gave_up(self, error: BaseException) -> None:
        """A component failed past the restart limit (or fatally): stop, draining first."""
        if isinstance(error, UserError):
            self._fatal = self._fatal or error
        elif isinstance(error, ComponentGaveUpError) and self._failure is None:
            self._failure = error
        self.request_stop()

    async def _serve_management(self, tg: TaskGroup) -> None:
        """Bind the endpoint before anything else: a taken address ends the start at once,
        and /healthz, /readyz answer while the database is still being waited for."""
        listen = self.config.management.listen
        if not listen:
            return
        checks = self.housekeeping.health_checks()
        try:
            self.management_address = await tg.start(serve_management, listen, checks)
        except (OSError, ValueError) as exc:
            raise UserError(f"management endpoint: cannot listen on {listen}: {exc}") from exc

    async def _start(self, tg: TaskGroup) -> None:
        if self.config.mediator.listen:
            self.mediator_address = await tg.start(self._run_mediator)
        tg.start_soon(self._run_appender)
        self._appender_started = True
        assert self.database.pool is not None  # opened by wait_until_open
        self.projectors = ProjectorRunner(
            self.database.pool,
            self.config.projections,
            subscribe=self.appender.subscribe,
            availability=self.availability,
            supervisor=self.components,
            instance=self.instance,
        )
        self.housekeeping.projectors = self.projectors
        await tg.start(self.projectors.run)
        await tg.start(self.components.run, "meter_list", self.meter_list.run)
        await tg.start(self.components.run, "meters", self.supervisor.run)
        await tg.start(self.components.run, "leases", self._run_ownership)
        if self.config.commands.table:
            await tg.start(self.components.run, "command_table", self.command_table.run)
        tg.start_soon(self.components.run, "session_state", self.housekeeping.state_writer)
        if self.config.daemon.summary_seconds > 0:
            tg.start_soon(self.components.run, "summary", self.housekeeping.summary_loop)
        tg.start_soon(self.components.run, "heap_freezer", self.freezer.run)
        self.ready.set()
        self.notifier.ready_or_status(self.status_line())
        log.info("flowsd ready", meters=len(self.supervisor.sessions))

    async def _run_appender(self) -> None:
        try:
            await self.components.run("appender", self._appender_task)
        finally:
            self._appender_done.set()

    async def _appender_task(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await self.appender.run()

    async def _run_mediator(self, *, task_status: anyio.abc.TaskStatus[tuple[str, int]]) -> None:
        mediator = self.config.mediator
        service = self.mediator = MediatorService(
            self.dispatcher,
            Policy(mediator, tls=tls_enabled(mediator)),
            lambda: self.database.pool,
            mediator.max_wait_seconds,
            leases=self.ownership,
        )
        with anyio.CancelScope() as scope:
            self._mediator_scope = scope
            await serve_mediator(mediator, service, task_status=task_status)

    async def _run_ownership(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._ownership_scope = scope
            await self.ownership.run(task_status=task_status)

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration file and apply what can change live (SIGHUP)."""
        try:
            fresh = with_database_url(load_config(self.config_path), self.cli_database_url)
            plan = PollPlan.from_config(fresh.poll)
            self.supervisor.reconfigure(fresh.meters, plan)
        except ConfigError as exc:
            log.error("configuration reload refused; keeping the running one", error=str(exc))
            return False
        self.detector.drift_threshold = fresh.ingest.clock_drift_threshold_seconds
        reload_seconds = fresh.daemon.registry_reload_seconds
        self.meter_list.registry.reload_seconds = reload_seconds
        # self.config holds what is in force: the rest of [daemon] applies only at start.
        self.config = msgspec.structs.replace(
            self.config,
            meters=fresh.meters,
            poll=fresh.poll,
            ingest=fresh.ingest,
            daemon=msgspec.structs.replace(
                self.config.daemon, registry_reload_seconds=reload_seconds
            ),
        )
        self.meter_list.registry.request_reload()
        log.info("configuration reloaded", cadences=list(plan.cadence_names()))
        return True

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    log.info("stop requested", signal=signal.Signals(signum).name)
                    self.request_stop()

    # -- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self.notifier.stopping(f"stopping; {self.status_line()}")
        with anyio.CancelScope(shield=True):
            self.meter_list.stop()
            if self._ownership_scope is not None:
                self._ownership_scope.cancel()
            await self.supervisor.stop()
            with anyio.move_on_after(self.config.daemon.drain_seconds):
                await self.command_table.stop()
            if self._mediator_scope is not None:
                self._mediator_scope.cancel()
            if self._appender_started:
                await self._drain_appender()
                await self.ownership.release_all()
                await self._let_projectors_catch_up()
            await self.housekeeping.final_flush()
        log.info(
            "flowsd stopped",
            events_appended=self.appender.statistics().committed,
            spilled_events=self.appender.spilled_events,
        )

    async def _drain_appender(self) -> None:
        """Commit (or spill) everything accepted; if the appender is gone for good, spill."""
        leftovers = self.ingest.pending_events()
        if not self.appender.running:
            await self.appender.spill_remaining(leftovers, reason="appender not running at stop")
            return
        with anyio.move_on_after(self.config.daemon.drain_seconds):
            if leftovers:
                await self.appender.append_many(leftovers)
            self.appender.stop()
            await self._appender_done.wait()
        if self._appender_done.is_set():
            # Whatever a failing appender left behind (normally nothing) goes to the journal.
            await self.appender.spill_remaining(reason="events left when the appender ended")
        else:
            log.error("appender did not finish within the drain deadline")

    def status_line(self) -> str:
        return self.housekeeping.status_line()

    async def _let_projectors_catch_up(self) -> None:
        """A short grace for projectors to apply the last batches (they would catch up at the
        next start anyway)."""
        if self.projectors is None:
            return
        head = max((s.checkpoint + s.lag_events for s in self.projectors.status()), default=0)
        if not await self.projectors.wait_caught_up(head, _PROJECTOR_GRACE_SECONDS):
            log.info("projectors still behind at stop; they resume from their checkpoints")
