"""The meter polling engine: EMOP sessions with a fleet of meters, emitting observations.

The daemon's side of the boundary::

    from flowsd.meters import FleetSupervisor, MeterResume, MeterTarget, PollPlan

    async def sink(batch: Sequence[Observation]) -> None: ...   # awaited: back-pressure

    supervisor = FleetSupervisor(config.meters, PollPlan.from_config(config.poll), sink)
    supervisor.apply([MeterTarget(meter_id=..., serial=..., ip_address=..., hardware=...,
                                  resume=MeterResume(...)), ...])
    await task_group.start(supervisor.run)
    ...
    await supervisor.submit(meter_id, MeterCommand(top_up(token), source=..., client=...))
    supervisor.status()           # FleetStatus for `flowsd status` and readiness
    await supervisor.stop()       # on shutdown

Observation types are in :mod:`flowsd.meters.observations`; the engine never imports the
event store. A session runs jobs (:mod:`flowsd.meters.poll`) and commands
(:mod:`flowsd.meters.command`), each with a :mod:`flowsd.meters.conversation` per run.
"""

from flowsd.meters.eventlog import cursor_from_entries
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
from flowsd.meters.plan import PollPlan
from flowsd.meters.status import FailingMeter, FleetStatus, SlowMeter
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import MeterResume, MeterTarget

__all__ = [
    "ClockDrift",
    "EventLogCursor",
    "EventLogScanned",
    "FailingMeter",
    "FailureReason",
    "FleetStatus",
    "FleetSupervisor",
    "IntervalGap",
    "IntervalRecord",
    "MeterLogEntry",
    "MeterResume",
    "MeterTarget",
    "Observation",
    "ObservationSink",
    "PollPlan",
    "ReadFailure",
    "Reading",
    "SessionOutcome",
    "SlowMeter",
    "cursor_from_entries",
]
