"""Stale meters: answering, but with readings older than their cadence allows.

**The rule.** A meter is *stale* while its breaker holds it online and at least one cadence
of its poll plan has had no successful poll for more than :data:`STALE_AFTER_PERIODS` periods
of that cadence. A poll is successful when every request of it was answered (a NAK for an
object the model lacks counts as an answer). Age is counted from the end of the cadence's
last successful poll or, when later, from when the meter joined the fleet, came back online
or the poll plan was reloaded, so a meter is never stale merely because flowsd just met it.

Why three periods: a meter due once per slot runs at most 1.5 periods after its previous
run (its place in the slot plus a jitter of at most half a period), so one failed or
skipped slot stays under three periods and two in a row do not. The exception is the run
after a cadence's first one, which :mod:`~flowsd.meters.schedule` brings forward: up to
``P(2 - 0.9P/(P+J)) + J`` after it (1.13 periods for the shipped plan's half hour and 30 s
jitter; up to 1.9 for a cadence of twice the jitter), so a failed slot right after it still
stays under three. An offline meter is not
stale: it is offline (``flowsd_meters{state="offline"}``). A poll that outlasts several
periods of a short cadence makes the meter stale, which is the point: its readings are old.

The count is the gauge ``flowsd_meters_stale``; which meters are stale goes to the log
(a warning with the serial when one turns stale, an info line when it is fresh again).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Iterable, Mapping
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


ViewOf = Callable[[UUID], FreshnessView | None]


@dataclass
class Freshness:
    """Per meter: when each cadence last polled successfully, and the baseline before that.

    Applying the rule is incremental: each meter has an entry in a heap keyed by the
    earliest time it could turn stale (:meth:`deadline`), and :meth:`evaluate` looks only at
    the entries that came due and at the meters already stale. A poll only moves a
    deadline later, so the entry is left in place and re-pushed with the real deadline when
    it comes up; what can move a deadline earlier (a new meter, a comeback, new periods)
    calls :meth:`watch`.
    """

    stale: dict[UUID, StaleMeter] = field(default_factory=dict)
    _heap: list[tuple[float, UUID]] = field(default_factory=list)
    # Per meter one array of doubles, not a dict of floats per meter (about 150 bytes less a
    # meter): [0] the baseline (since), then each cadence's last success at the position
    # _positions gives its name; NaN for not yet.
    _times: dict[UUID, array[float]] = field(default_factory=dict)
    _positions: dict[str, int] = field(default_factory=dict)

    def restart_clock(self, meter_id: UUID, now: float) -> None:
        """The meter joined the fleet, came back online or got a new plan: ages start now
        for every cadence it has not yet polled successfully since."""
        self._of(meter_id)[0] = now

    def polled(self, meter_id: UUID, cadences: Iterable[str], now: float) -> None:
        """A successful poll of ``cadences`` ended at ``now``."""
        times = self._of(meter_id)
        for name in cadences:
            position = self._positions.get(name)
            if position is None:
                position = self._positions[name] = len(self._positions) + 1
            if position >= len(times):
                times.extend([math.nan] * (position + 1 - len(times)))
            times[position] = now

    def since(self, meter_id: UUID) -> float | None:
        """The baseline of the meter's ages (None: never set)."""
        times = self._times.get(meter_id)
        return None if times is None or math.isnan(times[0]) else times[0]

    def succeeded(self, meter_id: UUID, cadence: str) -> float | None:
        """When a poll of ``cadence`` last succeeded (None: not since the meter was met)."""
        times = self._times.get(meter_id)
        position = self._positions.get(cadence)
        if times is None or position is None or position >= len(times):
            return None
        return None if math.isnan(times[position]) else times[position]

    def forget(self, meter_id: UUID) -> None:
        self._times.pop(meter_id, None)
        self.stale.pop(meter_id, None)

    def deadline(self, meter_id: UUID, periods: Mapping[str, float]) -> float:
        """The time after which the meter is stale unless a cadence is polled meanwhile."""
        since = self.since(meter_id)
        base = -math.inf if since is None else since
        return (
            min(
                (max(self._done(meter_id, name, base), base) + STALE_AFTER_PERIODS * period)
                for name, period in periods.items()
            )
            if periods
            else math.inf
        )

    def _of(self, meter_id: UUID) -> array[float]:
        times = self._times.get(meter_id)
        if times is None:
            times = self._times[meter_id] = array("d", [math.nan] * (len(self._positions) + 1))
        return times

    def _done(self, meter_id: UUID, cadence: str, default: float) -> float:
        done = self.succeeded(meter_id, cadence)
        return default if done is None else done

    def watch(self, meter_id: UUID, periods: Mapping[str, float]) -> None:
        """(Re)examine the meter when its deadline comes (after restart_clock, new periods)."""
        heapq.heappush(self._heap, (self.deadline(meter_id, periods), meter_id))

    def rewatch_all(self, meters: Iterable[FreshnessView]) -> None:
        """Rebuild the heap (a new plan: periods may have become shorter)."""
        self._heap = [(self.deadline(m.meter_id, m.periods), m.meter_id) for m in meters]
        heapq.heapify(self._heap)

    def overdue(self, meter: FreshnessView, now: float) -> StaleMeter | None:
        """The meter's most overdue cadence if the rule makes it stale, else None."""
        if not meter.online:
            return None
        since = self.since(meter.meter_id)
        base = now if since is None else since
        worst: StaleMeter | None = None
        for name, period in meter.periods.items():
            age = now - max(self._done(meter.meter_id, name, base), base)
            if age > STALE_AFTER_PERIODS * period and (
                worst is None or age / period > worst.age_seconds / worst.period_seconds
            ):
                worst = StaleMeter(meter.meter_id, name, period, age)
        return worst

    def evaluate(self, now: float, view_of: ViewOf) -> tuple[list[StaleMeter], list[UUID]]:
        """Apply the rule; returns (turned stale, fresh again) since last time. ``view_of``
        gives a meter as the rule sees it (None: it left the fleet). :attr:`stale` holds
        every stale meter afterwards. Offline meters leave the heap until :meth:`watch`."""
        turned: list[StaleMeter] = []
        heap = self._heap
        while heap and heap[0][0] < now:
            _, meter_id = heapq.heappop(heap)
            meter = view_of(meter_id)
            if meter is None or not meter.online or meter_id in self.stale:
                continue
            deadline = self.deadline(meter_id, meter.periods)
            if deadline >= now:
                heapq.heappush(heap, (deadline, meter_id))
                continue
            found = self.overdue(meter, now)
            if found is not None:
                self.stale[meter_id] = found
                turned.append(found)
        fresh: list[UUID] = []
        just_turned = {t.meter_id for t in turned}
        for meter_id in [m for m in self.stale if m not in just_turned]:
            meter = view_of(meter_id)
            found = None if meter is None else self.overdue(meter, now)
            if found is not None:
                self.stale[meter_id] = found
                continue
            del self.stale[meter_id]
            fresh.append(meter_id)
            if meter is not None:
                self.watch(meter_id, meter.periods)
        return turned, fresh
