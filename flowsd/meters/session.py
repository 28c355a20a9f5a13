"""One meter's session: its state, its queue of commands, and the runs that talk to it.

A :class:`MeterSession` is created per meter and lives as long as the meter is in the
fleet. It holds what outlives a run (breaker, schedule, cursors, hardware, the link with
its pacing, and while any waits, an :class:`~flowsd.meters.inbox.Inbox` of queued
commands, poll requests and read-backs still owed) and runs one job at a time
(:meth:`MeterSession.run`): a :class:`~flowsd.meters.poll.Poll` of the cadences that are
due, a :class:`~flowsd.meters.poll.Probe` while the breaker holds the meter offline, or
nothing but the queued commands. Queued commands are served between two plan items of a
poll and at the end of every run, so a client never waits for more than one item, and
always over the same link (the meter's pacing, never a second connection). Each run is
watched by a progress watchdog and ends with a
:class:`~flowsd.meters.observations.SessionOutcome`. The queue handling (queueing,
withdrawing and failing commands, poll requests, read-backs, serving the queue in a run) is
in :mod:`flowsd.meters.inbox`; the session's members of the same names delegate to it.

Nothing a meter does raises out of a session: every failure becomes an observation with a
reason, a count (:class:`~flowsd.meters.statistics.EngineCounts`) and a log line (a warning
for an invalid answer; debug for refusals and connection failures, whose breaker transitions
are what gets a warning).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import anyio
import structlog

from flowsd.config import MetersConfig
from flowsd.emop.hardware import HardwareFamily
from flowsd.meters import inbox as inbox_ops
from flowsd.meters import metrics
from flowsd.meters.backfill import LogCursor, ProfileLogNumber
from flowsd.meters.breaker import Breaker
from flowsd.meters.command import CommandResult, MeterCommand
from flowsd.meters.conversation import Conversation
from flowsd.meters.exchange import Failure, MeterLink, PollAbortError
from flowsd.meters.inbox import Inbox, PollRequest
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import (
    EventLogCursor,
    FailureReason,
    Observation,
    ObservationSink,
    SessionOutcome,
)
from flowsd.meters.plan import PollPlan, hardware_family
from flowsd.meters.poll import Poll, Probe
from flowsd.meters.schedule import MeterSchedule
from flowsd.meters.statistics import EngineCounts
from flowsd.meters.target import MeterTarget
from flowsd.meters.watchdog import ProgressWatchdog

WallClock = Callable[[], float]
_LOG = structlog.get_logger("flowsd.meters")
RunKind = Literal["poll", "probe", "commands"]


class Job(Protocol):
    """What a session runs: a poll or a probe (:mod:`flowsd.meters.poll`)."""

    @property
    def kind(self) -> Literal["poll", "probe"]: ...

    @property
    def cadences(self) -> tuple[str, ...]: ...

    async def run(self, conv: Conversation) -> None: ...


# One generator for every session that is not given its own: a Mersenne Twister is 2.5 KB,
# which per meter was the largest single item of a loaded fleet (bench/bench_fleet.py).
_SHARED_RNG = random.Random()


class MeterSession:
    """State and conversation of one meter."""

    # No per-instance dict: a fleet holds tens of thousands of these.
    __slots__ = (
        "answered_ever",
        "breaker",
        "cancel_scope",
        "counts",
        "event_cursor",
        "event_history_deferrals",
        "hardware",
        "heap_generation",
        "inbox",
        "last_failure",
        "last_failure_at",
        "last_poll_seconds",
        "last_success_at",
        "launch_queued",
        "limiter",
        "link",
        "plan",
        "profile_cursors",
        "queue_size",
        "readback_settle_seconds",
        "rng",
        "running",
        "schedule",
        "settings",
        "sink",
        "stopping",
        "target",
        "wall_clock",
    )

    def __init__(
        self,
        target: MeterTarget,
        *,
        settings: MetersConfig,
        plan: PollPlan,
        limiter: ConnectionLimiter,
        sink: ObservationSink,
        counts: EngineCounts,
        wall_clock: WallClock = time.time,
        rng: random.Random | None = None,
        stopping: Callable[[], bool] = lambda: False,
        queue_size: int = 16,
        readback_settle_seconds: float = 10.0,
    ) -> None:
        self.target = target
        self.settings = settings
        self.plan = plan
        self.limiter = limiter
        self.sink = sink
        self.counts = counts
        self.wall_clock = wall_clock
        self.rng = rng or _SHARED_RNG
        self.stopping = stopping
        self.queue_size = queue_size
        self.readback_settle_seconds = readback_settle_seconds
        now = wall_clock()
        offline = target.resume.offline_since
        self.breaker = Breaker(
            threshold=settings.offline_after_failures,
            probe_initial=settings.probe_initial_seconds,
            probe_max=settings.probe_max_seconds,
            rng=self.rng,
            offline_since=None if offline is None else offline.timestamp(),
            answered=target.resume.answered,
            now=now,
        )
        # Whether the meter ever answered (the log says so, or it did in this run).
        self.answered_ever = target.resume.answered
        self.hardware = target.hardware
        self.schedule = MeterSchedule(
            target.meter_id, self._periods(), jitter=settings.schedule_jitter_seconds, now=now
        )
        # Made by the first poll that reads a log: at most three, a tuple (56 bytes for two,
        # where a dict took 232).
        self.profile_cursors: tuple[LogCursor, ...] = ()
        self.event_cursor: EventLogCursor | None = target.resume.event_log
        self.event_history_deferrals = 0  # first scans given up for want of back-fill room
        self.running = False
        self.launch_queued = False  # waiting in the fleet scheduler's LaunchQueue
        self.heap_generation = 0
        self.cancel_scope: anyio.CancelScope | None = None
        self.link = MeterLink()
        self.inbox: Inbox | None = None  # None while nothing waits
        # Introspection
        self.last_failure: Failure | None = None
        self.last_failure_at: float | None = None
        self.last_success_at: float | None = None
        self.last_poll_seconds: float | None = None

    @property
    def log(self) -> Any:
        """The meter's logger, bound when a line is logged (not held per meter)."""
        target = self.target
        return _LOG.bind(meter_serial=target.serial, meter_id=str(target.meter_id))

    @property
    def waiting_for_slot(self) -> bool:
        return self.link.waiting_for_slot

    def profile_cursor(self, log: ProfileLogNumber, first: int) -> LogCursor:
        """The meter's cursor of profile log ``log``; made at half hour ``first`` when the
        meter has none yet (it has none before the first poll that reads the log)."""
        for cursor in self.profile_cursors:
            if cursor.log == log:
                return cursor
        cursor = LogCursor(log, first)
        self.profile_cursors += (cursor,)
        return cursor

    # ----------------------------------------------------------------- schedule

    @property
    def family(self) -> HardwareFamily | None:
        return hardware_family(self.hardware)

    def _periods(self) -> list[tuple[str, float]]:
        cadences = self.plan.cadences(self.family or "single_phase")
        return [(c.name, c.period_seconds) for c in cadences]

    def next_wake(self) -> float:
        """When the supervisor should start this session next (wall clock)."""
        if self.commands or self.poll_requests:
            return -math.inf
        if not self.breaker.offline:
            return min(self.schedule.next_due(), self.readback_due)
        assert self.breaker.next_probe_at is not None
        return self.breaker.next_probe_at

    def reconfigure(
        self, settings: MetersConfig, plan: PollPlan, limiter: ConnectionLimiter
    ) -> None:
        """New settings and plan; slots of cadences whose period is unchanged are kept."""
        self.settings = settings
        self.plan = plan
        self.limiter = limiter
        self.breaker.threshold = settings.offline_after_failures
        self.breaker.probe_initial = settings.probe_initial_seconds
        self.breaker.probe_max = settings.probe_max_seconds
        self.schedule.rebase(self._periods(), settings.schedule_jitter_seconds, self.wall_clock())

    def update_target(self, target: MeterTarget) -> None:
        """New address or hardware for the same meter; schedule and cursors are kept."""
        hardware_changed = target.hardware != self.target.hardware
        self.target = target
        if hardware_changed and target.hardware is not None:
            self.set_hardware(target.hardware)

    def set_hardware(self, hardware: str) -> None:
        old_family = self.family
        self.hardware = hardware
        if self.family != old_family:
            self.schedule.rebase(
                self._periods(), self.settings.schedule_jitter_seconds, self.wall_clock()
            )

    # ----------------------------------------------------------------- inbox

    # What callers wait for is in an Inbox, held only while something waits. The queue
    # handling is flowsd.meters.inbox (imported as ``inbox_ops``): the members below delegate.

    @property
    def commands(self) -> Sequence[MeterCommand]:
        """The queued commands, oldest first (read only: see :meth:`enqueue`)."""
        return () if self.inbox is None else self.inbox.commands

    @property
    def poll_requests(self) -> Sequence[PollRequest]:
        """The callers waiting for the next full poll (read only: see :meth:`request_poll`)."""
        return () if self.inbox is None else self.inbox.poll_requests

    @property
    def readback_due(self) -> float:
        """When the read-backs owed are next due (wall clock; inf: not before another is
        asked for)."""
        return math.inf if self.inbox is None else self.inbox.readback_due

    def enqueue(self, command: MeterCommand) -> None:
        """Queue a command (the supervisor wakes the session); raises QueueFullError."""
        inbox_ops.enqueue(self, command)

    async def withdraw(self, command: MeterCommand, result: CommandResult) -> bool:
        """Take a command that has not started out of the queue (its caller gave up)."""
        return await inbox_ops.withdraw(self, command, result)

    async def fail_queued(
        self, reason: str, detail: str, watchdog: ProgressWatchdog | None = None
    ) -> int:
        """Fail every queued command (the meter is unreachable, or the daemon is stopping)."""
        return await inbox_ops.fail_queued(self, reason, detail, watchdog)

    def drop_queued(self, result: CommandResult) -> None:
        """Finish every queued command with ``result``, recording nothing."""
        inbox_ops.drop_queued(self, result)

    def request_poll(self) -> PollRequest:
        """A caller's request for the next full poll (the supervisor wakes the session)."""
        return inbox_ops.request_poll(self)

    def finish_poll_requests(
        self, outcome: SessionOutcome | None, requests: Sequence[PollRequest] | None = None
    ) -> None:
        """Give ``outcome`` to those of ``requests`` still waiting (None: to every one)."""
        inbox_ops.finish_poll_requests(self, outcome, requests)

    async def finish_unrun(
        self, command: MeterCommand, result: CommandResult, watchdog: ProgressWatchdog | None
    ) -> None:
        """Finish a command that did not run with ``result``, and record its outcome."""
        await inbox_ops.finish_unrun(self, command, result, watchdog)

    def read_back_later(self, names: tuple[str, ...], *, settle: bool) -> None:
        """Owe a read-back of ``names``: due now, or after ``readback_settle_seconds``
        (``settle``)."""
        inbox_ops.read_back_later(self, names, settle=settle)

    async def serve_commands(self, conv: Conversation, *, final: bool = False) -> None:
        """Run the queued commands in ``conv``, a run of this session (``final``: at its
        end, then the read-backs that are due)."""
        await inbox_ops.serve_commands(conv, final=final)

    # ----------------------------------------------------------------- runs

    async def poll(self, cadences: Sequence[str]) -> None:
        """Read everything the plan holds for ``cadences``; never raises for meter faults."""
        await self.run(Poll(tuple(cadences)))

    async def probe(self) -> None:
        """One cheap request to an offline meter (no retries)."""
        await self.run(Probe())

    async def run(self, job: Job | None) -> SessionOutcome | None:
        """Run ``job`` (None: only the queued commands), then the queue; never raises for
        meter faults. Returns the run's outcome (None when it was abandoned)."""
        kind: RunKind = job.kind if job is not None else "commands"
        cadences = job.cadences if job is not None else ()
        started = time.monotonic()
        aborted = abandoned = False
        outcome_reason: FailureReason | None = None
        detail = ""
        watchdog = ProgressWatchdog(self.settings.watchdog_seconds)
        conv = Conversation(self, watchdog)
        self.counts.runs_in_progress += 1
        try:
            with anyio.CancelScope() as outer:
                self.cancel_scope = outer
                with watchdog:
                    for step in (job, None):
                        try:
                            if step is not None:
                                await step.run(conv)
                            else:
                                await self.serve_commands(conv, final=True)
                        except PollAbortError:
                            aborted = True
                        except Exception as exc:  # a flowsd bug must not end the engine
                            self.log.exception("meter poll failed unexpectedly")
                            outcome_reason, detail = "internal", repr(exc)
            if watchdog.fired:
                self.counts.watchdog_cancellations += 1
                outcome_reason, detail = "watchdog", f"no progress in {watchdog.seconds}s"
                self.log.warning("meter poll cancelled by the watchdog", kind=kind)
                conv.note_failure(Failure("watchdog", detail, 1))
            elif outer.cancelled_caught:
                abandoned = True
                outcome_reason, detail = "stopped", "abandoned (stop or meter removed)"
            elif aborted and self.stopping() and conv.first_failure is None:
                outcome_reason, detail = "stopped", "ended early: the engine is stopping"
        finally:
            self.link.close()
            self.cancel_scope = None
            self.counts.runs_in_progress -= 1
        duration = time.monotonic() - started
        if outcome_reason is None and conv.first_failure is not None:
            outcome_reason, detail = conv.first_failure.reason, conv.first_failure.detail
        ok = outcome_reason is None
        if kind != "commands":
            self.last_poll_seconds = duration
        if kind == "probe":
            self.counts.probes += 1
            self.counts.failed_probes += not ok
        elif kind == "poll":
            self.counts.polls += 1
            self.counts.failed_polls += not ok
            metrics.POLL_DURATION.observe(duration)
        outcome = SessionOutcome(
            **conv.base(),
            kind=kind,
            cadences=cadences,
            ok=ok,
            reason=outcome_reason,
            detail=detail,
            requests=conv.requests,
            failed_requests=conv.failed_requests,
            consecutive_failures=self.breaker.consecutive_failures,
            state=self.breaker.state,
            transition=conv.last_transition,
            duration_seconds=duration,
        )
        if abandoned:
            return None
        try:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self.settings.stop_deadline_seconds),
            ):
                await self.emit([outcome], None)
        except Exception:  # a failing sink is the daemon's problem; keep polling
            self.counts.sink_failures += 1
            self.log.exception("observation sink failed; the poll outcome is lost")
        return outcome

    async def emit(
        self, observations: list[Observation], watchdog: ProgressWatchdog | None
    ) -> None:
        if not observations:
            return
        started = time.monotonic()
        if watchdog is None:
            await self.sink(observations)
        else:
            watchdog.pause()  # once per request: not the paused() generator
            try:
                await self.sink(observations)
            finally:
                watchdog.resume()
        counts = self.counts
        counts.sink_wait_seconds += time.monotonic() - started
        for observation in observations:
            counts.observations[metrics.type_label(observation)] += 1
