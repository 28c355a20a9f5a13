"""What writes and traffic changed on one meter: the only per-meter state kept in memory.

Most meters are never written to, so the fleet keeps these in a dict created on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowsd.sim.tariffs import TariffWrites


@dataclass(frozen=True, slots=True)
class Credit:
    """Money added to a meter's balance (a customer top-up or an applied token)."""

    time: float
    amount: int
    token: str | None = None


@dataclass(frozen=True, slots=True)
class ClockSet:
    """A clock write: at simulated ``set_at`` the meter's clock was set to ``value``."""

    set_at: float
    value: float


@dataclass(slots=True)
class MeterOverrides:
    """Per-meter mutable state: writes and applied tokens (connections are counted by the
    fleet, for every meter, in arrays)."""

    clock_set: ClockSet | None = None
    tokens: list[Credit] = field(default_factory=list)
    flags: dict[int, int] = field(default_factory=dict)
    settings: dict[int, bytes] = field(default_factory=dict)
    tariffs: TariffWrites = field(default_factory=TariffWrites)
    events: list[tuple[int, int, int]] = field(default_factory=list)  # (time, id, set)
    # The three-phase interval profile: half hours starting in [start, end) it holds no
    # record of (as after a memory fault), and the interval length it reports, if not 30.
    interval_holes: list[tuple[int, int]] = field(default_factory=list)
    interval_minutes: int | None = None
