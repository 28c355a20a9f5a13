"""Stale meters: answering, but with readings older than their cadence allows.

**The rule.** A meter is *stale* while its breaker holds it online and at least one cadence
of its poll plan has had no successful poll for more than :data:`STALE_AFTER_PERIODS` periods
of that cadence. A poll is successful when every request of it was answered (a NAK for an
object the model lacks counts as an answer). Age is counted from the end of the cadence's
last successful poll or, when later, from when the meter joined the fleet, came back online
or the poll plan was reloaded, so a meter is never stale merely because flowsd just met it.

Why three periods: a meter due once per slot runs at most 1.5 periods after its previous
run (its place in the slot plus a jitter of at most half a period), so one failed or
skipped slot stays under three periods and two in a row do not. An offline meter is not
stale: it is offline (``flowsd_meters{state="offline"}``). A poll that outlasts several
periods of a short cadence makes the meter stale, which is the point: its readings are old.

The count is the gauge ``flowsd_meters_stale``; which meters are stale goes to the log
(a warning with the serial when one turns stale, an info line when it is fresh again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from uuid import UUID

STALE_AFTER_PERIODS = 3.0


@dataclass(frozen=True)
class StaleMeter:
    """Why one meter is stale: its most overdue cadence."""

    meter_id: UUID
    cadence: str
    period_seconds: float
    age_seconds: float


@dataclass(frozen=True)
class FreshnessView:
    """One meter as the rule sees it."""

    meter_id: UUID
    online: bool
    periods: Mapping[str, float]  # cadence name -> period in seconds


@dataclass
class Freshness:
    """Per meter: when each cadence last polled successfully, and the baseline before that."""

    succeeded: dict[UUID, dict[str, float]] = field(default_factory=dict)
    since: dict[UUID, float] = field(default_factory=dict)
    stale: dict[UUID, StaleMeter] = field(default_factory=dict)

    def restart_clock(self, meter_id: UUID, now: float) -> None:
        """The meter joined the fleet, came back online or got a new plan: ages start now
        for every cadence it has not yet polled successfully since."""
        self.since[meter_id] = now

    def polled(self, meter_id: UUID, cadences: Iterable[str], now: float) -> None:
        """A successful poll of ``cadences`` ended at ``now``."""
        done = self.succeeded.setdefault(meter_id, {})
        for name in cadences:
            done[name] = now

    def forget(self, meter_id: UUID) -> None:
        self.succeeded.pop(meter_id, None)
        self.since.pop(meter_id, None)
        self.stale.pop(meter_id, None)

    def overdue(self, meter: FreshnessView, now: float) -> StaleMeter | None:
        """The meter's most overdue cadence if the rule makes it stale, else None."""
        if not meter.online:
            return None
        since = self.since.get(meter.meter_id, now)
        done = self.succeeded.get(meter.meter_id, {})
        worst: StaleMeter | None = None
        for name, period in meter.periods.items():
            age = now - max(done.get(name, since), since)
            if age > STALE_AFTER_PERIODS * period and (
                worst is None or age / period > worst.age_seconds / worst.period_seconds
            ):
                worst = StaleMeter(meter.meter_id, name, period, age)
        return worst

    def evaluate(
        self, meters: Iterable[FreshnessView], now: float
    ) -> tuple[list[StaleMeter], list[UUID]]:
        """Apply the rule to ``meters``; returns (turned stale, fresh again) since last time.
        :attr:`stale` holds every stale meter afterwards."""
        turned: list[StaleMeter] = []
        stale: dict[UUID, StaleMeter] = {}
        for meter in meters:
            found = self.overdue(meter, now)
            if found is None:
                continue
            stale[meter.meter_id] = found
            if meter.meter_id not in self.stale:
                turned.append(found)
        fresh = [meter_id for meter_id in self.stale if meter_id not in stale]
        self.stale = stale
        return turned, fresh
