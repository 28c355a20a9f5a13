"""Fleet-wide caps: connections in flight and new connections per second, live work first.

One :class:`ConnectionLimiter` grants every meter connection of the daemon. A grant needs a
free slot (at most ``max_in_flight`` connections open) and a rate token (a bucket of
``burst`` tokens refilled at ``rate`` per second), taken together at the moment of the
grant, so a token is never spent by a session that then waits for a slot. Together they
bound the number of open meter connections and the connect rate, which keeps a mass
reconnect after an outage from becoming a storm.

Waiters queue in two lanes, each first come first served:

* ``live``: everything a cadence reads (balances, voltages, signal, the event log, the
  newest half hours of the profile logs), commands and probes;
* ``backfill``: profile-log requests for older half hours.

A back-fill waiter is granted only while no live waiter is queued, so back-fill uses only
the capacity the live lane leaves under the caps. A back-fill waiter may also carry a
wall-clock ``due`` (when its meter's next cadence slot begins): :meth:`expire` withdraws the
waiters whose meter is due, so a meter never sits in the back-fill queue past its own live
readings; such a wait returns ``False`` and the poll leaves the rest of its back-fill to the
next one. :meth:`hold_backfill` does the same for every back-fill waiter, and refuses new
ones the same way, while the fleet supervisor has meters waiting to start
(:mod:`flowsd.meters.launcher`): live work of a meter without a task yet goes first too.

The limiter keeps its own counters (peak in flight, grants per lane, recent connect times)
so tests and ``flowsd status`` can check the caps held and the lanes' order, and adds to
:class:`ConnectionTotals` shared by the limiters of one engine (a reload of the caps makes a
new limiter; connections opened under the old one are still open and count).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from typing import Literal

Lane = Literal["live", "backfill"]
LANES: tuple[Lane, ...] = ("live", "backfill")


# Added to the token timer's delay, in whole milliseconds: uvloop's timer resolution.
_TIMER_SLACK_MS = 1
# Dead entries the back-fill due heap may hold beyond twice its live waiters before it is
# compacted (each compaction then pays for at least this many pushes).
_DUES_SLACK = 256


class ConnectionTotals:
    """Connections of every limiter that shares it: open now, opened, granted per lane."""

    __slots__ = ("connects", "granted", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.connects = 0
        self.granted: dict[Lane, int] = dict.fromkeys(LANES, 0)


class _Waiter:
    __slots__ = ("due", "future", "lane", "queued")

    def __init__(self, lane: Lane, future: asyncio.Future[bool], due: float) -> None:
        self.lane = lane
        self.future = future
        self.due = due
        self.queued = True  # until granted, expired or cancelled

    def leave(self, waiting: dict[Lane, int]) -> None:
        self.queued = False
        waiting[self.lane] -= 1


class ConnectionLimiter:
    """Both caps, the two lanes, and the counters that prove them."""

    def __init__(
        self,
        max_in_flight: int,
        rate: float,
        burst: int,
        *,
        history: int = 4096,
        totals: ConnectionTotals | None = None,
    ) -> None:
        self.totals = totals or ConnectionTotals()
        self.max_in_flight = max_in_flight
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = -math.inf  # monotonic time of the last refill
        self._queues: dict[Lane, collections.deque[_Waiter]] = {
            lane: collections.deque() for lane in LANES
        }
        self._waiting: dict[Lane, int] = dict.fromkeys(LANES, 0)
        # Back-fill waiters with a due time, earliest first (entries of granted or
        # cancelled waiters are dropped when they reach the top).
        self._dues: list[tuple[float, int, _Waiter]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connects = 0
        self.granted: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self.expired = 0
        self.backfill_held = False
        self.held = 0  # back-fill waits withdrawn or refused by hold_backfill
        self.token_wakes = 0  # times the token timer fired
        # Monotonic times of the most recent connects (for rate checks).
        self.recent_connects: collections.deque[float] = collections.deque(maxlen=history)

    # ----------------------------------------------------------------- tokens

    def _refill(self, now: float) -> None:
        if self._stamp == -math.inf:
            self._stamp = now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _can_grant(self) -> bool:
        if self.in_flight >= self.max_in_flight:
            return False
        self._refill(time.monotonic())
        return self._tokens >= 1.0

    # ----------------------------------------------------------------- taking a slot

    @property
    def due_entries(self) -> int:
        """Entries of the back-fill due heap, dead ones included (bounded, see _push_due)."""
        return len(self._dues)

    def waiting(self, lane: Lane) -> int:
        """Waiters queued in ``lane`` now."""
        return self._waiting[lane]

    def try_acquire(self, lane: Lane = "live") -> bool:
        """Take a connection at once if the caps allow it and nobody this request must
        let go first is queued (live: live waiters; back-fill: any waiter)."""
        if self._waiting["live"] or (
            lane == "backfill" and (self._waiting["backfill"] or self.backfill_held)
        ):
            return False
        if not self._can_grant():
            return False
        self._grant(lane)
        return True

    async def acquire(self, lane: Lane = "live", *, due: float = math.inf) -> bool:
        """Wait for a connection in ``lane``. ``True``: granted (give it back with
        :meth:`release`). ``False``: a back-fill wait withdrawn by :meth:`expire` because
        ``due`` (wall clock) came first, or by :meth:`hold_backfill`; nothing is held."""
        if self.try_acquire(lane):
            return True
        if lane == "backfill" and self.backfill_held:
            self.held += 1
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(lane, future, due)
        self._queues[lane].append(waiter)
        self._waiting[lane] += 1
        if lane == "backfill" and due < math.inf:
            self._push_due(due, waiter)
        self._dispatch()
        try:
            return await future
        except BaseException:
            if waiter.queued:
                waiter.leave(self._waiting)
                future.cancel()
                self._dispatch()
            elif future.result():
                self.release()  # granted as the waiter was being cancelled
            raise

    def _push_due(self, due: float, waiter: _Waiter) -> None:
        dues = self._dues
        # A granted, expired or cancelled waiter's entry stays until its due time reaches the
        # top (up to a cadence period: half an hour on the shipped plan), and back-fill at
        # fleet scale queues tens of waiters a second: drop those entries once they are most
        # of the heap, or it holds tens of thousands of dead waiters and their futures.
        if len(dues) >= 2 * self._waiting["backfill"] + _DUES_SLACK:
            dues[:] = [entry for entry in dues if entry[2].queued]
            heapq.heapify(dues)
        heapq.heappush(dues, (due, next(self._sequence), waiter))

    def expire(self, now: float) -> int:
        """Withdraw the back-fill waiters whose ``due`` (wall clock) is at or before ``now``;
        returns how many."""
        withdrawn = 0
        dues = self._dues
        while dues and dues[0][0] <= now:
            _, _, waiter = heapq.heappop(dues)
            if waiter.queued and not waiter.future.cancelled():
                waiter.leave(self._waiting)
                waiter.future.set_result(False)
                withdrawn += 1
        self.expired += withdrawn
        if withdrawn:
            self._dispatch()
        return withdrawn

    def hold_backfill(self, held: bool) -> int:
        """While ``held``, grant no back-fill: withdraw the back-fill waiters now (their
        :meth:`acquire` returns ``False``) and refuse new ones the same way. Returns how many
        were withdrawn."""
        self.backfill_held = held
        if not held:
            return 0
        withdrawn = 0
        queue = self._queues["backfill"]
        while queue:
            waiter = queue.popleft()
            if waiter.queued and not waiter.future.cancelled():
                waiter.leave(self._waiting)
                waiter.future.set_result(False)
                withdrawn += 1
        self.held += withdrawn
        return withdrawn

    def release(self) -> None:
        self.in_flight -= 1
        self.totals.in_flight -= 1
        self._dispatch()

    # ----------------------------------------------------------------- granting

    def _dispatch(self) -> None:
        """Grant queued waiters, live first, while the caps allow; when only a token is
        missing, come back when the next one is due."""
        while True:
            waiter = self._head("live") or self._head("backfill")
            if waiter is None:
                return
            if not self._can_grant():
                if self.in_flight < self.max_in_flight:
                    self._wake_for_token()
                return
            self._queues[waiter.lane].popleft()
            waiter.leave(self._waiting)
            self._grant(waiter.lane)
            waiter.future.set_result(True)

    def _head(self, lane: Lane) -> _Waiter | None:
        queue = self._queues[lane]
        # Skipped: expired waiters, and cancelled ones (acquire() then does the counting).
        while queue and (not queue[0].queued or queue[0].future.cancelled()):
            queue.popleft()
        return queue[0] if queue else None

    def _wake_for_token(self) -> None:
        if self._timer is not None:
            return
        # uvloop counts timers in whole milliseconds from a clock cut to the millisecond: it
        # fires a delay under half of one at once and a longer one up to a millisecond early,
        # and each early wake re-armed the timer for what was still missing, a spin of dozens
        # of wakes per token. Rounded up to whole milliseconds, plus one, the timer fires
        # after the token is whole (tokens keep accruing, so the rate is unchanged; a grant
        # waits at most two milliseconds longer).
        missing_ms = max(0.0, (1.0 - self._tokens) / self.rate) * 1000
        delay = (math.ceil(missing_ms) + _TIMER_SLACK_MS) / 1000

        def wake() -> None:
            self.token_wakes += 1
            self._timer = None
            self._dispatch()

        self._timer = asyncio.get_running_loop().call_later(delay, wake)

    def _grant(self, lane: Lane) -> None:
        self._tokens -= 1.0
        self.in_flight += 1
        self.connects += 1
        self.granted[lane] += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.recent_connects.append(time.monotonic())
        totals = self.totals
        totals.in_flight += 1
        totals.connects += 1
        totals.granted[lane] += 1

    # ----------------------------------------------------------------- introspection

    def max_connects_in_window(self, window: float) -> int:
        """Most connects seen in any ``window`` seconds among the recent connect times."""
        times = list(self.recent_connects)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best
