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
that turns stale.
"""

from __future__ import annotations

import collections
import heapq
import math
import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from uuid import UUID

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from flowsd.config import MetersConfig
from flowsd.emop import UnknownObjectError, by_name
from flowsd.errors import ConfigError
from flowsd.meters import metrics
from flowsd.meters.breaker import BREAKER_STATES, BreakerState
from flowsd.meters.command import CommandResult, MeterCommand
from flowsd.meters.freshness import Freshness, FreshnessView
from flowsd.meters.launcher import LaunchQueue, bound_for
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import FailureReason, ObservationSink
from flowsd.meters.plan import PollPlan
from flowsd.meters.poll import Poll, Probe
from flowsd.meters.session import (
    Job,
    MeterSession,
    PollRequest,
    QueueFullError,
    WallClock,
)
from flowsd.meters.statistics import EngineCounts, FleetStatistics
from flowsd.meters.target import MeterTarget

# How often the stale-meter rule is applied (incremental: the meters whose deadline came).
FRESHNESS_EVERY_SECONDS = 5.0


class ApplyResult(msgspec.Struct, frozen=True):
    added: int
    updated: int
    removed: int
    unchanged: int


class SlowMeter(msgspec.Struct, frozen=True):
    meter_id: UUID
    serial: str | None
    last_poll_seconds: float


class FailingMeter(msgspec.Struct, frozen=True):
    meter_id: UUID
    serial: str | None
    state: BreakerState
    consecutive_failures: int
    reason: FailureReason | None
    detail: str
    failed_at: datetime | None
    offline_since: datetime | None


class FleetStatus(msgspec.Struct, frozen=True):
    """Snapshot for ``flowsd status`` and readiness."""

    running: bool
    meters: int
    online: int
    offline: int
    awaiting_first_answer: int  # polled, no answer yet, not (yet) offline
    never_answered: int  # no answer ever, in any state (offline after the usual failures)
    polls_running: int
    waiting_to_start: int  # due, waiting for a running meter task to end
    connections_in_flight: int
    peak_connections_in_flight: int
    connects: int
    requests_ok: int
    request_failures: dict[str, int]
    polls: int
    probes: int
    watchdog_cancellations: int
    skipped_slots: int
    stale: int
    slowest: list[SlowMeter]
    failing: list[FailingMeter]


class CommandRefusedError(Exception):
    """A command (or poll request) that cannot join its meter's session.

    ``reason``: ``not_found`` (not in this daemon's fleet), ``unavailable`` (the meter is
    offline), ``queue_full``, ``stopping``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _periods(session: MeterSession) -> dict[str, float]:
    return {name: c.period for name, c in session.schedule.cadences.items()}


def _utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class FleetSupervisor:
    """Owns the meter sessions, the schedule heap and the fleet-wide limits."""

    def __init__(
        self,
        settings: MetersConfig,
        plan: PollPlan,
        sink: ObservationSink,
        *,
        wall_clock: WallClock = time.time,
        rng: random.Random | None = None,
        queue_size: int = 16,
        readback_settle_seconds: float = 10.0,
    ) -> None:
        FleetSupervisor._check(settings)
        self.queue_size = queue_size
        self.readback_settle_seconds = readback_settle_seconds
        self.settings = settings
        self.plan = plan
        self.sink = sink
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.counts = EngineCounts()
        self.limiter = ConnectionLimiter(
            settings.max_connections_in_flight,
            settings.max_new_connections_per_second,
            settings.new_connections_burst,
            totals=self.counts.connections,
        )
        self.freshness = Freshness()
        self.freshness_every_seconds = FRESHNESS_EVERY_SECONDS
        self.freshness_suspended = False
        self._freshness_checked_at = -math.inf
        self.sessions: dict[UUID, MeterSession] = {}
        self._heap: list[tuple[float, int, UUID]] = []
        self._launches = LaunchQueue(bound_for(settings))
        self._stopping = False
        self._running = False
        self._stopped = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._busy = 0
        self._task_group: TaskGroup | None = None
        self._states: collections.Counter[BreakerState] = collections.Counter()
        self._never_answered = 0
        self._busy_addresses: set[tuple[str, int]] = set()
        self._address_waiters: dict[tuple[str, int], collections.deque[MeterSession]] = {}
        self._by_serial: dict[str, UUID] = {}
        self._held_back: set[UUID] = set()
        self.log = structlog.get_logger("flowsd.meters")

    # ----------------------------------------------------------------- meters

    def apply(self, targets: Iterable[MeterTarget]) -> ApplyResult:
        """Make the fleet exactly ``targets``. Unchanged meters keep schedule and cursors;
        changed ones (address, port, hardware) keep them too; removed ones are abandoned."""
        wanted = {t.meter_id: t for t in targets}
        added = updated = removed = unchanged = 0
        for meter_id in list(self.sessions):
            if meter_id not in wanted:
                gone = self.sessions.pop(meter_id)
                self._states[gone.breaker.state] -= 1
                self._never_answered -= not gone.answered_ever
                self.freshness.forget(meter_id)
                self._launches.discard(gone)
                if gone.cancel_scope is not None:
                    gone.cancel_scope.cancel()
                self._forsake(gone, "the meter left the fleet")
                self._held_back.discard(meter_id)
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
                    stopping=lambda: self._stopping,
                    queue_size=self.queue_size,
                    readback_settle_seconds=self.readback_settle_seconds,
                )
                self.sessions[meter_id] = session
                self._states[session.breaker.state] += 1
                self._never_answered += not session.answered_ever
                self.freshness.restart_clock(meter_id, self.wall_clock())
                self.freshness.watch(meter_id, _periods(session))
                self._push(session)
                added += 1
            elif session.target.same_identity(target):
                unchanged += 1
            else:
                session.update_target(target)
                self.freshness.watch(meter_id, _periods(session))
                if not session.running:
                    self._push(session)
                updated += 1
        self._by_serial = {
            s.target.serial: meter_id for meter_id, s in self.sessions.items() if s.target.serial
        }
        return ApplyResult(added, updated, removed, unchanged)

    def _forsake(self, session: MeterSession, why: str) -> None:
        """Fail what a session that is going away still holds for callers."""
        for request in session.poll_requests:
            request.finish(None)
        session.poll_requests.clear()
        if session.commands and self._task_group is not None:
            self._task_group.start_soon(session.fail_queued, "unavailable", why)
        elif session.commands:
            for command in session.commands:
                command.finish(CommandResult(ok=False, reason="unavailable", detail=why))
            session.commands.clear()

    def _address(self, session: MeterSession) -> tuple[str, int]:
        return (session.target.ip_address, session.target.port or self.settings.port)

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
            self.limiter = ConnectionLimiter(
                settings.max_connections_in_flight,
                settings.max_new_connections_per_second,
                settings.new_connections_burst,
                totals=self.counts.connections,
            )
        self.settings = settings
        self.plan = plan
        self._launches.bound = bound_for(settings)
        now = self.wall_clock()
        for session in self.sessions.values():
            session.reconfigure(settings, plan, self.limiter)
            self.freshness.restart_clock(session.target.meter_id, now)
            if not session.running:
                self._push(session)
        self.freshness.rewatch_all(self._views())

    @staticmethod
    def _check(settings: MetersConfig) -> None:
        try:
            by_name(settings.probe_object)
        except UnknownObjectError:
            raise ConfigError(
                f"key 'meters.probe_object': unknown object {settings.probe_object!r}"
            ) from None

    def _push(self, session: MeterSession) -> None:
        session.heap_generation += 1
        wake = session.next_wake()
        if wake < math.inf:  # -inf: a command or poll request waits
            heapq.heappush(self._heap, (wake, session.heap_generation, session.target.meter_id))

    def hold_back(self, meter_ids: Iterable[UUID], *, release: bool = False) -> None:
        """Start no more routine polls of these meters (``release``: start them again)."""
        for meter_id in meter_ids:
            if release:
                if meter_id in self._held_back:
                    self._held_back.discard(meter_id)
                    session = self.sessions.get(meter_id)
                    if session is not None and not session.running:
                        self._push(session)
            elif meter_id in self.sessions:
                self._held_back.add(meter_id)

    def is_held_back(self, meter_id: UUID) -> bool:
        return meter_id in self._held_back

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
                    self._wake_due(tg)
                    self._start_queued(tg)
                    self._check_freshness()
                    await anyio.sleep(self.settings.schedule_tick_seconds)
                with anyio.move_on_after(self.settings.stop_deadline_seconds):
                    await self._idle.wait()
                tg.cancel_scope.cancel()
        finally:
            self._running = False
            self._task_group = None
            self._stopped.set()

    def _wake_due(self, tg: TaskGroup) -> None:
        now = self.wall_clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, generation, meter_id = heapq.heappop(heap)
            session = self.sessions.get(meter_id)
            if session is None or generation != session.heap_generation or session.running:
                continue
            self._launches.put(session, urgent=bool(session.commands or session.poll_requests))

    def _start_queued(self, tg: TaskGroup) -> None:
        """Start queued meters while fewer than the bound run, then hold back-fill while
        some still wait (live work first, :mod:`flowsd.meters.launcher`)."""
        launches = self._launches
        # Nothing is started into a group being cancelled (run() failed or gave up waiting).
        ending = self._stopping or tg.cancel_scope.cancel_called
        while self._busy < launches.bound and not ending:
            session = launches.pop()
            if session is None:
                break
            meter_id = session.target.meter_id
            if self.sessions.get(meter_id) is not session or session.running:
                continue
            if meter_id in self._held_back and not session.commands and not session.poll_requests:
                continue  # pushed again by hold_back(release=True)
            address = self._address(session)
            if address in self._busy_addresses:
                # Another meter id with the same address is talking to it: one conversation
                # per device, whatever the registry says. Queue up, first come first served.
                self._address_waiters.setdefault(address, collections.deque()).append(session)
                continue
            self._launch(tg, session, self.wall_clock())
        held = len(launches) > 0
        if held != self.limiter.backfill_held:
            self.limiter.hold_backfill(held)

    def suspend_freshness(self) -> None:
        """Stop applying the stale-meter rule (``flowsd demo`` while its clock leaps through
        simulated hours, which would make every meter stale at each leap)."""
        self.freshness_suspended = True

    def resume_freshness(self) -> None:
        """Apply the rule again, every meter's age counted from now."""
        now = self.wall_clock()
        for meter_id in self.sessions:
            self.freshness.restart_clock(meter_id, now)
        self.freshness.rewatch_all(self._views())
        self.freshness_suspended = False

    def _check_freshness(self) -> None:
        now = self.wall_clock()
        if self.freshness_suspended:
            return
        if now - self._freshness_checked_at < self.freshness_every_seconds:
            return
        self._freshness_checked_at = now
        turned, fresh = self.freshness.evaluate(now, self._view)
        for found in turned:
            session = self.sessions[found.meter_id]
            self.log.warning(
                "meter readings stale",
                meter_serial=session.target.serial,
                meter_id=str(found.meter_id),
                cadence=found.cadence,
                period_seconds=found.period_seconds,
                age_seconds=round(found.age_seconds, 1),
            )
        for meter_id in fresh:
            again = self.sessions.get(meter_id)
            if again is not None and again.breaker.online:
                self.log.info(
                    "meter readings fresh again",
                    meter_serial=again.target.serial,
                    meter_id=str(meter_id),
                )

    def _view(self, meter_id: UUID) -> FreshnessView | None:
        session = self.sessions.get(meter_id)
        if session is None:
            return None
        return FreshnessView(meter_id, session.breaker.online, _periods(session))

    def _views(self) -> list[FreshnessView]:
        return [
            FreshnessView(meter_id, s.breaker.online, _periods(s))
            for meter_id, s in self.sessions.items()
        ]

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
                    self._push(session)
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
            self._push(session)

    def _next_waiter(self, address: tuple[str, int]) -> None:
        waiters = self._address_waiters.get(address)
        while waiters:
            session = waiters.popleft()
            if self.sessions.get(session.target.meter_id) is not session or session.running:
                continue
            tg = self._task_group
            if tg is None or self._stopping:
                self._push(session)
            else:
                self._launch(tg, session, self.wall_clock())
            break
        if not waiters:
            self._address_waiters.pop(address, None)

    def _start(self, tg: TaskGroup, session: MeterSession, job: Job | None) -> None:
        session.running = True
        self._busy_addresses.add(self._address(session))
        self._busy += 1
        self._idle = anyio.Event() if self._busy == 1 else self._idle
        tg.start_soon(self._drive, session, job)

    async def _drive(self, session: MeterSession, job: Job | None) -> None:
        before = session.breaker.state
        waiting: list[PollRequest] = list(session.poll_requests) if isinstance(job, Poll) else []
        outcome = None
        answered_before = session.answered_ever
        try:
            outcome = await session.run(job)
        finally:
            for request in waiting:
                session.poll_requests.remove(request)
                request.finish(outcome)
            session.running = False
            address = self._address(session)
            self._busy_addresses.discard(address)
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()
            if self.sessions.get(session.target.meter_id) is session:
                self._states[before] -= 1
                self._states[session.breaker.state] += 1
                self._never_answered -= session.answered_ever and not answered_before
                meter_id = session.target.meter_id
                if session.breaker.online and before != "online":
                    self.freshness.restart_clock(meter_id, self.wall_clock())
                    self.freshness.watch(meter_id, _periods(session))
                if outcome is not None and outcome.ok and outcome.kind == "poll":
                    self.freshness.polled(meter_id, outcome.cadences, self.wall_clock())
                self._push(session)
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
            for request in session.poll_requests:
                request.finish(None)
            session.poll_requests.clear()
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
            since = _utc(session.breaker.offline_since)
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
        request = PollRequest()
        session.poll_requests.append(request)
        self._wake_now(session)
        return request

    def _wake_now(self, session: MeterSession) -> None:
        if not session.running:
            self._push(session)
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
        if self._busy:
            return False
        now = self.wall_clock()
        return all(s.breaker.offline or s.schedule.next_due() > now for s in self.sessions.values())

    def statistics(self) -> FleetStatistics:
        counts = self.counts
        connections = counts.connections
        return FleetStatistics(
            meters_by_state={state: self._states[state] for state in BREAKER_STATES},
            never_answered=self._never_answered,
            stale=len(self.freshness.stale),
            runs_in_progress=counts.runs_in_progress,
            meters_running=self._busy,
            meters_running_bound=self._launches.bound,
            meters_waiting_to_start=len(self._launches),
            connections_in_flight=connections.in_flight,
            peak_connections_in_flight=self.limiter.peak_in_flight,
            connects=connections.connects,
            connection_grants=dict(connections.granted),
            backfill_deferred=counts.backfill_deferred,
            bytes_sent=counts.traffic.sent,
            bytes_received=counts.traffic.received,
            requests_ok=counts.requests_ok,
            request_failures=dict(counts.request_failures),
            attempts=dict(counts.attempts),
            retries=counts.retries,
            polls=counts.polls,
            failed_polls=counts.failed_polls,
            probes=counts.probes,
            failed_probes=counts.failed_probes,
            watchdog_cancellations=counts.watchdog_cancellations,
            skipped_slots=counts.skipped_slots,
            sink_wait_seconds=counts.sink_wait_seconds,
            sink_failures=counts.sink_failures,
            observations=dict(counts.observations),
            interval_gaps=counts.interval_gaps,
            event_log_overflows=counts.event_log_overflows,
            event_log_rescans=counts.event_log_rescans,
            event_log_invalid_records=counts.event_log_invalid_records,
            invalid_values=counts.invalid_values,
            breaker_transitions=dict(counts.breaker_transitions),
            commands=dict(counts.commands),
            commands_running=counts.commands_running,
            commands_queued=counts.commands_queued,
            commands_refused=dict(counts.commands_refused),
        )

    def status(self, *, top: int = 10) -> FleetStatus:
        sessions = list(self.sessions.values()) if top > 0 else []  # top=0: counts only
        timed = heapq.nlargest(
            top,
            (s for s in sessions if s.last_poll_seconds is not None),
            key=lambda s: s.last_poll_seconds or 0.0,
        )
        failing = heapq.nsmallest(
            top,
            (s for s in sessions if s.breaker.consecutive_failures or s.breaker.offline),
            key=lambda s: (not s.breaker.offline, -s.breaker.consecutive_failures),
        )
        stats = self.statistics()
        return FleetStatus(
            running=self._running and not self._stopping,
            meters=len(self.sessions),
            online=stats.meters_by_state["online"],
            offline=stats.meters_by_state["offline"],
            awaiting_first_answer=stats.meters_by_state["awaiting_first_answer"],
            never_answered=stats.never_answered,
            polls_running=self._busy,
            waiting_to_start=stats.meters_waiting_to_start,
            connections_in_flight=self.limiter.in_flight,
            peak_connections_in_flight=stats.peak_connections_in_flight,
            connects=self.limiter.connects,
            requests_ok=stats.requests_ok,
            request_failures=stats.request_failures,
            polls=stats.polls,
            probes=stats.probes,
            watchdog_cancellations=stats.watchdog_cancellations,
            skipped_slots=stats.skipped_slots,
            stale=stats.stale,
            slowest=[
                SlowMeter(s.target.meter_id, s.target.serial, s.last_poll_seconds or 0.0)
                for s in timed[:top]
            ],
            failing=[
                FailingMeter(
                    meter_id=s.target.meter_id,
                    serial=s.target.serial,
                    state=s.breaker.state,
                    consecutive_failures=s.breaker.consecutive_failures,
                    reason=s.last_failure.reason if s.last_failure else None,
                    detail=s.last_failure.detail if s.last_failure else "",
                    failed_at=_utc(s.last_failure_at),
                    offline_since=_utc(s.breaker.offline_since),
                )
                for s in failing[:top]
            ],
        )
