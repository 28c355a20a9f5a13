"""When each meter is due: cadence slots spread by a stable hash, plus jitter.

Each cadence of period P is cut into slots ``[k·P + phase, (k+1)·P + phase)`` on the UTC
clock, where ``phase`` comes from a hash of (meter id, cadence name). A fleet is therefore
spread evenly over every period, the same meter keeps the same place in the hour across
restarts, and ``apply()`` of an unchanged meter keeps its schedule. Within its slot a meter
runs at ``slot start + jitter`` (jitter also from the hash, so it is reproducible, and at
most half a period).

The first run of a cadence after its schedule is made (a start, a restart, a reload that
changes its period) is the exception: a meter whose place lies late in the period would
otherwise first run up to a period plus the jitter after the start, and its readings would
be missing for longer than one cadence. So the first runs, ``[now, now + period + jitter)``
by place and jitter, are scaled into ``[now, now + FIRST_RUN_WITHIN x period)``: the fleet
stays spread evenly and in the same order, and the rest of the period is left for the
polls to finish. Runs after the first keep to their slots.

A schedule remembers the last slot it serviced per cadence. Slots that passed while the
meter was offline or still busy are not queued: the newest one is serviced and the older
ones are counted as skipped.

Every meter session holds a schedule, so it is kept small (216 bytes for the shipped plan's
three cadences by tracemalloc on CPython 3.11, against 728 with an object per cadence): what
all meters of the same periods and jitter share (names, periods, capped jitters) is one
:class:`Cadences`, and a :class:`MeterSchedule` holds only the meter id, that shared
description and one array of doubles with, per cadence, the phase, the brought-forward first
due time (NaN once the first run is done) and the last serviced slot (a slot index, exact in
a double below 2**53), then the soonest due time of all cadences as last computed.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from uuid import UUID

# The first run of a cadence falls within this share of its period after the schedule is made.
FIRST_RUN_WITHIN = 0.9

# Per cadence, the state array holds these three doubles, at 3·i + offset.
_PHASE = 0
_FIRST_DUE = 1  # NaN: no first run pending
_LAST_DONE = 2
_WIDTH = 3
# After the cadences: the soonest of their due times, NaN until next_due is asked again.
_SOONEST = -1


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts`` (same input, same number, every process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def phase_of(meter_id: UUID, cadence: str, period: float) -> float:
    """Offset of the meter's slots within the period, in seconds."""
    return unit_hash(meter_id, cadence, "phase") * period


def slot_index(now: float, period: float, phase: float) -> int:
    return math.floor((now - phase) / period)


class Cadences:
    """The cadences of a schedule, in order: names, periods and jitters (capped at half the
    period). Immutable, and shared by every schedule made with the same periods and jitter
    (:meth:`of`)."""

    __slots__ = ("index", "jitters", "names", "periods", "periods_by_name", "scales")

    def __init__(self, periods: Mapping[str, float], jitter: float) -> None:
        self.names = tuple(periods)
        self.periods = tuple(periods.values())
        self.jitters = tuple(min(jitter, period / 2) for period in self.periods)
        # The first run's offset from the schedule's making is scaled by this (module docstring).
        self.scales = tuple(
            FIRST_RUN_WITHIN * period / (period + capped)
            for period, capped in zip(self.periods, self.jitters, strict=True)
        )
        self.index = {name: i for i, name in enumerate(self.names)}
        self.periods_by_name: Mapping[str, float] = MappingProxyType(dict(periods))

    @classmethod
    def of(cls, periods: Iterable[tuple[str, float]], jitter: float) -> Cadences:
        """The shared description of ``periods`` (a name given twice: its last period, in
        its first place) with ``jitter``."""
        return _shared_cadences(tuple(dict(periods).items()), jitter)


# A few per configuration; bounded, so reloads cannot grow it (schedules keep their own).
@lru_cache(maxsize=64)
def _shared_cadences(periods: tuple[tuple[str, float], ...], jitter: float) -> Cadences:
    return Cadences(dict(periods), jitter)


class MeterSchedule:
    """All cadences of one meter."""

    __slots__ = ("cadences", "meter_id", "state")

    def __init__(
        self,
        meter_id: UUID,
        periods: Iterable[tuple[str, float]],
        *,
        jitter: float,
        now: float,
    ) -> None:
        self.meter_id = meter_id
        self.cadences = Cadences.of(periods, jitter)
        state: list[float] = []
        for i in range(len(self.cadences.names)):
            state += self._made(i, now)
        # From a list, not an iterator: an array extended item by item over-allocates.
        self.state = array("d", [*state, math.nan])

    def _made(self, i: int, now: float) -> tuple[float, float, int]:
        """Phase, first due time and last serviced slot of cadence ``i`` made at ``now``.

        Start with the current slot counted as done: the first poll comes in the order of
        the meters' places in the next slot, spread over most of a period (the module's
        docstring), so a restart does not poll the whole fleet at once."""
        cadences = self.cadences
        period = cadences.periods[i]
        phase = phase_of(self.meter_id, cadences.names[i], period)
        last_done = slot_index(now, period, phase)
        natural = self._due_at(i, phase, last_done + 1) - now
        return phase, now + natural * cadences.scales[i], last_done

    def _due_at(self, i: int, phase: float, index: int) -> float:
        cadences = self.cadences
        name, period, jitter = cadences.names[i], cadences.periods[i], cadences.jitters[i]
        return index * period + phase + unit_hash(self.meter_id, name, index) * jitter

    def _next_due(self, i: int) -> float:
        at = _WIDTH * i
        first_due = self.state[at + _FIRST_DUE]
        if not math.isnan(first_due):
            return first_due
        return self._due_at(i, self.state[at + _PHASE], int(self.state[at + _LAST_DONE]) + 1)

    def _done(self, i: int, now: float) -> int:
        """Record a run at ``now`` as servicing the current slot; returns slots skipped.

        A first run brought forward into the slot counted as done at creation services the
        next one, whose own run would otherwise follow within the same period."""
        at = _WIDTH * i
        last_done = int(self.state[at + _LAST_DONE])
        current = slot_index(now, self.cadences.periods[i], self.state[at + _PHASE])
        current = max(current, last_done + 1)
        self.state[at + _FIRST_DUE] = math.nan
        self.state[at + _LAST_DONE] = current
        self.state[_SOONEST] = math.nan
        return max(0, current - last_done - 1)

    def next_due(self) -> float:
        """The soonest due time of any cadence (kept until the next run: a poll asks
        before each of its back-fill requests, and each due time is a hash)."""
        soonest = self.state[_SOONEST]
        if math.isnan(soonest):
            cadences = range(len(self.cadences.names))
            soonest = min((self._next_due(i) for i in cadences), default=math.inf)
            self.state[_SOONEST] = soonest
        return soonest

    def due(self, now: float) -> list[str]:
        return [name for i, name in enumerate(self.cadences.names) if now >= self._next_due(i)]

    def mark_done(self, names: Iterable[str], now: float) -> int:
        """Record the named cadences as serviced in the current slot (a first run brought
        forward: in the next one); returns slots skipped."""
        index = self.cadences.index
        return sum(self._done(index[name], now) for name in names)

    def lateness(self, names: Iterable[str], now: float) -> float:
        """How long after its due time the earliest of the named cadences started."""
        index = self.cadences.index
        dues = [self._next_due(index[n]) for n in names if n in index]
        return max(0.0, now - min(dues)) if dues else 0.0

    def periods(self) -> Mapping[str, float]:
        """Cadence name -> period in seconds (read-only, shared with like schedules)."""
        return self.cadences.periods_by_name

    def cadence(self, name: str) -> CadenceSlots:
        """A view of the named cadence (raises KeyError for an unknown one)."""
        if name not in self.cadences.index:
            raise KeyError(name)
        return CadenceSlots(self, name)

    def rebase(self, periods: Iterable[tuple[str, float]], jitter: float, now: float) -> None:
        """Adopt new cadences, keeping the slots of those whose period and capped jitter did
        not change."""
        fresh = Cadences.of(periods, jitter)
        old, old_state = self.cadences, self.state
        if fresh is old:
            return
        self.cadences = fresh
        state: list[float] = []
        for i, name in enumerate(fresh.names):
            j = old.index.get(name)
            if (
                j is not None
                and old.periods[j] == fresh.periods[i]
                and old.jitters[j] == fresh.jitters[i]
            ):
                state += old_state[_WIDTH * j : _WIDTH * (j + 1)]
            else:
                state += self._made(i, now)
        self.state = array("d", [*state, math.nan])


class CadenceSlots:
    """One cadence of a :class:`MeterSchedule`, read through the schedule (for tests and
    inspection; a schedule holds no per-cadence objects). Follows a rebase by name."""

    __slots__ = ("name", "schedule")

    def __init__(self, schedule: MeterSchedule, name: str) -> None:
        self.schedule = schedule
        self.name = name

    @property
    def _i(self) -> int:
        return self.schedule.cadences.index[self.name]

    def _get(self, offset: int) -> float:
        return self.schedule.state[_WIDTH * self._i + offset]

    @property
    def period(self) -> float:
        return self.schedule.cadences.periods[self._i]

    @property
    def jitter(self) -> float:
        return self.schedule.cadences.jitters[self._i]

    @property
    def phase(self) -> float:
        return self._get(_PHASE)

    @property
    def first_due(self) -> float | None:
        """When the brought-forward first run is due; None once it is done."""
        first_due = self._get(_FIRST_DUE)
        return None if math.isnan(first_due) else first_due

    @property
    def last_done(self) -> int:
        return int(self._get(_LAST_DONE))

    def slot_start(self, index: int) -> float:
        return index * self.period + self.phase

    def due_at(self, index: int) -> float:
        return self.schedule._due_at(self._i, self.phase, index)

    def next_due(self) -> float:
        return self.schedule._next_due(self._i)
