"""Which meter task starts next: the fleet's schedule heap, launch queue and address turns.

:class:`FleetScheduler` keeps one heap of ``(next wake, generation, meter id)`` for the whole
fleet: :meth:`~FleetScheduler.push` files a session under its next wake (a session pushed
again gets a new generation, so its older entries are skipped). At each tick
:meth:`~FleetScheduler.wake_due` moves the sessions whose time came into the
:class:`~flowsd.meters.launcher.LaunchQueue`, and :meth:`~FleetScheduler.startable` takes
them off while fewer than the bound run, skipping the meters that left the fleet, are already
running or are held back (:meth:`~FleetScheduler.hold_back`: only their commands and poll
requests still run). Two meter ids sharing one address take turns: the second waits for the
first's task to end (:meth:`~FleetScheduler.next_waiter`).

What a started session runs (a poll, a probe, its commands) is for
:class:`~flowsd.meters.supervisor.FleetSupervisor` to decide; it reports each start and end
here (:meth:`~FleetScheduler.started`, :meth:`~FleetScheduler.ended`), which keeps
:attr:`~FleetScheduler.busy` and the :attr:`~FleetScheduler.idle` event.
"""

from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from uuid import UUID

import anyio

from flowsd.config import MetersConfig
from flowsd.meters.launcher import LaunchQueue, bound_for
from flowsd.meters.session import MeterSession

Address = tuple[str, int]


class FleetScheduler:
    """The schedule heap, the launch queue, the held-back meters and the running count."""

    def __init__(self, sessions: Mapping[UUID, MeterSession], settings: MetersConfig) -> None:
        self.sessions = sessions
        self.heap: list[tuple[float, int, UUID]] = []
        self.launches = LaunchQueue(bound_for(settings))
        self.port = settings.port
        self.held_back: set[UUID] = set()
        self.busy = 0  # meter tasks started and not ended
        self.idle = anyio.Event()  # set while none runs
        self.idle.set()
        self._busy_addresses: set[Address] = set()
        self._address_waiters: dict[Address, collections.deque[MeterSession]] = {}

    def reconfigure(self, settings: MetersConfig) -> None:
        self.launches.bound = bound_for(settings)
        self.port = settings.port

    def address(self, session: MeterSession) -> Address:
        return (session.target.ip_address, session.target.port or self.port)

    def push(self, session: MeterSession) -> None:
        """File the session under its next wake (replacing what was filed before)."""
        session.heap_generation += 1
        wake = session.next_wake()
        if wake < math.inf:  # -inf: a command or poll request waits
            heapq.heappush(self.heap, (wake, session.heap_generation, session.target.meter_id))

    def wake_due(self, now: float) -> None:
        """Queue for a start the sessions whose wake has come."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, generation, meter_id = heapq.heappop(heap)
            session = self.sessions.get(meter_id)
            if session is None or generation != session.heap_generation or session.running:
                continue
            self.launches.put(session, urgent=bool(session.commands or session.poll_requests))

    def startable(self) -> Iterator[MeterSession]:
        """The queued sessions to start, one at a time while fewer than the bound run (each
        is to be started, or pushed, before the next is asked for)."""
        launches = self.launches
        while self.busy < launches.bound:
            session = launches.pop()
            if session is None:
                return
            meter_id = session.target.meter_id
            if self.sessions.get(meter_id) is not session or session.running:
                continue
            if meter_id in self.held_back and not session.commands and not session.poll_requests:
                continue  # pushed again by hold_back(release=True)
            address = self.address(session)
            if address in self._busy_addresses:
                # Another meter id with the same address is talking to it: one conversation
                # per device, whatever the registry says. Queue up, first come first served.
                self._address_waiters.setdefault(address, collections.deque()).append(session)
                continue
            yield session

    def next_waiter(self, address: Address) -> MeterSession | None:
        """The session waiting for its turn at ``address`` (just freed), if any."""
        waiters = self._address_waiters.get(address)
        found = None
        while waiters:
            session = waiters.popleft()
            if self.sessions.get(session.target.meter_id) is session and not session.running:
                found = session
                break
        if not waiters:
            self._address_waiters.pop(address, None)
        return found

    def started(self, session: MeterSession) -> None:
        session.running = True
        self._busy_addresses.add(self.address(session))
        self.busy += 1
        self.idle = anyio.Event() if self.busy == 1 else self.idle

    def ended(self, session: MeterSession) -> Address:
        """The session's task ended; returns its address, free now."""
        session.running = False
        address = self.address(session)
        self._busy_addresses.discard(address)
        self.busy -= 1
        if self.busy == 0:
            self.idle.set()
        return address

    def left(self, session: MeterSession) -> None:
        """The session left the fleet."""
        self.launches.discard(session)
        self.held_back.discard(session.target.meter_id)

    def hold_back(self, meter_ids: Iterable[UUID], *, release: bool = False) -> None:
        """Start no more routine polls of these meters (``release``: start them again)."""
        for meter_id in meter_ids:
            if release:
                if meter_id in self.held_back:
                    self.held_back.discard(meter_id)
                    session = self.sessions.get(meter_id)
                    if session is not None and not session.running:
                        self.push(session)
            elif meter_id in self.sessions:
                self.held_back.add(meter_id)
