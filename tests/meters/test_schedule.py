"""Schedule spreading, slots, jitter and the breaker's backoff."""

from __future__ import annotations

import random
import statistics
import uuid

from flowsd.backoff import Backoff
from flowsd.meters.breaker import Breaker
from flowsd.meters.schedule import MeterSchedule, phase_of

HOUR = 3600.0


def _ids(n: int, seed: int = 1) -> list[uuid.UUID]:
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128)) for _ in range(n)]


def test_phases_spread_a_fleet_evenly_over_the_hour() -> None:
    phases = [phase_of(m, "hourly", HOUR) for m in _ids(6000)]
    counts = [0] * 12
    for p in phases:
        counts[int(p // 300)] += 1
    # 500 expected per 5-minute bucket; no top-of-the-hour herd.
    assert min(counts) > 400 and max(counts) < 600
    assert max(phases) < HOUR and min(phases) >= 0


def test_phase_is_stable_and_differs_per_cadence() -> None:
    meter = _ids(1)[0]
    assert phase_of(meter, "hourly", HOUR) == phase_of(meter, "hourly", HOUR)
    assert phase_of(meter, "hourly", HOUR) != phase_of(meter, "daily", 86400.0)


def test_first_poll_is_at_the_meters_place_in_the_next_slot_then_every_period() -> None:
    meter = _ids(1)[0]
    now = 1_800_000_000.0
    schedule = MeterSchedule(meter, [("hourly", HOUR)], jitter=0.0, now=now)
    first = schedule.next_due()
    assert now < first <= now + HOUR
    assert schedule.due(first - 0.001) == [] and schedule.due(first) == ["hourly"]
    assert schedule.mark_done(["hourly"], first) == 0
    assert schedule.next_due() == first + HOUR


def test_slots_missed_while_busy_or_offline_are_counted_not_queued() -> None:
    meter = _ids(1)[0]
    now = 1_800_000_000.0
    schedule = MeterSchedule(meter, [("hourly", HOUR)], jitter=0.0, now=now)
    first = schedule.next_due()
    late = first + 3 * HOUR + 10
    assert schedule.due(late) == ["hourly"]
    assert schedule.mark_done(["hourly"], late) == 3
    assert schedule.next_due() == first + 4 * HOUR


def test_jitter_stays_within_bounds_and_rebase_keeps_unchanged_cadences() -> None:
    meter = _ids(1)[0]
    now = 1_800_000_000.0
    schedule = MeterSchedule(meter, [("hourly", HOUR), ("m", 60.0)], jitter=600.0, now=now)
    hourly = schedule.cadences["hourly"]
    offset = hourly.next_due() - hourly.slot_start(hourly.last_done + 1)
    assert 0 <= offset < 600
    minute = schedule.cadences["m"]
    assert minute.jitter == 30.0  # capped at half the period
    schedule.mark_done(["hourly"], hourly.next_due())
    kept = schedule.cadences["hourly"]
    schedule.rebase([("hourly", HOUR), ("daily", 86400.0)], meter, 600.0, now)
    assert schedule.cadences["hourly"] is kept
    assert set(schedule.cadences) == {"hourly", "daily"}


def test_backoff_doubles_is_capped_and_jittered() -> None:
    rng = random.Random(3)
    delays = [Backoff(60.0, 3600.0).delay(n, rng) for n in range(12)]
    assert 30 <= delays[0] <= 60
    assert 60 <= delays[1] <= 120
    assert all(1800 <= d <= 3600 for d in delays[7:])
    samples = [Backoff(10.0, 100.0).delay(0, rng) for _ in range(200)]
    assert statistics.pstdev(samples) > 1.0


def test_breaker_goes_offline_after_threshold_probes_and_recovers() -> None:
    breaker = Breaker(threshold=3, probe_initial=60.0, probe_max=600.0, rng=random.Random(1))
    assert breaker.record_failure(0.0) is None
    assert breaker.record_failure(1.0) is None
    assert breaker.record_failure(2.0) == "went_offline"
    assert not breaker.online and breaker.next_probe_at is not None
    assert 32.0 <= breaker.next_probe_at <= 62.0
    assert not breaker.probe_due(10.0) and breaker.probe_due(62.0)
    waits = []
    for i in range(10):
        now = 1000.0 * (i + 1)
        assert breaker.record_failure(now) is None  # stays offline, never gives up
        assert breaker.next_probe_at is not None
        waits.append(breaker.next_probe_at - now)
    assert max(waits) <= 600.0 and waits[-1] >= 300.0
    assert breaker.record_success() == "came_online"
    assert breaker.online and breaker.consecutive_failures == 0
    assert breaker.record_success() is None


def test_breaker_restored_offline_probes_soon_without_a_new_transition() -> None:
    breaker = Breaker(
        threshold=3,
        probe_initial=60.0,
        probe_max=600.0,
        rng=random.Random(1),
        offline_since=50.0,
        now=100.0,
    )
    assert not breaker.online
    assert breaker.next_probe_at is not None and 100.0 <= breaker.next_probe_at <= 160.0
    assert breaker.record_failure(200.0) is None
