"""One run of a meter session: its requests, failures, breaker transitions and observations.

A :class:`Conversation` lives for one poll, probe or batch of commands. The jobs a session
runs (:mod:`flowsd.meters.poll`, :mod:`flowsd.meters.command`) send every request through
:meth:`Conversation.request`, which retries through the session's
:class:`~flowsd.meters.exchange.MeterLink`, keeps the breaker and the counters up to date
and raises :class:`~flowsd.meters.exchange.PollAbortError` once the meter is unreachable,
and hand what they read to :meth:`Conversation.emit` (the sink, with back-pressure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, TypedDict
from uuid import UUID

from flowsd.emop import PayloadError, ReadRequest
from flowsd.emop.records import (
    ClockTime,
    HardwareVersion,
    MeterType,
    ProfileLog1Record,
    ProfileLog2Record,
    ThreePhaseHardwareConfiguration,
)
from flowsd.meters import metrics
from flowsd.meters.backfill import to_datetime
from flowsd.meters.breaker import Transition
from flowsd.meters.exchange import Answer, Failure, PollAbortError, RequestKind
from flowsd.meters.limits import Lane
from flowsd.meters.observations import (
    ClockDrift,
    IntervalGap,
    IntervalRecord,
    Observation,
    ReadFailure,
    Reading,
)
from flowsd.meters.watchdog import ProgressWatchdog

if TYPE_CHECKING:
    from flowsd.emop import Request
    from flowsd.meters.session import MeterSession


class _Base(TypedDict):
    meter_id: UUID
    serial: str | None
    read_at: datetime


@dataclass
class Conversation:
    """Counters and helpers of one session run (see the module docstring)."""

    session: MeterSession
    watchdog: ProgressWatchdog
    requests: int = 0
    failed_requests: int = 0
    first_failure: Failure | None = None
    last_transition: Transition | None = None
    last_failure: Failure | None = None
    read_objects: set[str] = field(default_factory=set)

    # ----------------------------------------------------------------- exchange

    async def request(
        self,
        request: Request,
        kind: RequestKind,
        label: str,
        *,
        attempts: int | None = None,
        twin: bool = False,
        command: UUID | None = None,
        lane: Lane = "live",
        due: float = math.inf,
    ) -> Answer | Failure:
        """One request with retries; updates breaker and counters; aborts the run when
        the meter is unreachable or the breaker opens. A ``backfill`` request may raise
        :class:`~flowsd.meters.exchange.BackfillDeferredError` (see ``MeterLink.request``)."""
        session = self.session
        result = await session.link.request(
            session,
            request,
            kind,
            attempts=attempts,
            twin=twin,
            watchdog=self.watchdog,
            stoppable=command is None,
            lane=lane,
            due=due,
        )
        self.requests += 1
        if isinstance(result, Answer):
            session.counts.requests_ok += 1
            session.last_success_at = session.wall_clock()
            self.answered()
            return result
        return await self.failed(result, kind, label, command=command)

    async def failed(
        self, failure: Failure, kind: RequestKind, label: str, *, command: UUID | None = None
    ) -> Failure:
        """Count, log and report a failed request; abort the run when the meter is
        unreachable or the breaker opens."""
        session = self.session
        self.failed_requests += 1
        self.last_failure = failure
        session.counts.request_failures[failure.reason] += 1
        fields = {
            "object": label,
            "reason": failure.reason,
            "detail": failure.detail,
            "attempts": failure.attempts,
        }
        if failure.meter_answered:
            # A NAK is an answer (e.g. an object this model lacks): reported, the poll is ok.
            session.log.debug("meter refused a request", **fields)
            self.answered()
            if kind != "probe":
                await self.emit([self.read_failure(label, failure)])
            return failure
        if self.first_failure is None:
            self.first_failure = failure
        if failure.connection_level:
            # Routine on cellular links; the breaker's transitions are what gets a warning.
            session.log.debug("meter request failed", **fields)
        else:
            session.log.warning("meter sent an invalid answer", **fields)
        went_offline = self.note_failure(failure)
        if kind != "probe":
            await self.emit([self.read_failure(label, failure)])
        if failure.connection_level or went_offline or session.breaker.offline:
            raise PollAbortError
        return failure

    # ----------------------------------------------------------------- bookkeeping

    def note_failure(self, failure: Failure) -> Transition | None:
        session = self.session
        session.last_failure = failure
        session.last_failure_at = session.wall_clock()
        transition = session.breaker.record_failure(session.wall_clock())
        self.transition(transition)
        return transition

    def answered(self) -> None:
        session = self.session
        first = not session.answered_ever
        session.answered_ever = True
        self.transition(session.breaker.record_success(), first_answer=first)

    def transition(self, transition: Transition | None, *, first_answer: bool = False) -> None:
        if transition is None:
            return
        session = self.session
        self.last_transition = transition
        session.counts.breaker_transitions[transition] += 1
        if transition == "went_offline":
            failure = session.last_failure
            session.log.warning(
                "meter went offline",
                reason=failure.reason if failure else None,
                detail=failure.detail if failure else "",
                consecutive_failures=session.breaker.consecutive_failures,
                never_answered=not session.answered_ever,
            )
        elif first_answer:
            session.log.debug("meter answered for the first time")
        else:
            session.log.info("meter came online")

    async def emit(self, observations: list[Observation]) -> None:
        await self.session.emit(observations, self.watchdog)

    async def read_object(
        self, name: str, oid: int, *, command: UUID | None = None
    ) -> Answer | Failure:
        """Read one object and emit what it shows (a clock read also gives its drift; an
        identity read may teach the session the meter's hardware)."""
        answer = await self.request(
            ReadRequest(oid), "command" if command else "object", name, command=command
        )
        if isinstance(answer, Failure):
            return answer
        observations: list[Observation] = []
        record = answer.response.record
        if isinstance(record, ClockTime):
            try:
                meter_time = record.to_datetime()
            except PayloadError as exc:
                self.session.counts.invalid_values += 1
                kind: RequestKind = "command" if command else "object"
                return await self.failed(
                    Failure("payload", str(exc), answer.attempts), kind, name, command=command
                )
            observations.append(self.reading(name, oid, answer, meter_time, command=command))
            observations.append(self.clock_drift(meter_time, answer))
        else:
            observations.append(self.reading(name, oid, answer, command=command))
        if isinstance(record, HardwareVersion):
            model = record.model
            if model != "THREE_PHASE":
                self.session.set_hardware(model)
            elif self.session.family != "three_phase":
                self.session.set_hardware("THREE_PHASE_UNKNOWN")
        elif isinstance(record, ThreePhaseHardwareConfiguration):
            ax = record.meter_type == MeterType.AX_WHOLE_CURRENT
            self.session.set_hardware("P1.ax" if ax else "P1.cx")
        await self.emit(observations)
        return answer

    # ----------------------------------------------------------------- observations

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.session.wall_clock(), UTC)

    def base(self, answer: Answer | None = None) -> _Base:
        """The meter and the time of an observation: when ``answer`` arrived, else now."""
        target = self.session.target
        read_at = self.now() if answer is None else datetime.fromtimestamp(answer.received_at, UTC)
        return {"meter_id": target.meter_id, "serial": target.serial, "read_at": read_at}

    def interval_records(
        self, log: Literal[1, 2], records: Iterable[ProfileLog1Record | ProfileLog2Record]
    ) -> list[Observation]:
        """Observations of profile-log records, read now."""
        base = self.base()
        return [
            IntervalRecord(
                **base, log=log, interval_at=to_datetime(r.timestamp), status=r.status, record=r
            )
            for r in records
        ]

    def interval_gaps(
        self, log: Literal[1, 2, 3], gaps: Iterable[tuple[int, int]], base: _Base
    ) -> list[Observation]:
        """Observations of gaps (start, end) in a log's records, counted."""
        found: list[Observation] = []
        for start, end in gaps:
            self.session.counts.interval_gaps += 1
            found.append(
                IntervalGap(**base, log=log, start=to_datetime(start), end=to_datetime(end))
            )
        return found

    def reading(
        self,
        name: str,
        oid: int,
        answer: Answer,
        meter_time: datetime | None = None,
        *,
        command: UUID | None = None,
    ) -> Reading:
        assert answer.response.record is not None
        return Reading(
            **self.base(answer),
            object_name=name,
            object_id=oid,
            record=answer.response.record,
            meter_time=meter_time,
            latency_seconds=answer.latency,
            lane=command,
        )

    def clock_drift(self, meter_time: datetime, answer: Answer) -> ClockDrift:
        midpoint = (answer.sent_at + answer.received_at) / 2
        # The meter reports whole seconds: its reading is taken as the middle of that second.
        drift = meter_time.timestamp() + 0.5 - midpoint
        metrics.CLOCK_DRIFT.observe(abs(drift))
        return ClockDrift(
            **self.base(answer),
            meter_time=meter_time,
            local_time=datetime.fromtimestamp(midpoint, UTC),
            drift_seconds=drift,
            uncertainty_seconds=(answer.received_at - answer.sent_at) / 2 + 0.5,
        )

    def read_failure(self, label: str, failure: Failure) -> ReadFailure:
        target = self.session.target
        return ReadFailure(
            meter_id=target.meter_id,
            serial=target.serial,
            read_at=self.now(),
            object_name=label,
            reason=failure.reason,
            detail=failure.detail,
            attempts=failure.attempts,
        )
