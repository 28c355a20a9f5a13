"""One meter's conversation: what to read, the breaker, the cursors, the observations.

A :class:`MeterSession` is created per meter and lives as long as the meter is in the
fleet; the supervisor asks it to :meth:`~MeterSession.poll` the cadences that are due, or
to :meth:`~MeterSession.probe` it while the breaker holds it offline. At most one poll of a
meter runs at a time and requests inside it are strictly sequential; pacing, retries and
validation of each request are its :class:`~flowsd.meters.exchange.MeterLink`'s job.
A poll runs under a progress watchdog and stops early once the meter is unreachable.

Nothing a meter does raises out of a session: every failure becomes an observation with a
reason (:class:`~flowsd.meters.observations.ReadFailure`,
:class:`~flowsd.meters.observations.SessionOutcome`), a metric and a log line (a warning
for an invalid answer; debug for refusals and connection failures, whose breaker
transitions are what gets a warning).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypedDict
from uuid import UUID

import anyio
import structlog

from flowsd.config import MetersConfig
from flowsd.emop import (
    EventLogRequest,
    PayloadError,
    ProfileLogRequest,
    ReadRequest,
    Request,
    by_name,
)
from flowsd.emop.records import (
    ClockTime,
    EventLog,
    HardwareVersion,
    MeterType,
    ProfileLog1,
    ProfileLog2,
    ThreePhaseHardwareConfiguration,
)
from flowsd.meters import metrics
from flowsd.meters.backfill import (
    LogCursor,
    choose_next,
    first_wanted,
    newest_complete,
    to_datetime,
)
from flowsd.meters.breaker import Breaker, Transition
from flowsd.meters.eventlog import EventLogScan, LogRecord
from flowsd.meters.exchange import (
    Answer,
    Failure,
    MeterLink,
    PollAbortError,
    RequestKind,
)
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import (
    ClockDrift,
    EventLogCursor,
    EventLogScanned,
    FailureReason,
    IntervalGap,
    IntervalRecord,
    MeterLogEntry,
    Observation,
    ObservationSink,
    ReadFailure,
    Reading,
    SessionOutcome,
)
from flowsd.meters.plan import (
    EventLogRead,
    HardwareFamily,
    ObjectRead,
    PlanItem,
    PollPlan,
    ProfileLogsRead,
    hardware_family,
    is_twin_element,
)
from flowsd.meters.schedule import MeterSchedule
from flowsd.meters.target import MeterTarget
from flowsd.meters.watchdog import ProgressWatchdog

WallClock = Callable[[], float]

_HARDWARE_VERSION = by_name("hardware_version")


class _Base(TypedDict):
    meter_id: UUID
    serial: str | None
    read_at: datetime


@dataclass
class SessionStats:
    """Per-engine counters shared by all sessions (tests and `flowsd status` read them)."""

    requests_ok: int = 0
    polls: int = 0
    probes: int = 0
    watchdog_cancellations: int = 0
    skipped_slots: int = 0
    observations: int = 0
    failures: Counter[str] = field(default_factory=Counter)


class MeterSession:
    """State and conversation of one meter."""

    def __init__(
        self,
        target: MeterTarget,
        *,
        settings: MetersConfig,
        plan: PollPlan,
        limiter: ConnectionLimiter,
        sink: ObservationSink,
        stats: SessionStats,
        wall_clock: WallClock = time.time,
        rng: random.Random | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.target = target
        self.settings = settings
        self.plan = plan
        self.limiter = limiter
        self.sink = sink
        self.stats = stats
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.stopping = stopping
        self.log = structlog.get_logger("flowsd.meters").bind(
            meter_serial=target.serial, meter_id=str(target.meter_id)
        )
        now = wall_clock()
        offline = target.resume.offline_since
        self.breaker = Breaker(
            threshold=settings.offline_after_failures,
            probe_initial=settings.probe_initial_seconds,
            probe_max=settings.probe_max_seconds,
            rng=self.rng,
            offline_since=None if offline is None else offline.timestamp(),
            now=now,
        )
        self.hardware = target.hardware
        self.schedule = MeterSchedule(
            target.meter_id, self._periods(), jitter=settings.schedule_jitter_seconds, now=now
        )
        self.profile_cursors: dict[int, LogCursor] = {}
        self.event_cursor: EventLogCursor | None = target.resume.event_log
        self.running = False
        self.heap_generation = 0
        self.cancel_scope: anyio.CancelScope | None = None
        self.link = MeterLink(
            target.ip_address,
            target.port or settings.port,
            settings=settings,
            limiter=limiter,
            wall_clock=wall_clock,
            rng=self.rng,
            stopping=stopping,
        )
        self._watchdog: ProgressWatchdog | None = None
        self._read_this_poll: set[str] = set()
        self._requests = 0
        self._failed_requests = 0
        self._first_failure: Failure | None = None
        self._last_transition: Transition | None = None
        # Introspection
        self.last_failure: Failure | None = None
        self.last_failure_at: float | None = None
        self.last_success_at: float | None = None
        self.last_poll_seconds: float | None = None

    @property
    def waiting_for_slot(self) -> bool:
        return self.link.waiting_for_slot

    # ----------------------------------------------------------------- schedule

    @property
    def family(self) -> HardwareFamily | None:
        return hardware_family(self.hardware)

    def _periods(self) -> list[tuple[str, float]]:
        cadences = self.plan.cadences(self.family or "single_phase")
        return [(c.name, c.period_seconds) for c in cadences]

    def next_wake(self) -> float:
        if self.breaker.online:
            return self.schedule.next_due()
        assert self.breaker.next_probe_at is not None
        return self.breaker.next_probe_at

    def reconfigure(
        self, settings: MetersConfig, plan: PollPlan, limiter: ConnectionLimiter
    ) -> None:
        """New settings and plan; slots of cadences whose period is unchanged are kept."""
        self.settings = settings
        self.plan = plan
        self.limiter = limiter
        self.link.settings = settings
        self.link.limiter = limiter
        self.link.port = self.target.port or settings.port
        self.breaker.threshold = settings.offline_after_failures
        self.breaker.probe_initial = settings.probe_initial_seconds
        self.breaker.probe_max = settings.probe_max_seconds
        self.schedule.rebase(
            self._periods(),
            self.target.meter_id,
            settings.schedule_jitter_seconds,
            self.wall_clock(),
        )

    def update_target(self, target: MeterTarget) -> None:
        """New address or hardware for the same meter; schedule and cursors are kept."""
        hardware_changed = target.hardware != self.target.hardware
        self.target = target
        self.link.host = target.ip_address
        self.link.port = target.port or self.settings.port
        self.log = self.log.bind(meter_serial=target.serial)
        if hardware_changed and target.hardware is not None:
            self._set_hardware(target.hardware)

    def _set_hardware(self, hardware: str) -> None:
        old_family = self.family
        self.hardware = hardware
        if self.family != old_family:
            self.schedule.rebase(
                self._periods(),
                self.target.meter_id,
                self.settings.schedule_jitter_seconds,
                self.wall_clock(),
            )

    # ----------------------------------------------------------------- polls

    async def poll(self, cadences: Sequence[str]) -> None:
        """Read everything the plan holds for ``cadences``; never raises for meter faults."""
        await self._run("poll", tuple(cadences))

    async def probe(self) -> None:
        """One cheap request to an offline meter (no retries)."""
        await self._run("probe", ())

    async def _run(self, kind: Literal["poll", "probe"], cadences: tuple[str, ...]) -> None:
        started = time.monotonic()
        self._requests = 0
        self._failed_requests = 0
        self._first_failure = None
        self._read_this_poll = set()
        self._last_transition = None
        aborted = abandoned = False
        outcome_reason: FailureReason | None = None
        detail = ""
        watchdog = ProgressWatchdog(self.settings.watchdog_seconds)
        self._watchdog = watchdog
        metrics.POLLS_RUNNING.inc()
        try:
            with anyio.CancelScope() as outer:
                self.cancel_scope = outer
                with watchdog.scope:
                    try:
                        if kind == "probe":
                            await self._probe_body()
                        else:
                            await self._poll_body(cadences)
                    except PollAbortError:
                        aborted = True
                    except Exception as exc:  # a flowsd bug must not end the engine
                        self.log.exception("meter poll failed unexpectedly")
                        outcome_reason, detail = "internal", repr(exc)
            if watchdog.fired:
                self.stats.watchdog_cancellations += 1
                metrics.WATCHDOG_CANCELLATIONS.inc()
                outcome_reason, detail = "watchdog", f"no progress in {watchdog.seconds}s"
                self.log.warning("meter poll cancelled by the watchdog", kind=kind)
                self._note_failure(Failure("watchdog", detail, 1))
            elif outer.cancelled_caught:
                abandoned = True
                outcome_reason, detail = "stopped", "abandoned (stop or meter removed)"
            elif aborted and self.stopping() and self._first_failure is None:
                outcome_reason, detail = "stopped", "ended early: the engine is stopping"
        finally:
            self.link.close()
            self._watchdog = None
            self.cancel_scope = None
            metrics.POLLS_RUNNING.dec()
        duration = time.monotonic() - started
        self.last_poll_seconds = duration
        if outcome_reason is None and self._first_failure is not None:
            outcome_reason, detail = self._first_failure.reason, self._first_failure.detail
        ok = outcome_reason is None
        if kind == "probe":
            self.stats.probes += 1
            metrics.BREAKER_PROBES.labels("ok" if ok else "failed").inc()
        else:
            self.stats.polls += 1
            metrics.POLLS.labels("ok" if ok else "failed").inc()
            metrics.POLL_DURATION.observe(duration)
        outcome = SessionOutcome(
            **self._base(),
            kind=kind,
            cadences=cadences,
            ok=ok,
            reason=outcome_reason,
            detail=detail,
            requests=self._requests,
            failed_requests=self._failed_requests,
            consecutive_failures=self.breaker.consecutive_failures,
            online=self.breaker.online,
            transition=self._last_transition,
            duration_seconds=duration,
        )
        if not abandoned:
            try:
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(self.settings.stop_deadline_seconds),
                ):
                    await self._emit([outcome])
            except Exception:  # a failing sink is the daemon's problem; keep polling
                metrics.SINK_FAILURES.inc()
                self.log.exception("observation sink failed; the poll outcome is lost")

    async def _probe_body(self) -> None:
        info = by_name(self.settings.probe_object)
        answer = await self._request(ReadRequest(info.id), "probe", info.name, attempts=1)
        if isinstance(answer, Answer):
            await self._emit([self._reading(info.name, info.id, answer)])

    async def _poll_body(self, cadences: tuple[str, ...]) -> None:
        if self.family is None:
            await self._learn_hardware()
        for item in self._items(cadences):
            if self.stopping():
                raise PollAbortError
            await self._run_item(item)

    def _items(self, cadences: tuple[str, ...]) -> list[PlanItem]:
        wanted = set(cadences)
        items: list[PlanItem] = []
        for cadence in self.plan.cadences(self.family or "single_phase"):
            if cadence.name in wanted:
                items.extend(i for i in cadence.items if i not in items)
        return items

    async def _run_item(self, item: PlanItem) -> None:
        match item:
            case ObjectRead(name=name, object_id=oid):
                if name not in self._read_this_poll:
                    await self._read_object(name, oid)
            case EventLogRead():
                await self._read_event_log()
            case ProfileLogsRead():
                if self.family == "single_phase":
                    await self._read_profile_logs()

    # ----------------------------------------------------------------- items

    async def _learn_hardware(self) -> None:
        answer = await self._read_object(_HARDWARE_VERSION.name, _HARDWARE_VERSION.id)
        if isinstance(answer, Failure) and answer.reason == "nak":
            # Three-phase meters refuse hardware_version (SPEC §5.2).
            self._set_hardware("THREE_PHASE_UNKNOWN")

    async def _read_object(self, name: str, oid: int) -> Answer | Failure:
        self._read_this_poll.add(name)
        answer = await self._request(ReadRequest(oid), "object", name)
        if isinstance(answer, Failure):
            return answer
        observations: list[Observation] = []
        record = answer.response.record
        if isinstance(record, ClockTime):
            try:
                meter_time = record.to_datetime()
            except PayloadError as exc:
                metrics.INVALID_VALUES.inc()
                return await self._failed(
                    Failure("payload", str(exc), answer.attempts), "object", name
                )
            observations.append(self._reading(name, oid, answer, meter_time))
            observations.append(self._clock_drift(meter_time, answer))
        else:
            observations.append(self._reading(name, oid, answer))
        if isinstance(record, HardwareVersion):
            model = record.model
            if model != "THREE_PHASE":
                self._set_hardware(model)
            elif self.family != "three_phase":
                self._set_hardware("THREE_PHASE_UNKNOWN")
        elif isinstance(record, ThreePhaseHardwareConfiguration):
            ax = record.meter_type == MeterType.AX_WHOLE_CURRENT
            self._set_hardware("P1.ax" if ax else "P1.cx")
        await self._emit(observations)
        return answer

    async def _read_event_log(self) -> None:
        scan = EventLogScan(self.event_cursor, max_pages=self.settings.event_log_max_pages)
        while (page := scan.next_page()) is not None:
            records = await self._event_page(page)
            if records is None:
                return  # the cursor stays; the whole scan is repeated next time
            scan.add_page(records)
        if scan.needs_confirmation:
            again = await self._event_page(0)
            if again is None:
                return
            if not scan.unchanged(again):
                metrics.EVENT_LOG_RESCANS.inc()
                self.log.info("meter event log moved during the scan; rescanning next poll")
                return
        result = scan.result()
        base = self._base()
        observations: list[Observation] = [
            MeterLogEntry(
                **base,
                occurred_at=entry.occurred_at,
                event_id=entry.event_id,
                event_set=entry.event_set,
                ordinal=entry.ordinal,
            )
            for entry in result.entries
        ]
        observations.append(
            EventLogScanned(
                **base,
                pages_read=result.pages_read,
                new_entries=len(result.entries),
                cursor=result.cursor,
                possibly_lost_before=result.possibly_lost_before,
                invalid_records=result.invalid_records,
            )
        )
        if result.possibly_lost_before is not None:
            metrics.EVENT_LOG_OVERFLOWS.inc()
            self.log.warning(
                "meter event log overflowed since the last scan",
                possibly_lost_before=result.possibly_lost_before.isoformat(),
            )
        if result.invalid_records:
            metrics.EVENT_LOG_INVALID.inc(result.invalid_records)
        await self._emit(observations)
        self.event_cursor = result.cursor

    async def _event_page(self, index: int) -> list[LogRecord] | None:
        answer = await self._request(EventLogRequest(index), "event_log", "event_log")
        if isinstance(answer, Failure):
            return None
        record = answer.response.record
        assert isinstance(record, EventLog)
        return [LogRecord(e.timestamp, int(e.event_id), e.event_set) for e in record.events]

    async def _read_profile_logs(self) -> None:
        settings = self.settings
        newest = newest_complete(self._now(), settings.profile_settle_seconds)
        horizon = settings.backfill_horizon_hours * 3600
        resume = self.target.resume
        for log, last in ((1, resume.profile_log_1_last), (2, resume.profile_log_2_last)):
            if log not in self.profile_cursors:
                self.profile_cursors[log] = LogCursor(log, first_wanted(last, newest, horizon))  # type: ignore[arg-type]
        twin = is_twin_element(self.hardware)
        budget = settings.backfill_max_requests_per_poll
        stalled: set[int] = set()
        while budget > 0:
            cursor = choose_next(self.profile_cursors.values(), newest, stalled)
            if cursor is None:
                return
            budget -= 1
            requested = cursor.next_wanted
            request = ProfileLogRequest(cursor.log, requested)
            answer = await self._request(
                request, "profile_log", f"profile_log_{cursor.log}", twin=twin
            )
            if isinstance(answer, Failure):
                stalled.add(cursor.log)
                continue
            body = answer.response.record
            assert isinstance(body, ProfileLog1 | ProfileLog2)
            accepted = cursor.accept(requested, body.records, newest)
            base = self._base()
            observations: list[Observation] = [
                IntervalRecord(
                    **base,
                    log=cursor.log,
                    interval_at=to_datetime(r.timestamp),
                    status=r.status,
                    record=r,
                )
                for r in accepted.records
            ]
            for start, end in accepted.gaps:
                metrics.INTERVAL_GAPS.inc()
                observations.append(
                    IntervalGap(
                        **base,
                        log=cursor.log,
                        start=to_datetime(start),
                        end=to_datetime(end),
                    )
                )
            if observations:
                await self._emit(observations)
            if not accepted.progressed:
                stalled.add(cursor.log)

    # ----------------------------------------------------------------- exchange

    async def _request(
        self,
        request: Request,
        kind: RequestKind,
        label: str,
        *,
        attempts: int | None = None,
        twin: bool = False,
    ) -> Answer | Failure:
        """One request with retries; updates breaker and counters; aborts the poll when
        the meter is unreachable or the breaker opens."""
        assert self._watchdog is not None
        result = await self.link.request(
            request, kind, attempts=attempts, twin=twin, watchdog=self._watchdog
        )
        self._requests += 1
        if isinstance(result, Answer):
            self.stats.requests_ok += 1
            self.last_success_at = self.wall_clock()
            self._transition(self.breaker.record_success())
            return result
        return await self._failed(result, kind, label)

    async def _failed(self, failure: Failure, kind: RequestKind, label: str) -> Failure:
        """Count, log and report a failed request; abort the poll when the meter is
        unreachable or the breaker opens."""
        self._failed_requests += 1
        self.stats.failures[failure.reason] += 1
        fields = {
            "object": label,
            "reason": failure.reason,
            "detail": failure.detail,
            "attempts": failure.attempts,
        }
        if failure.meter_answered:
            # A NAK is an answer (e.g. an object this model lacks): reported, the poll is ok.
            self.log.debug("meter refused a request", **fields)
            self._transition(self.breaker.record_success())
            if kind != "probe":
                await self._emit([self._read_failure(label, failure)])
            return failure
        if self._first_failure is None:
            self._first_failure = failure
        if failure.connection_level:
            # Routine on cellular links; the breaker's transitions are what gets a warning.
            self.log.debug("meter request failed", **fields)
        else:
            self.log.warning("meter sent an invalid answer", **fields)
        went_offline = self._note_failure(failure)
        if kind != "probe":
            await self._emit([self._read_failure(label, failure)])
        if failure.connection_level or went_offline or not self.breaker.online:
            raise PollAbortError
        return failure

    # ----------------------------------------------------------------- bookkeeping

    def _note_failure(self, failure: Failure) -> Transition | None:
        self.last_failure = failure
        self.last_failure_at = self.wall_clock()
        transition = self.breaker.record_failure(self.wall_clock())
        self._transition(transition)
        return transition

    def _transition(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self._last_transition = transition
        metrics.BREAKER_TRANSITIONS.labels(transition).inc()
        if transition == "went_offline":
            reason = self.last_failure.reason if self.last_failure else None
            self.log.warning(
                "meter went offline",
                reason=reason,
                consecutive_failures=self.breaker.consecutive_failures,
            )
        else:
            self.log.info("meter came online")

    async def _emit(self, observations: list[Observation]) -> None:
        if not observations:
            return
        watchdog = self._watchdog
        started = time.monotonic()
        if watchdog is not None:
            with watchdog.paused():
                await self.sink(observations)
        else:
            await self.sink(observations)
        metrics.SINK_WAIT.inc(time.monotonic() - started)
        self.stats.observations += len(observations)
        for observation in observations:
            metrics.labelled(metrics.OBSERVATIONS, type(observation).__name__).inc()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall_clock(), UTC)

    def _base(self) -> _Base:
        return {
            "meter_id": self.target.meter_id,
            "serial": self.target.serial,
            "read_at": self._now(),
        }

    def _reading(
        self, name: str, oid: int, answer: Answer, meter_time: datetime | None = None
    ) -> Reading:
        assert answer.response.record is not None
        return Reading(
            meter_id=self.target.meter_id,
            serial=self.target.serial,
            read_at=datetime.fromtimestamp(answer.received_at, UTC),
            object_name=name,
            object_id=oid,
            record=answer.response.record,
            meter_time=meter_time,
            latency_seconds=answer.latency,
        )

    def _clock_drift(self, meter_time: datetime, answer: Answer) -> ClockDrift:
        midpoint = (answer.sent_at + answer.received_at) / 2
        # The meter reports whole seconds: its reading is taken as the middle of that second.
        drift = meter_time.timestamp() + 0.5 - midpoint
        metrics.CLOCK_DRIFT.observe(abs(drift))
        return ClockDrift(
            meter_id=self.target.meter_id,
            serial=self.target.serial,
            read_at=datetime.fromtimestamp(answer.received_at, UTC),
            meter_time=meter_time,
            local_time=datetime.fromtimestamp(midpoint, UTC),
            drift_seconds=drift,
            uncertainty_seconds=(answer.received_at - answer.sent_at) / 2 + 0.5,
        )

    def _read_failure(self, label: str, failure: Failure) -> ReadFailure:
        return ReadFailure(
            meter_id=self.target.meter_id,
            serial=self.target.serial,
            read_at=self._now(),
            object_name=label,
            reason=failure.reason,
            detail=failure.detail,
            attempts=failure.attempts,
        )
