"""The fleet supervisor: one wave scheduler waking the meter sessions that are due.

Instead of a timer per meter, one ticker (every ``schedule_tick_seconds``) pops the meters
whose next due time has come from a heap and starts their poll (or breaker probe) in the
task group (the stand-alone measurements in research/perf-limits.md §5 found one ticker
cheaper than a timer per meter). At most :func:`~flowsd.meters.launcher.bound_for` meter
tasks run at once: due meters beyond it wait in a :class:`~flowsd.meters.launcher.LaunchQueue`
(those with commands or poll requests first) and start as running tasks end. A meter still
busy when due is not started twice; its missed slots are counted when it next runs. Two
meter ids sharing one address take turns.

Public surface::

    supervisor = FleetSupervisor(config.meters, PollPlan.from_config(config.poll), sink)
    supervisor.apply(targets)            # add / update / remove meters, any time
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)   # returns once running
        ...
        await supervisor.stop()          # stop dialling, let in-flight polls end, then return
    supervisor.statistics()              # the engine's counts and the fleet's state
    supervisor.status()                  # counts, in-flight, slowest and failing meters
    supervisor.reconfigure(meters, plan) # a reloaded config: caps, timeouts, cadences
    await supervisor.submit(meter_id, command)   # a command joins the meter's session
    await supervisor.poll_now(meter_id).wait()   # a full poll of one meter, now

A meter *held back* (:meth:`FleetSupervisor.hold_back`: its lease is to be handed to another
daemon) starts no routine poll; its running poll ends normally, and once :meth:`idle` says so
it can leave the fleet between two polls. Commands and poll requests still run.

A command or a poll request wakes its meter at the next tick: an idle meter runs it at once
(ahead of its routine polls), a busy one between two plan items of the poll in progress.

Every few seconds the run loop applies the stale-meter rule (:mod:`flowsd.meters.freshness`)
to the fleet: the count of stale meters (``flowsd_meters_stale``) and a log line per meter
that turns stale or fresh again (:class:`~flowsd.meters.freshness_watch.FreshnessWatch`).

The supervisor owns the sessions and decides what a started meter runs (a poll, a probe, its
commands). The objects it is made of: the heap, the launch queue and the address turns
(:class:`~flowsd.meters.scheduler.FleetScheduler`), the stale-meter rule
(:class:`~flowsd.meters.freshness_watch.FreshnessWatch`), the meters by breaker state
(:class:`~flowsd.meters.statistics.FleetTally`) and the status snapshot
(:func:`~flowsd.meters.status.fleet_status`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from flowsd.config import MetersConfig
from flowsd.emop import UnknownObjectError, by_name
from flowsd.errors import ConfigError
from flowsd.meters import metrics
from flowsd.meters.command import CommandResult, MeterCommand
from flowsd.meters.freshness_watch import FreshnessWatch
from flowsd.meters.inbox import PollRequest, QueueFullError
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import ObservationSink
from flowsd.meters.plan import PollPlan
from flowsd.meters.poll import Poll, Probe
from flowsd.meters.scheduler import Address, FleetScheduler
from flowsd.meters.session import Job, MeterSession, WallClock
from flowsd.meters.statistics import EngineCounts, FleetStatistics, FleetTally
from flowsd.meters.status import FleetStatus, fleet_status, utc
from flowsd.meters.target import MeterTarget


class ApplyResult(msgspec.Struct, frozen=True):
    added: int
    updated: int
    removed: int
    unchanged: int


class CommandRefusedError(Exception):
    """A command (or poll request) that cannot join its meter's session.

    ``reason``: ``not_found`` (not in this daemon's fleet), ``unavailable`` (the meter is
    offline), ``queue_full``, ``stopping``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class FleetSupervisor:
    """Owns the meter sessions and the fleet-wide limits; runs the meters that are due."""

    settings: MetersConfig
    plan: PollPlan
    sink: ObservationSink
    _: KW_ONLY
    wall_clock: WallClock = time.time
    rng: random.Random = field(default_factory=random.Random)
    queue_size: int = 16
    readback_settle_seconds: float = 10.0
    counts: EngineCounts = field(default_factory=EngineCounts, init=False)
    sessions: dict[UUID, MeterSession] = field(default_factory=dict, init=False)
    tally: FleetTally = field(default_factory=FleetTally, init=False)

    def __post_init__(self) -> None:
        FleetSupervisor._check(self.settings)
        self.limiter = self._limiter(self.settings)
        self.scheduler = FleetScheduler(self.sessions, self.settings)
        self.freshness = FreshnessWatch(self.sessions, self.wall_clock)
        self._stopping = False
        # One callable for every session (a lambda per session was a function and a cell,
        # 200 bytes per meter).
        self._is_stopping: Callable[[], bool] = lambda: self._stopping
        self._running = False
        self._stopped = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._by_serial: dict[str, UUID] = {}

    def _limiter(self, settings: MetersConfig) -> ConnectionLimiter:
        return ConnectionLimiter(
            settings.max_connections_in_flight,
            settings.max_new_connections_per_second,
            settings.new_connections_burst,
            totals=self.counts.connections,
        )

    # ----------------------------------------------------------------- meters

    def apply(self, targets: Iterable[MeterTarget]) -> ApplyResult:
        """Make the fleet exactly ``targets``. Unchanged meters keep schedule and cursors;
        changed ones (address, port, hardware) keep them too; removed ones are abandoned."""
        wanted = {t.meter_id: t for t in targets}
        added = updated = removed = unchanged = 0
        for meter_id in list(self.sessions):
            if meter_id not in wanted:
                gone = self.sessions.pop(meter_id)
                self.tally.left(gone)
                self.freshness.left(meter_id)
                self.scheduler.left(gone)
                if gone.cancel_scope is not None:
                    gone.cancel_scope.cancel()
                self._forsake(gone, "the meter left the fleet")
                removed += 1
        for meter_id, target in wanted.items():
            session = self.sessions.get(meter_id)
            if session is None:
                session = MeterSession(
                    target,
                    settings=self.settings,
                    plan=self.plan,
                    limiter=self.limiter,
                    sink=self.sink,
                    counts=self.counts,
                    wall_clock=self.wall_clock,
                    rng=self.rng,
                    stopping=self._is_stopping,
                    queue_size=self.queue_size,
                    readback_settle_seconds=self.readback_settle_seconds,
                )
                self.sessions[meter_id] = session
                self.tally.joined(session)
                self.freshness.joined(session)
                self.scheduler.push(session)
                added += 1
            elif session.target.same_identity(target):
                unchanged += 1
            else:
                session.update_target(target)
                self.freshness.changed(session)
                if not session.running:
                    self.scheduler.push(session)
                updated += 1
        self._by_serial = {
            s.target.serial: meter_id for meter_id, s in self.sessions.items() if s.target.serial
        }
        return ApplyResult(added, updated, removed, unchanged)

    def _forsake(self, session: MeterSession, why: str) -> None:
        """Fail what a session that is going away still holds for callers."""
        session.finish_poll_requests(None)
        if session.commands and self._task_group is not None:
            self._task_group.start_soon(session.fail_queued, "unavailable", why)
        else:
            session.drop_queued(CommandResult(ok=False, reason="unavailable", detail=why))

    def reconfigure(self, settings: MetersConfig, plan: PollPlan) -> None:
        """Apply a reloaded ``[meters]``/``[poll]`` without restarting anything.

        Meters keep their cursors, breaker state and the slots of every cadence whose period
        is unchanged; caps apply to new connections (open ones finish under the old caps).
        """
        FleetSupervisor._check(settings)
        if (
            settings.max_connections_in_flight != self.settings.max_connections_in_flight
            or settings.max_new_connections_per_second
            != self.settings.max_new_connections_per_second
            or settings.new_connections_burst != self.settings.new_connections_burst
        ):
            self.limiter = self._limiter(settings)
        self.settings = settings
        self.plan = plan
        self.scheduler.reconfigure(settings)
        now = self.wall_clock()
        for session in self.sessions.values():
            session.reconfigure(settings, plan, self.limiter)
            if not session.running:
                self.scheduler.push(session)
        self.freshness.restart_all(now)

    @staticmethod
    def _check(settings: MetersConfig) -> None:
        try:
            by_name(settings.probe_object)
        except UnknownObjectError:
            raise ConfigError(
                f"key 'meters.probe_object': unknown object {settings.probe_object!r}"
            ) from None

    def hold_back(self, meter_ids: Iterable[UUID], *, release: bool = False) -> None:
        """Start no more routine polls of these meters (``release``: start them again)."""
        self.scheduler.hold_back(meter_ids, release=release)

    @property
    def held_back(self) -> AbstractSet[UUID]:
        """The meters held back (read only)."""
        return self.scheduler.held_back

    def is_held_back(self, meter_id: UUID) -> bool:
        return meter_id in self.scheduler.held_back

    def idle(self, meter_id: UUID) -> bool:
        """Nothing runs or waits in the meter's session (it may leave the fleet now)."""
        session = self.sessions.get(meter_id)
        return session is None or not (session.running or session.commands or session.poll_requests)

    # ----------------------------------------------------------------- running

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the fleet until :meth:`stop`; returns when in-flight polls are done. May be
        run again after it failed (sessions, schedules and cursors are kept)."""
        self._running = True
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                task_status.started()
                while not self._stopping:
                    self.limiter.expire(self.wall_clock())
                    self.scheduler.wake_due(self.wall_clock())
                    self._start_queued(tg)
                    self.freshness.check()
                    await anyio.sleep(self.settings.schedule_tick_seconds)
                with anyio.move_on_after(self.settings.stop_deadline_seconds):
                    await self.scheduler.idle.wait()
                tg.cancel_scope.cancel()
        finally:
            self._running = False
            self._task_group = None
            self._stopped.set()

    def _start_queued(self, tg: TaskGroup) -> None:
        """Start queued meters while fewer than the bound run, then hold back-fill while
        some still wait (live work first, :mod:`flowsd.meters.launcher`)."""
        # Nothing is started into a group being cancelled (run() failed or gave up waiting).
        if not (self._stopping or tg.cancel_scope.cancel_called):
            for session in self.scheduler.startable():
                self._launch(tg, session, self.wall_clock())
        held = len(self.scheduler.launches) > 0
        if held != self.limiter.backfill_held:
            self.limiter.hold_backfill(held)

    def _launch(self, tg: TaskGroup, session: MeterSession, now: float) -> None:
        if session.poll_requests:
            # Asked for (`flowsd poll`): every cadence, whatever the breaker says.
            due = session.schedule.due(now)
            session.schedule.mark_done(due, now)
            self._start(tg, session, Poll(session.plan.cadence_names()))
        elif not session.breaker.offline:
            due = session.schedule.due(now)
            if not due:
                if session.commands or session.readback_due <= now:
                    self._start(tg, session, None)
                else:
                    self.scheduler.push(session)
                return
            lateness = session.schedule.lateness(due, now)
            metrics.SCHEDULE_LATENESS.observe(lateness)
            skipped = session.schedule.mark_done(due, now)
            if skipped:
                self.counts.skipped_slots += skipped
            self._start(tg, session, Poll(tuple(due)))
        elif session.commands:
            self._start(tg, session, None)  # fails them: the meter went offline meanwhile
        elif session.breaker.probe_due(now):
            self._start(tg, session, Probe())
        else:
            self.scheduler.push(session)

    def _next_waiter(self, address: Address) -> None:
        session = self.scheduler.next_waiter(address)
        if session is None:
            return
        tg = self._task_group
        if tg is None or self._stopping:
            self.scheduler.push(session)
        else:
            self._launch(tg, session, self.wall_clock())

    def _start(self, tg: TaskGroup, session: MeterSession, job: Job | None) -> None:
        self.scheduler.started(session)
        tg.start_soon(self._drive, session, job)

    async def _drive(self, session: MeterSession, job: Job | None) -> None:
        before = session.breaker.state
        waiting: list[PollRequest] = list(session.poll_requests) if isinstance(job, Poll) else []
        outcome = None
        answered_before = session.answered_ever
        try:
            outcome = await session.run(job)
        finally:
            session.finish_poll_requests(outcome, waiting)
            address = self.scheduler.ended(session)
            if self.sessions.get(session.target.meter_id) is session:
                self.tally.ran(session, before, answered_before)
                self.freshness.ran(session, before, outcome)
                self.scheduler.push(session)
            self._next_waiter(address)
            if self._task_group is not None:
                self._start_queued(self._task_group)

    async def stop(self, deadline: float | None = None) -> None:
        """Stop dialling; in-flight polls end after their current request (or are abandoned
        after ``deadline``, default ``stop_deadline_seconds``); returns when run() has."""
        if deadline is not None:
            self.settings = msgspec.structs.replace(self.settings, stop_deadline_seconds=deadline)
        self._stopping = True
        for session in self.sessions.values():
            # Not dialled yet: nothing is in flight for these, so end them now.
            if session.waiting_for_slot and session.cancel_scope is not None:
                session.cancel_scope.cancel()
            session.finish_poll_requests(None)
            if session.commands:
                with anyio.CancelScope(shield=True):
                    await session.fail_queued("stopped", "the daemon is stopping")
        if self._running:
            await self._stopped.wait()

    # ----------------------------------------------------------------- commands

    def meter_id_of(self, serial: str) -> UUID | None:
        """The fleet's meter with this serial (None: not polled by this daemon)."""
        return self._by_serial.get(serial)

    def _session_for(self, meter_id: UUID) -> MeterSession:
        if self._stopping:
            self.counts.commands_refused["stopping"] += 1
            raise CommandRefusedError("stopping", "the daemon is stopping")
        session = self.sessions.get(meter_id)
        if session is None:
            self.counts.commands_refused["not_found"] += 1
            raise CommandRefusedError("not_found", "the meter is not in this daemon's fleet")
        return session

    async def submit(self, meter_id: UUID, command: MeterCommand) -> None:
        """Queue ``command`` in the meter's session and wake it; raises
        :class:`CommandRefusedError`. A command that changes the meter is recorded
        (``CommandRequested``) before it can start."""
        session = self._session_for(meter_id)
        if session.breaker.offline:
            self.counts.commands_refused["unavailable"] += 1
            since = utc(session.breaker.offline_since)
            raise CommandRefusedError(
                "unavailable",
                f"the meter is offline since {since:%Y-%m-%d %H:%M:%S}Z"
                if since
                else "the meter is offline",
            )
        if len(session.commands) >= session.queue_size:
            self.counts.commands_refused["queue_full"] += 1
            raise CommandRefusedError(
                "queue_full", f"{len(session.commands)} commands already wait for this meter"
            )
        if command.changes_meter:
            target = session.target
            now = datetime.fromtimestamp(self.wall_clock(), UTC)
            await self.sink([command.requested(target.meter_id, target.serial, now)])
        try:
            session.enqueue(command)
        except QueueFullError:  # filled up while the request was being recorded
            self.counts.commands_refused["queue_full"] += 1
            full = CommandResult(ok=False, reason="queue_full", detail="the queue filled up")
            await session.finish_unrun(command, full, None)
            raise CommandRefusedError("queue_full", full.detail) from None
        self._wake_now(session)

    async def withdraw(self, meter_id: UUID, command: MeterCommand, result: CommandResult) -> bool:
        """Take back a command whose caller gave up before it started."""
        session = self.sessions.get(meter_id)
        if session is None:
            return False
        return await session.withdraw(command, result)

    def poll_now(self, meter_id: UUID) -> PollRequest:
        """Ask for a full poll of the meter as soon as it is free; wait on the result."""
        session = self._session_for(meter_id)
        request = session.request_poll()
        self._wake_now(session)
        return request

    def _wake_now(self, session: MeterSession) -> None:
        if not session.running:
            self.scheduler.push(session)
        else:
            session.link.defer_backfill()  # the command goes before the meter's history

    def wake(self, meter_id: UUID) -> None:
        """Look at the meter again at the next tick (a read-back became due)."""
        session = self.sessions.get(meter_id)
        if session is not None:
            self._wake_now(session)

    # ----------------------------------------------------------------- introspection

    def round_complete(self) -> bool:
        """No poll is running and every meter not offline (online, or awaiting its first
        answer) has been polled for each of its cadence slots begun by now (on the wall
        clock): what a driver of a simulated clock waits for before moving it on. Offline
        meters (probed, not polled) do not count."""
        if self.scheduler.busy:
            return False
        now = self.wall_clock()
        return all(s.breaker.offline or s.schedule.next_due() > now for s in self.sessions.values())

    def statistics(self) -> FleetStatistics:
        scheduler = self.scheduler
        return self.tally.statistics(
            self.counts,
            stale=len(self.freshness.stale),
            meters_running=scheduler.busy,
            meters_running_bound=scheduler.launches.bound,
            meters_waiting_to_start=len(scheduler.launches),
            peak_connections_in_flight=self.limiter.peak_in_flight,
        )

    def status(self, *, top: int = 10) -> FleetStatus:
        return fleet_status(
            self.sessions.values(),
            self.statistics(),
            self.limiter,
            running=self._running and not self._stopping,
            top=top,
        )
