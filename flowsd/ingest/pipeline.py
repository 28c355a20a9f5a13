"""The polling engine's observation sink: observations in, events appended.

Each batch the engine hands over (the observations of one exchange, or one poll outcome) is
mapped to reading events, grouped reads are assembled, the change detector adds the state
changes, and the lot is handed to ``append``, which waits while the appender's queue is full:
the session waits with it, so nothing read is dropped (back-pressure, not loss).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from uuid import UUID

import msgspec
import structlog

from flowsd.emop.records import HardwareVersion, ProfileLog1Record, ThreePhaseHardwareConfiguration
from flowsd.events import types
from flowsd.ingest import commands, mapping
from flowsd.ingest.assembly import IncompleteCause, PollAssembler
from flowsd.ingest.detector import ChangeDetector
from flowsd.ingest.sessions import SessionTracker
from flowsd.meters import observations as obs

log = structlog.get_logger("flowsd.ingest")

AppendMany = Callable[[Sequence[types.Event]], Awaitable[None]]


class IngestStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What happened between the polling engine and the appender (this process)."""

    state_changes: dict[str, int]  # state-change events derived, by kind
    incomplete_groups: dict[IncompleteCause, int]  # grouped reads not stored, by cause
    unmapped_readings: int  # readings of objects without an event type
    interval_gaps: int  # ranges of half hours meters said they do not hold
    meter_log_repeats: int  # meter event-log entries repeating one in the same second
    seed_unreadable: int  # stored state changes left out of the detector's seeds
    session_rows_written: int  # session-state rows upserted
    session_write_errors: int  # failed session-state flushes


class Ingest:
    """Turns observations into events (see the module docstring)."""

    def __init__(
        self,
        append: AppendMany,
        detector: ChangeDetector,
        *,
        tracker: SessionTracker | None = None,
    ) -> None:
        self._append = append
        self.detector = detector
        self.tracker = tracker
        self.assembler = PollAssembler()
        self.hardware: dict[UUID, str | None] = {}
        self._counts = {"meter_log_repeats": 0, "interval_gaps": 0, "unmapped_readings": 0}

    def statistics(self) -> IngestStatistics:
        tracker = self.tracker
        return IngestStatistics(
            **self._counts,
            state_changes=dict(self.detector.changes),
            incomplete_groups=dict(self.assembler.incomplete),
            seed_unreadable=self.detector.seed_unreadable,
            session_rows_written=tracker.rows_written if tracker is not None else 0,
            session_write_errors=tracker.write_errors if tracker is not None else 0,
        )

    async def __call__(self, observations: Sequence[obs.Observation]) -> None:
        events = self.events_for(observations)
        if events:
            await self._append(events)

    def set_hardware(self, meter_id: UUID, hardware: str | None) -> None:
        """The registry's hardware for a meter (an identity read may refine it later)."""
        if hardware or meter_id not in self.hardware:
            self.hardware[meter_id] = hardware

    def forget(self, meter_id: UUID) -> None:
        """A meter left the fleet: drop what is held for it."""
        self.assembler.forget(meter_id)
        self.hardware.pop(meter_id, None)

    def pending_events(self) -> list[types.Event]:
        """Events of grouped reads still open (for a shutdown after abandoned polls)."""
        events: list[types.Event] = []
        for event in self.assembler.finish_all(self.hardware.get):
            events.extend(self._with_changes(event))
        return events

    # -- mapping --------------------------------------------------------------------------

    def events_for(self, observations: Sequence[obs.Observation]) -> list[types.Event]:
        events: list[types.Event] = []
        for observation in observations:
            events.extend(self._events_for_one(observation))
        return events

    def _events_for_one(self, observation: obs.Observation) -> list[types.Event]:
        match observation:
            case obs.Reading():
                return self._reading(observation)
            case obs.ClockDrift():
                body = types.ClockRead(
                    meter_time=observation.meter_time, drift_seconds=observation.drift_seconds
                )
                return self._with_changes(self._event(observation, body))
            case obs.IntervalRecord():
                return [self._interval(observation)]
            case obs.ThreePhaseInterval():
                hardware = self.hardware.get(observation.meter_id)
                interval = mapping.three_phase_interval_body(observation, hardware)
                return [self._event(observation, interval, observed_at=observation.interval_at)]
            case obs.MeterLogEntry():
                if observation.ordinal:
                    # Same meter, second, id and set as an earlier entry: the catalogue's key
                    # (meter, type, time, event_set) stores it once. Counted, not silent.
                    self._counts["meter_log_repeats"] += 1
                entry = types.MeterLogEntry(
                    emlite_type_id=observation.event_id, event_set=observation.event_set
                )
                return [self._event(observation, entry, observed_at=observation.occurred_at)]
            case obs.IntervalGap():
                self._counts["interval_gaps"] += 1
                log.info(
                    "meter holds no profile data for a range",
                    meter_serial=observation.serial,
                    meter_id=str(observation.meter_id),
                    log=observation.log,
                    start=observation.start.isoformat(),
                    end=observation.end.isoformat(),
                )
            case obs.ReadFailure():
                if self.tracker is not None:
                    self.tracker.read_failed(observation)
            case obs.SessionOutcome():
                return self._outcome(observation)
            case obs.CommandRequested():
                return [self._event(observation, commands.requested_body(observation))]
            case obs.CommandOutcome():
                return self._command_outcome(observation)
        return []

    def _reading(self, reading: obs.Reading) -> list[types.Event]:
        meter_id, record = reading.meter_id, reading.record
        if isinstance(record, HardwareVersion | ThreePhaseHardwareConfiguration):
            model = record.model
            if model != "THREE_PHASE" or self.hardware.get(meter_id) is None:
                self.hardware[meter_id] = "THREE_PHASE_UNKNOWN" if model == "THREE_PHASE" else model
        hardware = self.hardware.get(meter_id)
        if reading.object_name == mapping.CLOCK_OBJECT:
            return []
        if self.assembler.handles(reading.object_name):
            event = self.assembler.add(reading, hardware)
            return [] if event is None else self._with_changes(event)
        body = mapping.standalone_body(reading.object_name, record, hardware)
        if body is None:
            self._counts["unmapped_readings"] += 1
            return []
        observed_at = reading.meter_time or reading.read_at
        return self._with_changes(self._event(reading, body, observed_at=observed_at))

    def _interval(self, record: obs.IntervalRecord) -> types.Event:
        body: types.AnyBody
        if record.log == 1:
            assert isinstance(record.record, ProfileLog1Record)
            twin = self.hardware.get(record.meter_id) == "C1.w"
            body = mapping.profile_log_1_body(record.record, twin=twin)
        else:
            assert not isinstance(record.record, ProfileLog1Record)
            body = mapping.profile_log_2_body(record.record)
        return self._event(record, body, observed_at=record.interval_at)

    def _outcome(self, outcome: obs.SessionOutcome) -> list[types.Event]:
        events: list[types.Event] = []
        hardware = self.hardware.get(outcome.meter_id)
        stopped = outcome.reason == "stopped"
        for event in self.assembler.finish(outcome.meter_id, hardware, stopped=stopped):
            events.extend(self._with_changes(event))
        events.extend(self.detector.after_poll(outcome))
        if self.tracker is not None:
            self.tracker.poll_finished(outcome)
        return events

    def _command_outcome(self, outcome: obs.CommandOutcome) -> list[types.Event]:
        events: list[types.Event] = []
        hardware = self.hardware.get(outcome.meter_id)
        client_reads = not outcome.recorded
        built = self.assembler.finish(
            outcome.meter_id, hardware, lane=outcome.lane, keep_waiting=client_reads
        )
        for event in built:
            events.extend(self._with_changes(event))
        if outcome.recorded:
            events.append(self._event(outcome, commands.outcome_body(outcome)))
        if self.tracker is not None and not outcome.ok and outcome.recorded:
            self.tracker.command_failed(outcome)
        return events

    def _with_changes(self, event: types.Event) -> list[types.Event]:
        if isinstance(event.body, types.IdentityRead) and event.body.hardware:
            self.hardware[event.meter_id] = event.body.hardware
        return [event, *self.detector.after_reading(event)]

    @staticmethod
    def _event(
        observation: obs.Observation, body: types.AnyBody, *, observed_at: datetime | None = None
    ) -> types.Event:
        return types.Event(
            meter_id=observation.meter_id,
            observed_at=observed_at or observation.read_at,
            read_at=observation.read_at,
            body=body,
        )
