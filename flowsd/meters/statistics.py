"""The polling engine's counts.

:class:`EngineCounts` is one object shared by the fleet supervisor and every meter session,
with their links, connections and connection limiters: each adds to it where the thing
happens. :class:`FleetTally` keeps the fleet's state (meters by breaker state, meters never
answered) as sessions join, run and leave. :meth:`FleetTally.statistics` copies both, with
what the supervisor adds, into a :class:`FleetStatistics`, which ``flowsd status``, tests and
``/metrics`` (:func:`flowsd.meters.metrics.fleet_families`) read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from flowsd.fields import same_named
from flowsd.meters.breaker import BREAKER_STATES, BreakerState
from flowsd.meters.limits import ConnectionTotals, Lane
from flowsd.meters.transport import Traffic

if TYPE_CHECKING:
    from flowsd.meters.session import MeterSession


@dataclass(slots=True)
class EngineCounts:
    """Everything the engine counts since it was created (this process)."""

    requests_ok: int = 0  # requests answered, retries included
    request_failures: Counter[str] = field(default_factory=Counter)  # failed for good, by reason
    # Attempts by (request kind, "ok" or "failed", "ok" or the failure reason).
    attempts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    retries: int = 0
    backfill_deferred: int = 0
    polls: int = 0
    failed_polls: int = 0
    probes: int = 0
    failed_probes: int = 0
    runs_in_progress: int = 0  # polls, probes and command runs
    watchdog_cancellations: int = 0
    skipped_slots: int = 0
    sink_wait_seconds: float = 0.0
    sink_failures: int = 0
    observations: Counter[str] = field(default_factory=Counter)  # by type label
    interval_gaps: int = 0
    event_log_overflows: int = 0
    event_log_rescans: int = 0
    event_log_invalid_records: int = 0
    invalid_values: int = 0
    breaker_transitions: Counter[str] = field(
        default_factory=lambda: Counter(dict.fromkeys(("went_offline", "came_online"), 0))
    )
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)  # operation, outcome
    commands_running: int = 0
    commands_queued: int = 0
    commands_refused: Counter[str] = field(default_factory=Counter)  # by reason
    traffic: Traffic = field(default_factory=Traffic)
    connections: ConnectionTotals = field(default_factory=ConnectionTotals)


class FleetStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's counts and the fleet's state at one moment."""

    meters_by_state: dict[str, int]  # every breaker state, 0 included
    never_answered: int
    stale: int  # online meters whose readings are stale (flowsd/meters/freshness.py)
    runs_in_progress: int
    meters_running: int  # meter tasks started and not ended (at most meters_running_bound)
    meters_running_bound: int  # flowsd.meters.launcher.bound_for the current caps
    meters_waiting_to_start: int  # due, queued until a running meter task ends
    connections_in_flight: int
    peak_connections_in_flight: int  # under the current caps
    connects: int
    connection_grants: dict[Lane, int]
    backfill_deferred: int
    bytes_sent: int
    bytes_received: int
    requests_ok: int
    request_failures: dict[str, int]
    attempts: dict[tuple[str, str, str], int]
    retries: int
    polls: int
    failed_polls: int
    probes: int
    failed_probes: int
    watchdog_cancellations: int
    skipped_slots: int
    sink_wait_seconds: float
    sink_failures: int
    observations: dict[str, int]
    interval_gaps: int
    event_log_overflows: int
    event_log_rescans: int
    event_log_invalid_records: int
    invalid_values: int
    breaker_transitions: dict[str, int]
    commands: dict[tuple[str, str], int]
    commands_running: int
    commands_queued: int
    commands_refused: dict[str, int]


@dataclass(slots=True)
class FleetTally:
    """The fleet's meters by breaker state and how many never answered, kept up to date by
    the supervisor as sessions join, end a run and leave."""

    states: Counter[BreakerState] = field(default_factory=Counter)
    never_answered: int = 0

    def joined(self, session: MeterSession) -> None:
        self.states[session.breaker.state] += 1
        self.never_answered += not session.answered_ever

    def left(self, session: MeterSession) -> None:
        self.states[session.breaker.state] -= 1
        self.never_answered -= not session.answered_ever

    def ran(self, session: MeterSession, before: BreakerState, answered_before: bool) -> None:
        """A run of ``session`` ended; it started in state ``before``."""
        self.states[before] -= 1
        self.states[session.breaker.state] += 1
        self.never_answered -= session.answered_ever and not answered_before

    def statistics(
        self,
        counts: EngineCounts,
        *,
        stale: int,
        meters_running: int,
        meters_running_bound: int,
        meters_waiting_to_start: int,
        peak_connections_in_flight: int,
    ) -> FleetStatistics:
        connections = counts.connections
        return FleetStatistics(
            **same_named(counts, FleetStatistics),
            meters_by_state={state: self.states[state] for state in BREAKER_STATES},
            never_answered=self.never_answered,
            stale=stale,
            meters_running=meters_running,
            meters_running_bound=meters_running_bound,
            meters_waiting_to_start=meters_waiting_to_start,
            connections_in_flight=connections.in_flight,
            peak_connections_in_flight=peak_connections_in_flight,
            connects=connections.connects,
            connection_grants=dict(connections.granted),
            bytes_sent=counts.traffic.sent,
            bytes_received=counts.traffic.received,
        )
