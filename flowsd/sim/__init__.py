"""A simulated fleet of Emlite meters speaking EMOP over real loopback TCP sockets.

In-process use (tests, the demo)::

    clock = SimClock(datetime(2026, 3, 10, tzinfo=UTC), speed=0)   # frozen; or speed=60
    async with SimulatedFleet(50, seed=1, base_address="127.77.5.1", port=0,
                              faults="badcrc@3=1,slow=0.05:8s", clock=clock) as fleet:
        meter = fleet.meters[0]            # MeterInfo: serial, ip_address, port, hardware, ...
        ...                                # talk EMOP to (meter.ip_address, meter.port)
        clock.advance(hours=3)
        fleet.truth(meter.serial)          # MeterTruth: registers, balance, tariffs, clock ...
        fleet.intervals(0, start, end)     # IntervalTruth per half hour (what profile logs say)
        fleet.events(0)                    # the event log, newest first

Command line: ``flowsd simulate --meters N ...`` (see :mod:`flowsd.commands.simulate`).

State is a pure function of (seed, meter index, simulated time) plus the overrides left by
writes; nothing is ticked, so idle meters cost only their listening socket.
"""

from flowsd.sim.clock import SimClock, from_emop, to_emop
from flowsd.sim.faults import Fault, FaultKind, FaultPlan, FaultRule, FaultSpecError
from flowsd.sim.fleet import Exchange, FleetStats, MeterInfo, SimulatedFleet
from flowsd.sim.identity import Hardware
from flowsd.sim.model import ElementRegisters, MeterModel, RecordStatus
from flowsd.sim.tariffs import Tariff
from flowsd.sim.tokens import make_token
from flowsd.sim.truth import IntervalTruth, MeterTruth

__all__ = [
    "ElementRegisters",
    "Exchange",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "FaultSpecError",
    "FleetStats",
    "Hardware",
    "IntervalTruth",
    "MeterInfo",
    "MeterModel",
    "MeterTruth",
    "RecordStatus",
    "SimClock",
    "SimulatedFleet",
    "Tariff",
    "from_emop",
    "make_token",
    "to_emop",
]
