"""The stale-meter rule (:mod:`flowsd.meters.freshness`) applied to the fleet's sessions.

:class:`FreshnessWatch` tells the rule when a session joins the fleet, changes, leaves, comes
back online or polls successfully, and :meth:`FreshnessWatch.check` (called at every tick of
the fleet supervisor) applies it every :data:`FRESHNESS_EVERY_SECONDS`: the stale meters are
counted (``flowsd_meters_stale``) and each meter that turns stale, or fresh again, is logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from uuid import UUID

import structlog

from flowsd.meters.breaker import BreakerState
from flowsd.meters.freshness import Freshness, FreshnessView, StaleMeter
from flowsd.meters.observations import SessionOutcome
from flowsd.meters.session import MeterSession

# How often the stale-meter rule is applied (incremental: the meters whose deadline came).
FRESHNESS_EVERY_SECONDS = 5.0


def _periods(session: MeterSession) -> Mapping[str, float]:
    return session.schedule.periods()


class FreshnessWatch:
    """The fleet's :class:`~flowsd.meters.freshness.Freshness`, fed from its sessions."""

    def __init__(
        self, sessions: Mapping[UUID, MeterSession], wall_clock: Callable[[], float]
    ) -> None:
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.rule = Freshness()
        self.every_seconds = FRESHNESS_EVERY_SECONDS
        self.suspended = False
        self._checked_at = -math.inf
        self.log = structlog.get_logger("flowsd.meters")

    @property
    def stale(self) -> dict[UUID, StaleMeter]:
        return self.rule.stale

    def joined(self, session: MeterSession) -> None:
        """A new meter: its ages start now."""
        meter_id = session.target.meter_id
        self.rule.restart_clock(meter_id, self.wall_clock())
        self.rule.watch(meter_id, _periods(session))

    def changed(self, session: MeterSession) -> None:
        """The meter's target changed (its cadences may have too)."""
        self.rule.watch(session.target.meter_id, _periods(session))

    def left(self, meter_id: UUID) -> None:
        self.rule.forget(meter_id)

    def restart_all(self, now: float) -> None:
        """Every meter's age counted from ``now`` (a new plan, or the rule resumed)."""
        for meter_id in self.sessions:
            self.rule.restart_clock(meter_id, now)
        self.rule.rewatch_all(
            FreshnessView(meter_id, s.breaker.online, _periods(s))
            for meter_id, s in self.sessions.items()
        )

    def ran(
        self, session: MeterSession, before: BreakerState, outcome: SessionOutcome | None
    ) -> None:
        """A run of ``session`` ended (``before``: its breaker state when it started)."""
        meter_id = session.target.meter_id
        if session.breaker.online and before != "online":
            self.rule.restart_clock(meter_id, self.wall_clock())
            self.rule.watch(meter_id, _periods(session))
        if outcome is not None and outcome.ok and outcome.kind == "poll":
            self.rule.polled(meter_id, outcome.cadences, self.wall_clock())

    def suspend(self) -> None:
        """Stop applying the stale-meter rule (``flowsd demo`` while its clock leaps through
        simulated hours, which would make every meter stale at each leap)."""
        self.suspended = True

    def resume(self) -> None:
        """Apply the rule again, every meter's age counted from now."""
        self.restart_all(self.wall_clock())
        self.suspended = False

    def check(self) -> None:
        """Apply the rule if it is time to, and log the meters that turned stale or fresh."""
        now = self.wall_clock()
        if self.suspended:
            return
        if now - self._checked_at < self.every_seconds:
            return
        self._checked_at = now
        turned, fresh = self.rule.evaluate(now, self._view)
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
