"""The compact schedule: its size per meter, and that it behaves exactly as the schedule with
an object per cadence that it replaced (kept here as the reference)."""

from __future__ import annotations

import gc
import math
import random
import tracemalloc
import uuid
from collections.abc import Iterable
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from flowsd.meters.schedule import (
    FIRST_RUN_WITHIN,
    MeterSchedule,
    phase_of,
    slot_index,
    unit_hash,
)

# The shipped plan's cadences (config/flowsd.toml) and jitter.
SHIPPED = [("half_hourly", 1800.0), ("hourly", 3600.0), ("daily", 86400.0)]


def test_a_schedule_of_the_shipped_plan_is_small() -> None:
    n = 2000
    rng = random.Random(5)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(n)]
    now = 1_800_000_000.0
    MeterSchedule(ids[0], SHIPPED, jitter=30.0, now=now)  # the shared part, made once
    held: list[MeterSchedule | None] = [None] * n
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, meter_id in enumerate(ids):
            held[i] = MeterSchedule(meter_id, SHIPPED, jitter=30.0, now=now)
        gc.collect()
        per_schedule = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        if started:
            tracemalloc.stop()
    # Measured on CPython 3.11: 216 bytes (the object 56, its array 80 plus 10 doubles);
    # the schedule with an object per cadence took 728.
    assert per_schedule < 240


class _ReferenceCadence:
    """The former per-cadence object, verbatim but for its name."""

    def __init__(self, meter_id: UUID, name: str, period: float, jitter: float, now: float) -> None:
        self.meter_id = meter_id
        self.name = name
        self.period = period
        self.phase = phase_of(meter_id, name, period)
        self.jitter = min(jitter, period / 2)
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
        current = max(slot_index(now, self.period, self.phase), self.last_done + 1)
        skipped = max(0, current - self.last_done - 1)
        self.first_due = None
        self.last_done = current
        return skipped


class _ReferenceSchedule:
    """The former schedule: a dict of per-cadence objects."""

    def __init__(
        self, meter_id: UUID, periods: Iterable[tuple[str, float]], *, jitter: float, now: float
    ) -> None:
        self.cadences = {
            name: _ReferenceCadence(meter_id, name, period, jitter, now) for name, period in periods
        }

    def next_due(self) -> float:
        return min((c.next_due() for c in self.cadences.values()), default=math.inf)

    def due(self, now: float) -> list[str]:
        return [name for name, c in self.cadences.items() if now >= c.next_due()]

    def mark_done(self, names: Iterable[str], now: float) -> int:
        return sum(self.cadences[name].done(now) for name in names)

    def lateness(self, names: Iterable[str], now: float) -> float:
        dues = [self.cadences[n].next_due() for n in names if n in self.cadences]
        return max(0.0, now - min(dues)) if dues else 0.0

    def rebase(
        self, periods: Iterable[tuple[str, float]], meter_id: UUID, jitter: float, now: float
    ) -> None:
        fresh: dict[str, _ReferenceCadence] = {}
        for name, period in periods:
            old = self.cadences.get(name)
            if old is not None and old.period == period and old.jitter == min(jitter, period / 2):
                fresh[name] = old
            else:
                fresh[name] = _ReferenceCadence(meter_id, name, period, jitter, now)
        self.cadences = fresh


_CadenceState = tuple[str, float, float, float, float | None, int]


def _state(schedule: MeterSchedule) -> list[_CadenceState]:
    views = [schedule.cadence(name) for name in schedule.periods()]
    return [(c.name, c.period, c.jitter, c.phase, c.first_due, c.last_done) for c in views]


def _reference_state(schedule: _ReferenceSchedule) -> list[_CadenceState]:
    return [
        (name, c.period, c.jitter, c.phase, c.first_due, c.last_done)
        for name, c in schedule.cadences.items()
    ]


# Few names and common periods, so that rebases often keep a cadence, and any period.
_periods = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([0.2, 60.0, 1800.0, 3600.0, 86400.0]) | st.floats(0.01, 1e5),
    ),
    max_size=4,
)
_jitters = st.sampled_from([0.0, 30.0]) | st.floats(0.0, 1e5)
_steps = st.sampled_from(["advance", "to_next_due", "poll", "mark", "lateness", "rebase"])


@settings(max_examples=300, deadline=None)
@given(
    meter_id=st.uuids(),
    periods=_periods,
    jitter=_jitters,
    now=st.floats(1.0e9, 2.0e9),
    steps=st.lists(_steps, max_size=25),
    data=st.data(),
)
def test_the_compact_schedule_behaves_as_the_reference(
    *,
    meter_id: UUID,
    periods: list[tuple[str, float]],
    jitter: float,
    now: float,
    steps: list[str],
    data: st.DataObject,
) -> None:
    schedule = MeterSchedule(meter_id, periods, jitter=jitter, now=now)
    reference = _ReferenceSchedule(meter_id, periods, jitter=jitter, now=now)
    for step in steps:
        names = list(reference.cadences)
        if step == "advance":
            longest = max((c.period for c in reference.cadences.values()), default=100.0)
            now += data.draw(st.floats(0.0, 3 * longest))
        elif step == "to_next_due" and math.isfinite(reference.next_due()):
            now = max(now, reference.next_due())
        elif step == "poll":
            due = reference.due(now)
            assert schedule.due(now) == due
            assert schedule.lateness(due, now) == reference.lateness(due, now)
            assert schedule.mark_done(due, now) == reference.mark_done(due, now)
        elif step == "mark" and names:
            marked = data.draw(st.lists(st.sampled_from(names), max_size=4))
            assert schedule.mark_done(marked, now) == reference.mark_done(marked, now)
        elif step == "lateness":
            asked = data.draw(st.lists(st.sampled_from([*names, "unknown"]), max_size=4))
            assert schedule.lateness(asked, now) == reference.lateness(asked, now)
        elif step == "rebase":
            periods = data.draw(_periods)
            jitter = data.draw(st.sampled_from([jitter]) | _jitters)
            schedule.rebase(periods, jitter, now)
            reference.rebase(periods, meter_id, jitter, now)
        assert _state(schedule) == _reference_state(reference)
        assert schedule.next_due() == reference.next_due()
        assert schedule.due(now) == reference.due(now)
