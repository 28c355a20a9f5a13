"""SimulatedFleet: N simulated meters listening on consecutive loopback addresses.

Usable in-process (``async with SimulatedFleet(meters=50, seed=1, ...) as fleet``) by tests
and by ``flowsd simulate``. Each meter has its own listening socket on its own address, as
real meters have their own IPs; their state is computed on demand from (seed, index,
simulated time) plus the overrides writes leave behind.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import overload

from flowsd.emop import Frame, decode_frame
from flowsd.sim.clock import SimClock, to_emop
from flowsd.sim.events import Event
from flowsd.sim.faults import Fault, FaultKind, FaultPlan
from flowsd.sim.identity import Hardware, ip_for
from flowsd.sim.limits import check_capacity
from flowsd.sim.model import MeterModel
from flowsd.sim.overrides import Credit
from flowsd.sim.rand import Stream, uniform
from flowsd.sim.server import MeterConnection, listening_socket
from flowsd.sim.state import FleetState
from flowsd.sim.truth import (
    IntervalTruth,
    MeterTruth,
    credit_truths,
    event_truths,
    interval_truths,
    meter_truth,
)

DEFAULT_BASE_ADDRESS = "127.77.0.1"
DEFAULT_PORT = 8080
_OFFLINE_CHECK_SECONDS = 0.5
_START_BATCH = 500


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What a client needs to know to reach a simulated meter."""

    index: int
    serial: str
    ip_address: str
    port: int
    hardware: str
    meter_address: int
    twin_element: bool
    three_phase: bool
    solar: bool

    def manifest_entry(self) -> dict[str, object]:
        return {
            "index": self.index,
            "serial": self.serial,
            "ip_address": self.ip_address,
            "port": self.port,
            "hardware": self.hardware,
            "meter_address": f"{self.meter_address:06x}",
            "twin_element": self.twin_element,
            "three_phase": self.three_phase,
            "solar": self.solar,
        }


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answered request, kept when the fleet records a journal."""

    index: int
    at: float
    request: bytes
    nak: int
    response: bytes


@dataclass(slots=True)
class FleetStats:
    """Counters of what the fleet did."""

    connections: int = 0
    answered: int = 0
    # Connections accepted while another one to the same meter was still open (a real meter
    # takes one at a time): what two daemons polling one meter would cause.
    overlapping: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)

    def count(self, kind: FaultKind) -> None:
        self.faults[kind.value] += 1


class MeterList(Sequence[MeterInfo]):
    """The fleet's meters, built on access (no object per meter is kept)."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self._fleet = fleet

    def __len__(self) -> int:
        return self._fleet.state.size

    @overload
    def __getitem__(self, index: int) -> MeterInfo: ...

    @overload
    def __getitem__(self, index: slice) -> list[MeterInfo]: ...

    def __getitem__(self, index: int | slice) -> MeterInfo | list[MeterInfo]:
        if isinstance(index, slice):
            return [self._fleet.info(i) for i in range(*index.indices(len(self)))]
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(f"no meter {index} in a fleet of {size}")
        return self._fleet.info(position)

    def __iter__(self) -> Iterator[MeterInfo]:
        for i in range(len(self)):
            yield self._fleet.info(i)


class SimulatedFleet:
    """A fleet of simulated Emlite meters (see the module docstring)."""

    def __init__(
        self,
        meters: int,
        *,
        seed: int = 0,
        base_address: str = DEFAULT_BASE_ADDRESS,
        port: int = DEFAULT_PORT,
        faults: str | FaultPlan | None = None,
        history_days: int = 30,
        clock: SimClock | None = None,
        hardware: Sequence[str | Hardware] | None = None,
        journal: bool = False,
        backlog: int = 64,
    ) -> None:
        if meters < 0:
            raise ValueError("meters must be >= 0")
        if history_days < 1:
            raise ValueError("history_days must be >= 1")
        kinds = [Hardware(h) for h in hardware] if hardware else None
        self.seed = seed
        self.state = FleetState(
            seed=seed,
            size=meters,
            base_address=base_address,
            history_days=history_days,
            hardware=kinds,
        )
        self.port = port
        self.plan = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(faults)
        self.clock = clock if clock is not None else SimClock()
        self.backlog = backlog
        self.stats = FleetStats()
        self.journal: list[Exchange] | None = [] if journal else None
        self.meters = MeterList(self)
        self._servers: list[asyncio.base_events.Server | None] = []
        self._ports = array.array("H")
        self._connections = array.array("I", bytes(4 * meters))
        self._last_end = array.array("d", bytes(8 * meters))
        self._open = array.array("I", bytes(4 * meters))
        self._offline: set[int] = set()
        self._watcher: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every meter's listening socket (raises OSError if an address is taken)."""
        check_capacity(self.state.size)
        try:
            for first in range(0, self.state.size, _START_BATCH):
                for index in range(first, min(first + _START_BATCH, self.state.size)):
                    server = await self._listen(index, self.port)
                    self._servers.append(server)
                    sock = server.sockets[0]
                    self._ports.append(sock.getsockname()[1])
                await asyncio.sleep(0)
        except BaseException:
            await self.stop()
            raise
        self._ensure_watcher()

    def set_faults(self, faults: str | FaultPlan | None) -> None:
        """Replace the fault plan of a running fleet (e.g. take a meter offline mid-test)."""
        self.plan = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(faults)
        self._ensure_watcher()

    def _ensure_watcher(self) -> None:
        if self._watcher is None and self._servers and self.plan.has(FaultKind.OFFLINE):
            self._watcher = asyncio.get_running_loop().create_task(self._watch_offline())

    async def _listen(self, index: int, port: int) -> asyncio.base_events.Server:
        sock = listening_socket(ip_for(self.state.base_address, index), port, self.backlog)
        loop = asyncio.get_running_loop()
        factory = functools.partial(MeterConnection, self, index)
        return await loop.create_server(factory, sock=sock)

    async def stop(self) -> None:
        """Close every listener (connections in flight are left to finish or time out)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        servers, self._servers = self._servers, []
        for server in servers:
            if server is not None:
                server.close()
        self._ports = array.array("H")

    async def __aenter__(self) -> SimulatedFleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- meters -------------------------------------------------------------------------------

    def info(self, index: int) -> MeterInfo:
        identity = self.state.identity(index)
        port = self._ports[index] if index < len(self._ports) else self.port
        return MeterInfo(
            index=index,
            serial=identity.serial,
            ip_address=identity.ip_address,
            port=port,
            hardware=identity.hardware.value,
            meter_address=identity.meter_address,
            twin_element=identity.hardware.twin_element,
            three_phase=identity.hardware.three_phase,
            solar=identity.solar,
        )

    def manifest(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "meters": [m.manifest_entry() for m in self.meters],
        }

    def model(self, meter: int | str) -> MeterModel:
        """The state model of a meter (by index or serial), for direct inspection."""
        return self.state.model(self.state.index_of(meter))

    # --- ground truth ---------------------------------------------------------------------

    def _time(self, at: datetime | float | None) -> float:
        return self.clock.now() if at is None else to_emop(at)

    def truth(self, meter: int | str, at: datetime | float | None = None) -> MeterTruth:
        """What the meter reports at ``at`` (default: the simulated now)."""
        return meter_truth(self.model(meter), self._time(at))

    def intervals(
        self, meter: int | str, start: datetime | float, end: datetime | float
    ) -> list[IntervalTruth]:
        """The half hours ending in (start, end] as the meter's profile logs report them."""
        return interval_truths(self.model(meter), to_emop(start), to_emop(end))

    def events(
        self, meter: int | str, at: datetime | float | None = None, limit: int = 100
    ) -> list[Event]:
        """The meter's event log at ``at``, newest first."""
        return event_truths(self.model(meter), self._time(at), limit)

    def credits(
        self, meter: int | str, start: datetime | float, end: datetime | float
    ) -> list[Credit]:
        """Top-ups and applied tokens in (start, end]."""
        return credit_truths(self.model(meter), to_emop(start), to_emop(end))

    # --- connection bookkeeping (called by MeterConnection) ---------------------------------

    def admit(self, index: int) -> FaultKind | None:
        """Why a new connection must be refused, or None to accept it."""
        self._connections[index] += 1
        if self._open[index]:
            self.stats.overlapping += 1
        self._open[index] += 1
        plan = self.plan
        if not plan:
            return None
        serial = self.state.serial(index)
        if plan.has(FaultKind.OFFLINE) and plan.offline(self.seed, index, serial, self.clock.now()):
            self._close_listener(index)
            return FaultKind.OFFLINE
        rule = plan.rule_for(FaultKind.TOOSOON, index, serial)
        if (
            rule is not None
            and time.monotonic() - self._last_end[index] < rule.parameter
            and uniform(self.seed, index, Stream.FAULT, self._connections[index], 99)
            < rule.probability
        ):
            return FaultKind.TOOSOON
        return None

    def draw_fault(self, index: int) -> Fault | None:
        plan = self.plan
        if not plan:
            return None
        return plan.draw(self.seed, index, self.state.serial(index), self._connections[index])

    def exchange_ended(self, index: int) -> None:
        self._last_end[index] = time.monotonic()

    def record(self, index: int, request: Frame, wire: bytes) -> None:
        """Journal one answered request (``wire``: the encoded answer), if journaling."""
        if self.journal is not None:
            response = decode_frame(wire)
            self.journal.append(
                Exchange(index, self.clock.now(), request.data, response.nak_code, response.data)
            )

    def answers(self, meter: int | str, object_id: int | None = None) -> list[Exchange]:
        """Journal entries of one meter (optionally one default-format object), oldest first.

        Needs ``journal=True``; ``Exchange.response`` is the data field the meter sent.
        """
        if self.journal is None:
            raise RuntimeError("the fleet keeps no journal: create it with journal=True")
        index = self.state.index_of(meter)
        return [
            e
            for e in self.journal
            if e.index == index
            and (
                object_id is None
                or (e.request[:1] == b"\x01" and int.from_bytes(e.request[1:4], "big") == object_id)
            )
        ]

    def connection_closed(self, index: int) -> None:
        """A connection admitted by :meth:`admit` is gone (either side closed it)."""
        self._open[index] -= 1

    def open_connections(self, meter: int | str) -> int:
        """Connections to the meter open now."""
        return self._open[self.state.index_of(meter)]

    def connections_to(self, meter: int | str) -> int:
        return self._connections[self.state.index_of(meter)]

    # --- offline windows --------------------------------------------------------------------

    def _close_listener(self, index: int) -> None:
        if index in self._offline or index >= len(self._servers):
            return
        server = self._servers[index]
        if server is not None:
            server.close()
        self._servers[index] = None
        self._offline.add(index)

    async def _reopen(self, index: int) -> None:
        try:
            self._servers[index] = await self._listen(index, self._ports[index])
            self._offline.discard(index)
        except OSError:
            pass  # address still busy: try again on the next check

    async def _watch_offline(self) -> None:
        seed = self.seed
        plan: FaultPlan | None = None
        hour = -1
        windows: list[tuple[float, float, int]] = []
        while True:
            now = self.clock.now()
            if self.plan is not plan or int(now // 3600) != hour:
                plan, hour = self.plan, int(now // 3600)
                windows = []
                for index in range(self.state.size):
                    serial = self.state.serial(index)
                    window = plan.offline_window(seed, index, serial, now)
                    if window is not None:
                        windows.append((window[0], window[1], index))
            due = {index for start, end, index in windows if start <= now < end}
            for index in due - self._offline:
                self._close_listener(index)
            for index in self._offline - due:
                await self._reopen(index)
            await asyncio.sleep(_OFFLINE_CHECK_SECONDS)
