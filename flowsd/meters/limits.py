"""Fleet-wide caps: connections in flight and new connections per second.

A session takes a slot (semaphore) first and a rate token second, so a token is never
spent by a session that then waits for a slot; together they bound both the number of open
meter connections and the connect rate, which keeps a mass reconnect after an outage from
becoming a storm. The limiter keeps its own counters (peak in flight, recent connect
times) so tests and ``flowsd status`` can check the caps held.
"""

from __future__ import annotations

import collections
import math
import time

import anyio

from flowsd.meters import metrics


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; waiters are served in order."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = -math.inf
        self._lock = anyio.Lock()

    def try_take(self) -> bool:
        """Take a token if one is available now and nobody is queued for one."""
        if self._lock.locked():
            return False
        self._refill(time.monotonic())
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        if self._stamp == -math.inf:
            self._stamp = now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self) -> None:
        async with self._lock:
            while True:
                self._refill(time.monotonic())
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await anyio.sleep((1.0 - self._tokens) / self.rate)


class ConnectionLimiter:
    """Both caps, plus the counters that prove them."""

    def __init__(self, max_in_flight: int, rate: float, burst: int, *, history: int = 4096) -> None:
        self.max_in_flight = max_in_flight
        self.bucket = TokenBucket(rate, burst)
        self._slots = anyio.Semaphore(max_in_flight)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connects = 0
        # Monotonic times of the most recent connects (for rate checks).
        self.recent_connects: collections.deque[float] = collections.deque(maxlen=history)

    def try_acquire(self) -> bool:
        """Take one connection slot if a slot and a token are free right now."""
        if self._slots.value == 0 or self._slots.statistics().tasks_waiting:
            return False
        if not self.bucket.try_take():
            return False
        self._slots.acquire_nowait()
        self._acquired()
        return True

    async def acquire(self) -> None:
        """Take one connection slot: wait for a free slot, then for a rate token."""
        await self._slots.acquire()
        try:
            await self.bucket.take()
        except BaseException:
            self._slots.release()
            raise
        self._acquired()

    def _acquired(self) -> None:
        self.in_flight += 1
        self.connects += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.recent_connects.append(time.monotonic())
        metrics.CONNECTIONS_IN_FLIGHT.inc()
        metrics.CONNECTS.inc()

    def release(self) -> None:
        self.in_flight -= 1
        metrics.CONNECTIONS_IN_FLIGHT.dec()
        self._slots.release()

    def max_connects_in_window(self, window: float) -> int:
        """Most connects seen in any ``window`` seconds among the recent connect times."""
        times = list(self.recent_connects)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best
