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
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from uuid import UUID

# The first run of a cadence falls within this share of its period after the schedule is made.
FIRST_RUN_WITHIN = 0.9


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts`` (same input, same number, every process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def phase_of(meter_id: UUID, cadence: str, period: float) -> float:
    """Offset of the meter's slots within the period, in seconds."""
    return unit_hash(meter_id, cadence, "phase") * period


def slot_index(now: float, period: float, phase: float) -> int:
    return math.floor((now - phase) / period)


class CadenceSlots:
    """Slot arithmetic and the last serviced slot for one (meter, cadence)."""

    __slots__ = ("first_due", "jitter", "last_done", "meter_id", "name", "period", "phase")

    def __init__(self, meter_id: UUID, name: str, period: float, jitter: float, now: float) -> None:
        self.meter_id = meter_id
        self.name = name
        self.period = period
        self.phase = phase_of(meter_id, name, period)
        self.jitter = min(jitter, period / 2)
        # Start with the current slot counted as done: the first poll comes in the order of
        # the meters' places in the next slot, spread over most of a period (the module's
        # docstring), so a restart does not poll the whole fleet at once.
        self.last_done = slot_index(now, period, self.phase)
        natural = self.due_at(self.last_done + 1) - now
        self.first_due: float | None = now + natural * (
            FIRST_RUN_WITHIN * period / (period + self.jitter)
        )

    def slot_start(self, index: int) -> float:
        return index * self.period + self.phase

    def due_at(self, index: int) -> float:
        return self.slot_start(index) + unit_hash(self.meter_id, self.name, index) * self.jitter

    def next_due(self) -> float:
        if self.first_due is not None:
            return self.first_due
        return self.due_at(self.last_done + 1)

    def done(self, now: float) -> int:
        """Record a run at ``now`` as servicing the current slot; returns slots skipped.

        A first run brought forward into the slot counted as done at creation services the
        next one, whose own run would otherwise follow within the same period."""
        current = max(self.current(now), self.last_done + 1)
        skipped = max(0, current - self.last_done - 1)
        self.first_due = None
        self.last_done = current
        return skipped

    def current(self, now: float) -> int:
        return slot_index(now, self.period, self.phase)

    def is_due(self, now: float) -> bool:
        return now >= self.next_due()


class MeterSchedule:
    """All cadences of one meter."""

    __slots__ = ("cadences",)

    def __init__(
        self,
        meter_id: UUID,
        periods: Iterable[tuple[str, float]],
        *,
        jitter: float,
        now: float,
    ) -> None:
        self.cadences = {
            name: CadenceSlots(meter_id, name, period, jitter, now) for name, period in periods
        }

    def next_due(self) -> float:
        return min((c.next_due() for c in self.cadences.values()), default=math.inf)

    def due(self, now: float) -> list[str]:
        return [name for name, c in self.cadences.items() if c.is_due(now)]

    def mark_done(self, names: Iterable[str], now: float) -> int:
        """Record the named cadences as serviced in the current slot (a first run brought
        forward: in the next one); returns slots skipped."""
        return sum(self.cadences[name].done(now) for name in names)

    def lateness(self, names: Iterable[str], now: float) -> float:
        """How long after its due time the earliest of the named cadences started."""
        dues = [self.cadences[n].next_due() for n in names if n in self.cadences]
        return max(0.0, now - min(dues)) if dues else 0.0

    def rebase(
        self, periods: Iterable[tuple[str, float]], meter_id: UUID, jitter: float, now: float
    ) -> None:
        """Adopt new cadences, keeping the slots of those whose period did not change."""
        fresh: dict[str, CadenceSlots] = {}
        for name, period in periods:
            old = self.cadences.get(name)
            if old is not None and old.period == period and old.jitter == min(jitter, period / 2):
                fresh[name] = old
            else:
                fresh[name] = CadenceSlots(meter_id, name, period, jitter, now)
        self.cadences = fresh
