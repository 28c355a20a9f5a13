"""The one backoff: doubling from the initial delay, capped, jittered into [½·d, d], never
below the floor; a Retry counts attempts and starts over after a success."""

from __future__ import annotations

import random
import statistics

from flowsd.backoff import FLOOR_SECONDS, Backoff, Retry


def test_delays_double_up_to_the_cap_with_half_jitter() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.5, 8.0)
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(attempt, rng) <= ceiling
    samples = [backoff.delay(3, rng) for _ in range(200)]
    assert statistics.pstdev(samples) > 0.2  # spread out, not in lockstep


def test_a_zero_or_huge_configuration_stays_sane() -> None:
    assert Backoff(0.0, 0.0).delay(0) >= FLOOR_SECONDS / 2
    assert Backoff(1.0, 60.0).delay(10_000) <= 60.0


def test_retry_counts_attempts_and_resets() -> None:
    retry = Retry(Backoff(1.0, 100.0), random.Random(1))
    first, second, third = retry.next_delay(), retry.next_delay(), retry.next_delay()
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0 and 2.0 <= third <= 4.0
    retry.reset()
    assert retry.next_delay() <= 1.0
