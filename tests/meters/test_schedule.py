"""Schedule spreading, slots, jitter and the breaker's backoff."""

from __future__ import annotations

import random
import statistics
import uuid

from flowsd.backoff import Backoff
from flowsd.meters.breaker import Breaker
from flowsd.meters.schedule import FIRST_RUN_WITHIN, MeterSchedule, phase_of

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


def test_first_poll_is_within_most_of_a_period_then_at_the_meters_place_every_period() -> None:
    now = 1_800_000_000.0
    for meter in _ids(50):
        schedule = MeterSchedule(meter, [("hourly", HOUR)], jitter=30.0, now=now)
        hourly = schedule.cadence("hourly")
        first = schedule.next_due()
        assert now <= first < now + FIRST_RUN_WITHIN * HOUR
        assert schedule.due(first - 0.001) == [] and schedule.due(first) == ["hourly"]
        assert schedule.mark_done(["hourly"], first) == 0
        # Later runs keep to the meter's place (plus jitter) in each following slot,
        # at most one period and the jitter after the first.
        second = schedule.next_due()
        assert 0 <= second - hourly.slot_start(hourly.last_done + 1) < 30.0
        # The first run came forward by at most its share of (period + jitter) beyond 0.9.
        brought_forward = HOUR * (1 - FIRST_RUN_WITHIN * HOUR / (HOUR + 30.0))
        assert first < second <= first + HOUR + 30.0 + brought_forward
        schedule.mark_done(["hourly"], second)
        assert abs(schedule.next_due() - second - HOUR) < 30.0


def test_a_fleets_first_polls_come_within_one_period_spread_evenly_in_place_order() -> None:
    """The first polls after a start keep the spread of the slots (no herd at any moment)
    and the order of the meters' places, and every meter is polled within 0.9 of a period:
    no meter waits a period plus its jitter for its first readings."""
    now = 1_800_000_000.0
    meters = _ids(6000, seed=7)
    firsts = [
        MeterSchedule(m, [("hourly", HOUR)], jitter=30.0, now=now).next_due() - now for m in meters
    ]
    assert min(firsts) >= 0 and max(firsts) < FIRST_RUN_WITHIN * HOUR
    counts = [0] * 12
    for offset in firsts:
        counts[int(offset // (FIRST_RUN_WITHIN * HOUR / 12))] += 1
    assert min(counts) > 400 and max(counts) < 600
    # Each meter keeps its place in the period, as a share of it, up to the jitter's share.
    for meter, offset in zip(meters, firsts, strict=True):
        place = (phase_of(meter, "hourly", HOUR) - now) % HOUR
        assert abs(offset / (FIRST_RUN_WITHIN * HOUR) - place / HOUR) < 2 * 30.0 / HOUR


def test_slots_missed_while_busy_or_offline_are_counted_not_queued() -> None:
    meter = _ids(1)[0]
    now = 1_800_000_000.0
    schedule = MeterSchedule(meter, [("hourly", HOUR)], jitter=0.0, now=now)
    hourly = schedule.cadence("hourly")
    slot_after_start = hourly.slot_start(hourly.last_done + 1)
    late = slot_after_start + 3 * HOUR + 10
    assert schedule.due(late) == ["hourly"]
    assert schedule.mark_done(["hourly"], late) == 3
    assert schedule.next_due() == slot_after_start + 4 * HOUR


def test_jitter_stays_within_bounds_and_rebase_keeps_unchanged_cadences() -> None:
    meter = _ids(1)[0]
    now = 1_800_000_000.0
    schedule = MeterSchedule(meter, [("hourly", HOUR), ("m", 60.0)], jitter=600.0, now=now)
    hourly = schedule.cadence("hourly")
    schedule.mark_done(["hourly"], hourly.next_due())
    offset = hourly.next_due() - hourly.slot_start(hourly.last_done + 1)
    assert 0 <= offset < 600
    minute = schedule.cadence("m")
    assert minute.jitter == 30.0  # capped at half the period
    kept = (hourly.phase, hourly.last_done)
    schedule.rebase([("hourly", HOUR), ("daily", 86400.0)], 600.0, now)
    # Kept, not made again: a new cadence would have a brought-forward first run pending.
    hourly = schedule.cadence("hourly")
    assert (hourly.phase, hourly.last_done) == kept and hourly.first_due is None
    assert schedule.cadence("daily").first_due is not None
    assert set(schedule.periods()) == {"hourly", "daily"}


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
