"""The daemon's task tree: start-up order, steady state, reload and shutdown.

Start-up: the file-descriptor limit is raised, the systemd watchdog loop starts (so a long
wait for the database is not mistaken for a hang), the database is waited for with a growing
delay (an outage is never fatal), the schema is checked (a mismatch is), then the management
endpoint and the mediator API bind (a taken address is fatal before anything is read), the
appender, the projector runner, the meter list with its resume points and change-detector
state, the fleet supervisor, the command table and the session-state writer start, and
systemd hears ``READY=1``.

SIGTERM/SIGINT: ``STOPPING=1``; the meter list stops reloading, no new poll starts, queued
commands are refused (claimed rows of the command table go back to pending), started ones
run to their end, in-flight polls end between two plan items or are abandoned after ``[meters]
stop_deadline_seconds``; the events of grouped reads still open are built, except a tariff
the stop cut short (its money fields incomplete), which is logged and counted in
``flowsd_ingest_incomplete_groups_total{cause="poll_stopped"}`` (the next poll reads it
whole); the appender commits (or spills) everything queued within ``[daemon] drain_seconds``;
the session-state writer stops and a last flush marks the heartbeat stopped; exit status 0.

SIGHUP: the configuration file is read again; a valid one replaces the poll plan, the meter
settings and the drift threshold (schedules of unchanged cadences are kept, queued events
untouched) and the meter list is reloaded; an invalid one is logged and ignored.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import anyio
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskGroup

from flowsd.config import Config, load_config, with_database_url
from flowsd.control.dispatch import Dispatcher
from flowsd.control.table import CommandTable
from flowsd.db.connect import CONNECTION_ERRORS, connect, create_pool_from_config
from flowsd.db.migrate import applied_versions, check_compatible, load_migrations
from flowsd.db.urls import redact
from flowsd.errors import ConfigError, UserError
from flowsd.events import metrics as event_metrics
from flowsd.events.appender import Appender
from flowsd.ingest.detector import ChangeDetector
from flowsd.ingest.pipeline import Ingest
from flowsd.ingest.seed import load_meter_states, load_resume
from flowsd.ingest.sessions import Heartbeat, SessionTracker, flush, load_rows
from flowsd.mediator.auth import Policy
from flowsd.mediator.server import serve_mediator, tls_enabled
from flowsd.mediator.service import MediatorService
from flowsd.meters.plan import PollPlan
from flowsd.meters.registry import RegistryMeter, RegistrySource
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import MeterResume, MeterTarget
from flowsd.ops.http import HealthChecks, serve_management
from flowsd.ops.metrics import sample_value, server_version, set_build_info
from flowsd.ops.notify import SystemdNotifier
from flowsd.projections.runner import ProjectorRunner
from flowsd.sim.limits import raise_open_files_limit

log = structlog.get_logger("flowsd.app")

WallClock = Callable[[], float]

_STATUS_EVERY_SECONDS = 5.0
_FINAL_FLUSH_SECONDS = 5.0
_DATABASE_LOST: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)
_STATE_WRITE_ERRORS: tuple[type[BaseException], ...] = (*_DATABASE_LOST, UserError)
_PROJECTOR_GRACE_SECONDS = 5.0


def _queue_depth() -> int:
    return int(sample_value("flowsd_appender_queue_events"))


def _events_appended() -> int:
    return int(sample_value("flowsd_events_appended_total"))


def _database_up() -> bool:
    return bool(sample_value("flowsd_appender_database_up"))


class Daemon:
    """One flowsd daemon; :meth:`run` returns the exit status."""

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
        self.tracker = SessionTracker()
        self.detector = ChangeDetector(
            clock_drift_threshold_seconds=config.ingest.clock_drift_threshold_seconds
        )
        self.appender = Appender.from_config(config, self._connect)
        self.ingest = Ingest(self.appender.append_many, self.detector, tracker=self.tracker)
        self.supervisor = FleetSupervisor(
            config.meters,
            PollPlan.from_config(config.poll),
            self.ingest,
            wall_clock=wall_clock,
            queue_size=config.commands.queue_size,
            readback_settle_seconds=config.commands.readback_settle_seconds,
        )
        self.dispatcher = Dispatcher(self.supervisor, lambda: self._pool)
        self.command_table = CommandTable(
            self._connect,
            self.dispatcher,
            instance=self.instance,
            poll_seconds=config.commands.table_poll_seconds,
        )
        self.registry = RegistrySource(
            self._connect, self._apply_meters, reload_seconds=config.daemon.registry_reload_seconds
        )
        self._appender_done = anyio.Event()
        self._appender_started = False
        self._registry_scope: anyio.CancelScope | None = None
        self._state_scope: anyio.CancelScope | None = None
        self._pool: asyncpg.Pool | None = None
        self.projectors: ProjectorRunner | None = None
        self.management_address: tuple[str, int] | None = None
        self.mediator_address: tuple[str, int] | None = None
        self._mediator_scope: anyio.CancelScope | None = None

    # -- running ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def _connect(self) -> asyncpg.Connection:
        return await connect(self.url, connect_timeout=self.config.database.connect_timeout_seconds)

    async def run(self) -> int:
        soft, hard = raise_open_files_limit()
        log.info("flowsd starting", database=redact(self.url), open_files=soft, hard_limit=hard)
        fatal: UserError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._systemd_loop)
            if self.handle_signals:
                tg.start_soon(self._signals)
            try:
                with anyio.CancelScope() as starting:
                    tg.start_soon(self._cancel_on_stop, starting)
                    if await self._wait_for_database():
                        await self._start(tg)
                await self.stop_requested.wait()
                await self._shutdown()
            except UserError as exc:  # e.g. the schema needs `flowsd migrate`
                fatal = exc
            finally:
                tg.cancel_scope.cancel()
        if self._pool is not None:
            with anyio.move_on_after(5, shield=True):
                await self._pool.close()
            self._pool.terminate()
        if fatal is not None:
            self.notifier.status(f"cannot start: {fatal}")
            raise fatal
        return 0

    async def _cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        """A stop request during start-up (e.g. while the database is away) ends the start."""
        await self.stop_requested.wait()
        scope.cancel()

    async def _start(self, tg: TaskGroup) -> None:
        # The endpoint is bound first: a taken address must end the start before any reading
        # is accepted (a fatal error cancels the task tree without draining the appender).
        if self.config.management.listen:
            listen = self.config.management.listen
            try:
                self.management_address = await tg.start(
                    serve_management, listen, self._health_checks()
                )
            except (OSError, ValueError) as exc:
                raise UserError(f"management endpoint: cannot listen on {listen}: {exc}") from exc
        if self.config.mediator.listen:
            self.mediator_address = await tg.start(self._run_mediator)
        tg.start_soon(self._run_appender)
        self._appender_started = True
        assert self._pool is not None  # opened by _wait_for_database
        self.projectors = ProjectorRunner(
            self._pool, self.config.projections, subscribe=self.appender.subscribe
        )
        await tg.start(self.projectors.run)
        await tg.start(self._run_registry)
        await tg.start(self.supervisor.run)
        if self.config.commands.table:
            await tg.start(self.command_table.run)
        self._state_scope = anyio.CancelScope()
        tg.start_soon(self._state_writer, self._state_scope)
        if self.config.daemon.summary_seconds > 0:
            tg.start_soon(self._summary_loop)
        self.ready.set()
        self.notifier.ready(self.status_line())
        log.info("flowsd ready", meters=len(self.supervisor.sessions))

    async def _run_appender(self) -> None:
        try:
            await self.appender.run()
        finally:
            self._appender_done.set()

    async def _run_mediator(self, *, task_status: anyio.abc.TaskStatus[tuple[str, int]]) -> None:
        mediator = self.config.mediator
        service = MediatorService(
            self.dispatcher,
            Policy(mediator, tls=tls_enabled(mediator)),
            lambda: self._pool,
            mediator.max_wait_seconds,
        )
        with anyio.CancelScope() as scope:
            self._mediator_scope = scope
            await serve_mediator(mediator, service, task_status=task_status)

    async def _run_registry(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._registry_scope = scope
            await self.registry.run(task_status=task_status)

    # -- database -----------------------------------------------------------------------------

    async def _wait_for_database(self) -> bool:
        """Connect, check the schema and open the projectors' pool, retrying with a growing
        delay while the database is away; False if stopped first. A schema this flowsd cannot
        run on is a :class:`UserError` (fatal)."""
        delay = self.config.database.reconnect_initial_seconds
        while not self.stop_requested.is_set():
            problem = await self._open_database()
            if problem is None:
                event_metrics.DATABASE_UP.set(1)
                return True
            self.notifier.status(f"waiting for the database: {problem}")
            log.warning("database unreachable; retrying", error=problem, retry_in=delay)
            with anyio.move_on_after(delay):
                await self.stop_requested.wait()
            delay = min(max(delay, 0.1) * 2, self.config.database.reconnect_max_seconds)
        return False

    async def _open_database(self) -> str | None:
        """None once the database is usable; otherwise why it is not (worth a retry)."""
        try:
            conn = await self._connect()
        except UserError as exc:
            return str(exc)
        try:
            set_build_info(postgres=server_version(conn))
            await check_schema(conn)
        except _DATABASE_LOST as exc:
            return f"lost during the schema check: {exc}"
        finally:
            conn.terminate()
        try:
            self._pool = await create_pool_from_config(self.config, self.url)
        except UserError as exc:
            return str(exc)
        return None

    # -- meters -------------------------------------------------------------------------------

    async def _apply_meters(self, meters: list[RegistryMeter], conn: asyncpg.Connection) -> None:
        """Make the fleet the registry's list; new meters get their resume and seed state."""
        known = self.supervisor.sessions
        new_ids = [m.meter_id for m in meters if m.meter_id not in known]
        resume = await load_resume(conn, new_ids) if new_ids else {}
        if new_ids:
            self.detector.states.update(await load_meter_states(conn, new_ids))
            for meter_id, row in (await load_rows(conn, new_ids)).items():
                self.tracker.rows.setdefault(meter_id, row)
        targets = []
        for meter in meters:
            self.ingest.set_hardware(meter.meter_id, meter.hardware)
            targets.append(
                MeterTarget(
                    meter_id=meter.meter_id,
                    serial=meter.serial,
                    ip_address=meter.ip_address,
                    hardware=meter.hardware,
                    resume=resume.get(meter.meter_id, MeterResume()),
                )
            )
        wanted = {m.meter_id for m in meters}
        gone = [meter_id for meter_id in known if meter_id not in wanted]
        result = self.supervisor.apply(targets)
        for meter_id in gone:
            self._forget(meter_id)
        log.info(
            "meter list applied",
            added=result.added,
            updated=result.updated,
            removed=result.removed,
            unchanged=result.unchanged,
        )

    def _forget(self, meter_id: UUID) -> None:
        self.ingest.forget(meter_id)
        self.detector.forget(meter_id)
        self.tracker.forget(meter_id)

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
        self.registry.reload_seconds = fresh.daemon.registry_reload_seconds
        self.config = msgspec.structs.replace(
            self.config, meters=fresh.meters, poll=fresh.poll, ingest=fresh.ingest
        )
        self.registry.request_reload()
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
            if self._registry_scope is not None:
                self._registry_scope.cancel()
            await self.supervisor.stop()
            with anyio.move_on_after(self.config.daemon.drain_seconds):
                await self.command_table.stop()
            if self._mediator_scope is not None:
                self._mediator_scope.cancel()
            if self._appender_started:
                leftovers = self.ingest.pending_events()
                if leftovers:
                    await self.appender.append_many(leftovers)
                with anyio.move_on_after(self.config.daemon.drain_seconds):
                    self.appender.stop()
                    await self._appender_done.wait()
                if not self._appender_done.is_set():
                    log.error("appender did not finish within the drain deadline")
                await self._let_projectors_catch_up()
            if self._state_scope is not None:
                # No periodic write may land after (and undo) the final "stopped" one.
                self._state_scope.cancel()
                with anyio.move_on_after(_FINAL_FLUSH_SECONDS):
                    try:
                        await self._flush_state(stopped=True)
                    except _STATE_WRITE_ERRORS as exc:
                        log.warning("final session state not written", error=str(exc))
        log.info(
            "flowsd stopped",
            events_appended=_events_appended(),
            spilled_events=self.appender.spilled_events,
        )

    async def _let_projectors_catch_up(self) -> None:
        """A short grace for projectors to apply the last batches (they would catch up at the
        next start anyway)."""
        if self.projectors is None:
            return
        head = max((s.checkpoint + s.lag_events for s in self.projectors.status()), default=0)
        if not await self.projectors.wait_caught_up(head, _PROJECTOR_GRACE_SECONDS):
            log.info("projectors still behind at stop; they resume from their checkpoints")

    # -- housekeeping -------------------------------------------------------------------------

    def heartbeat(self, *, stopped: bool = False) -> Heartbeat:
        online, offline = self._online_counts()
        return Heartbeat(
            instance=self.instance,
            started_at=self.started_at,
            meters=len(self.supervisor.sessions),
            online=online,
            offline=offline,
            queue_depth=_queue_depth(),
            spilled_events=self.appender.spilled_events,
            events_appended=_events_appended(),
            database_up=_database_up(),
            status=self.status_line(),
            stopped=stopped,
        )

    def _online_counts(self) -> tuple[int, int]:
        sessions = self.supervisor.sessions.values()
        online = sum(1 for s in sessions if s.breaker.online)
        return online, len(self.supervisor.sessions) - online

    def status_line(self) -> str:
        online, _ = self._online_counts()
        return (
            f"meters {online}/{len(self.supervisor.sessions)} online; "
            f"db {'ok' if _database_up() else 'down'}; queue {_queue_depth()}; "
            f"spilled {self.appender.spilled_events}"
        )

    async def _flush_state(self, *, stopped: bool = False) -> None:
        conn = await self._connect()
        try:
            await flush(conn, self.tracker, self.heartbeat(stopped=stopped))
        finally:
            await conn.close()

    async def _state_writer(self, scope: anyio.CancelScope) -> None:
        conn: asyncpg.Connection | None = None
        with scope:
            try:
                while True:
                    await anyio.sleep(self.config.daemon.state_flush_seconds)
                    try:
                        if conn is None or conn.is_closed():
                            conn = await self._connect()
                        await flush(conn, self.tracker, self.heartbeat())
                    except _STATE_WRITE_ERRORS as exc:
                        log.warning("session state not written; will retry", error=str(exc))
                        if conn is not None:
                            conn.terminate()
                        conn = None
            finally:
                if conn is not None:
                    conn.terminate()

    async def _systemd_loop(self) -> None:
        """WATCHDOG=1 from the event loop itself (a blocked loop stops the pings), gated on the
        daemon's own tasks being alive, never on the database; STATUS= with it."""
        interval = self.notifier.watchdog_interval or _STATUS_EVERY_SECONDS
        interval = min(interval, _STATUS_EVERY_SECONDS)
        while True:
            if self._alive():
                self.notifier.watchdog()
            else:
                log.error("an internal task died; withholding the systemd watchdog ping")
            if self.ready.is_set():
                self.notifier.status(self.status_line())
            await anyio.sleep(interval)

    def _alive(self) -> bool:
        if not self.ready.is_set() or self.stop_requested.is_set():
            return True
        return not self._appender_done.is_set() and self.supervisor.status(top=0).running

    async def _summary_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.daemon.summary_seconds)
            status = self.supervisor.status(top=1)
            log.info(
                "summary",
                meters=status.meters,
                online=status.online,
                offline=status.offline,
                stale=status.stale,
                polls=status.polls,
                requests_ok=status.requests_ok,
                request_failures=sum(status.request_failures.values()),
                events_appended=_events_appended(),
                queue=_queue_depth(),
                spilled=self.appender.spilled_events,
            )

    def _health_checks(self) -> HealthChecks:
        queue_limit = self.config.appender.queue_size * 0.9
        return HealthChecks(
            liveness={
                "appender": lambda: not self._appender_done.is_set(),
                "supervisor": lambda: self.supervisor.status(top=0).running,
            },
            readiness={
                "started": self.ready.is_set,
                "database": _database_up,
                "queue": lambda: _queue_depth() < queue_limit,
                "projectors": lambda: self.projectors is None or self.projectors.ready(),
            },
        )


async def check_schema(conn: asyncpg.Connection) -> None:
    """Refuse to run on a database migrated by a newer flowsd, with an applied migration that
    differs from this flowsd's file, or lacking one of this flowsd's migrations."""
    migrations = load_migrations()
    applied = await applied_versions(conn)
    check_compatible(applied, migrations)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise UserError(
            f"the database lacks migrations {', '.join(map(str, missing))}: run `flowsd migrate`"
        )
