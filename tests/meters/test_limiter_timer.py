"""The limiter's token timer on both event loops: one wake-up per token.

The daemon runs on uvloop, whose timers count whole milliseconds: a delay under half of one
fires at once and a longer one up to a millisecond early. A timer armed for the fraction of
a token still missing then fired again and again until the token was whole (dozens of wakes
per token; about four per connection at fleet scale). Each case runs on a fresh loop of its
own kind.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from flowsd.config import EventLoop
from flowsd.meters.limits import ConnectionLimiter
from flowsd.ops.event_loop import loop_factory

RATE = 200.0


async def _wait_for_a_nearly_whole_token(limiter: ConnectionLimiter) -> None:
    # The burst is spent; most of the next token is refilled (by a blocking wait: the loop
    # must not run meanwhile) when the waiter queues: the timer is armed for a fraction of
    # a millisecond, below uvloop's timer resolution.
    await asyncio.sleep(1.5 / RATE)  # the burst refilled
    assert limiter.try_acquire("live")
    limiter.release()
    time.sleep(0.93 / RATE)  # noqa: ASYNC251 (the loop must not run: see above)
    assert await limiter.acquire("live")
    limiter.release()


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_fraction_of_a_token_missing_costs_one_wake(kind: EventLoop) -> None:
    limiter = ConnectionLimiter(max_in_flight=10, rate=RATE, burst=1)
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        for _ in range(20):
            runner.run(_wait_for_a_nearly_whole_token(limiter))
    assert limiter.connects == 40
    assert limiter.token_wakes <= 20, limiter.token_wakes
