"""The fleet at a glance: :class:`FleetStatus`, what ``flowsd status`` and readiness read.

:func:`fleet_status` picks, from the sessions, the meters whose last poll took longest and
those failing (offline first, then by consecutive failures), next to the engine's counts.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from flowsd.meters.breaker import BreakerState
from flowsd.meters.limits import ConnectionLimiter
from flowsd.meters.observations import FailureReason
from flowsd.meters.session import MeterSession
from flowsd.meters.statistics import FleetStatistics


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


def utc(seconds: float | None) -> datetime | None:
    """A wall-clock time in seconds as an aware datetime (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def fleet_status(
    sessions: Collection[MeterSession],
    stats: FleetStatistics,
    limiter: ConnectionLimiter,
    *,
    running: bool,
    top: int,
) -> FleetStatus:
    """The status of a fleet of ``sessions`` with at most ``top`` slowest and failing meters
    (``top=0``: counts only)."""
    listed = sessions if top > 0 else ()
    timed = heapq.nlargest(
        top,
        (s for s in listed if s.last_poll_seconds is not None),
        key=lambda s: s.last_poll_seconds or 0.0,
    )
    failing = heapq.nsmallest(
        top,
        (s for s in listed if s.breaker.consecutive_failures or s.breaker.offline),
        key=lambda s: (not s.breaker.offline, -s.breaker.consecutive_failures),
    )
    return FleetStatus(
        running=running,
        meters=len(sessions),
        online=stats.meters_by_state["online"],
        offline=stats.meters_by_state["offline"],
        awaiting_first_answer=stats.meters_by_state["awaiting_first_answer"],
        never_answered=stats.never_answered,
        polls_running=stats.meters_running,
        waiting_to_start=stats.meters_waiting_to_start,
        connections_in_flight=limiter.in_flight,
        peak_connections_in_flight=stats.peak_connections_in_flight,
        connects=limiter.connects,
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
                failed_at=utc(s.last_failure_at),
                offline_since=utc(s.breaker.offline_since),
            )
            for s in failing[:top]
        ],
    )
