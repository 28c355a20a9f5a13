"""The fleet's launch queue: at most :attr:`LaunchQueue.bound` meter tasks run at once.

A meter task (a poll, a probe or a run of queued commands) costs far more memory than an
idle meter session: the anyio task, the poll's, session's and conversation's frames, its
watchdog, cancel scopes, locks and the limiter's future (a tracemalloc profile at 2,000
meters: about 18 KB per meter with nearly all of them waiting as tasks, 5.8 KB with none).
A task waiting for a connection slot does no work, so when the fleet asks for more than the
caps allow (a first start with every meter due at once, or a plan beyond
``max_new_connections_per_second``) the meters that are due but cannot run yet wait here, as
plain references to their sessions, instead of as tasks waiting in the
:class:`~flowsd.meters.limits.ConnectionLimiter`.

The bound is derived from the caps (:func:`bound_for`), not a setting of its own: it is what
keeps the caps busy, so it follows them when a reload changes them.

Two first-in first-out queues:

* ``urgent``: meters with queued commands or poll requests (``flowsd poll``): someone waits
  for them, so they go before every scheduled poll. They stay under the bound (a bulk
  command to the whole fleet must not become one task per meter): they wait for the next
  task to end, never behind the scheduled backlog;
* ``scheduled``: routine polls and probes of offline meters, in the order they fell due.

The queue does not decide whether a session should run: :meth:`FleetScheduler.startable
<flowsd.meters.scheduler.FleetScheduler.startable>` takes sessions off with
:meth:`LaunchQueue.pop`, skips those that left the fleet, were held back or were started by
their address's turn since they were queued, and the supervisor decides afresh what each
runs (the meter may have gone offline meanwhile). A queued session carries
``launch_queued`` so that it is queued once (:meth:`put` again only moves it to ``urgent``)
and so that :meth:`discard` can forget it at once; its stale deque entries are skipped on the
way out.

While any meter waits here, the supervisor has the limiter withdraw back-fill waits (and
refuse new ones, :meth:`ConnectionLimiter.hold_backfill
<flowsd.meters.limits.ConnectionLimiter.hold_backfill>`): a task that would spend its place
waiting for back-fill capacity ends its poll instead, so live work of queued meters starts.
"""

from __future__ import annotations

import collections
import math

from flowsd.config import MetersConfig
from flowsd.meters.session import MeterSession

# Tasks started beyond those needed to keep the caps busy, at least this many and at least a
# quarter of the connection cap: a slot or token that comes free finds a task already waiting
# for it in the limiter rather than staying unused until a task ends and another starts.
MIN_MARGIN = 16


def bound_for(settings: MetersConfig) -> int:
    """How many meter tasks may run at once under ``settings``' caps.

    A running task is in one of three states: it holds a connection slot (at most
    ``max_connections_in_flight``); it sleeps out ``min_gap_seconds`` after an exchange
    before its next connect (every connect starts such a gap and connects come at most at
    ``max_new_connections_per_second``, so by Little's law at most ``rate x min_gap`` tasks
    are there: 200 with the shipped 100/s and 2 s); or it waits for a slot or a token (the
    margin). Fewer tasks than the first two would leave slots or tokens unused while meters
    wait here; more only cost memory. Retry back-offs and sink waits hold neither and are
    covered by the margin (they are rare, or the database is the limit anyway).
    """
    slots = settings.max_connections_in_flight
    gaps = math.ceil(settings.max_new_connections_per_second * settings.min_gap_seconds)
    return slots + gaps + max(MIN_MARGIN, slots // 4)


class LaunchQueue:
    """Sessions due to start while ``bound`` meter tasks run, urgent ones first."""

    __slots__ = ("_length", "bound", "scheduled", "urgent")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.urgent: collections.deque[MeterSession] = collections.deque()
        self.scheduled: collections.deque[MeterSession] = collections.deque()
        self._length = 0

    def __len__(self) -> int:
        """Sessions waiting (each counted once)."""
        return self._length

    def put(self, session: MeterSession, *, urgent: bool) -> None:
        """Queue ``session`` (again: only to move it to the urgent queue)."""
        if session.launch_queued:
            if urgent:
                self.urgent.append(session)
            return
        session.launch_queued = True
        self._length += 1
        (self.urgent if urgent else self.scheduled).append(session)

    def discard(self, session: MeterSession) -> None:
        """Forget ``session`` (it left the fleet); its entries are skipped later."""
        if session.launch_queued:
            session.launch_queued = False
            self._length -= 1

    def pop(self) -> MeterSession | None:
        """The next session to evaluate for a start, urgent first; None when empty."""
        for queue in (self.urgent, self.scheduled):
            while queue:
                session = queue.popleft()
                if session.launch_queued:
                    session.launch_queued = False
                    self._length -= 1
                    return session
        return None

    def clear(self) -> None:
        while self.pop() is not None:
            pass
