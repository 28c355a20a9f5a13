"""Tariffs: a quarterly base schedule per fleet, replaced by whatever the operator writes.

Without writes a meter's active tariff is the one of the calendar quarter containing the
time, and its future tariff is next quarter's, activating at the quarter start. The first
write to a future-tariff object ends the base schedule at that moment: from then on the
meter's future register bank holds what was written, and it becomes active at its
activation time, as on a real meter. Money is in 1e-5 GBP.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flowsd.sim.clock import from_emop, to_emop
from flowsd.sim.rand import Stream, integer

NO_THRESHOLDS = (0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Tariff:
    """One tariff as the meter holds it."""

    standing_charge: int
    unit_rate_a: int
    unit_rate_b: int
    emergency_credit: int = 1_500_000
    ecredit_availability: int = 1_000_000
    debt_recovery_rate: int = 30_000
    threshold_mask: int = 0
    threshold_values: tuple[int, ...] = NO_THRESHOLDS
    tou_flag: int = 0
    gas: int = 0
    # Other block / element-B TOU prices, by object id offset in the price bank.
    other_prices: tuple[tuple[int, int], ...] = ()

    def price(self, slot: int) -> int:
        return dict(self.other_prices).get(slot, 0)


@dataclass(slots=True)
class PendingTariff:
    """A future tariff written by the operator (possibly still being written)."""

    tariff: Tariff
    activation: int
    # Simulated time from which it may take effect; None until an activation time is written
    # (an inherited activation already in the past must not activate a half-written bank).
    armed_from: float | None

    @property
    def activates_at(self) -> float | None:
        if self.armed_from is None:
            return None
        return max(float(self.activation), self.armed_from)


@dataclass(slots=True)
class TariffWrites:
    """A meter's tariff overrides: when the base schedule was cut, and what was written."""

    cut: float | None = None
    written: list[PendingTariff] = field(default_factory=list)


def quarter_of(t: float) -> int:
    return _quarter_of_day(int(t // 86_400))


@functools.lru_cache(maxsize=4_096)
def _quarter_of_day(day: int) -> int:
    moment = from_emop(day * 86_400)
    return (moment.year - 2000) * 4 + (moment.month - 1) // 3


@functools.lru_cache(maxsize=1_024)
def quarter_start(quarter: int) -> int:
    year, part = divmod(quarter, 4)
    return int(to_emop(datetime(2000 + year, 3 * part + 1, 1, tzinfo=UTC)))


@functools.lru_cache(maxsize=4_096)
def base_tariff(seed: int, twin: bool, quarter: int) -> Tariff:
    """The fleet's tariff for a calendar quarter (element B cheaper on heat registers)."""
    keys = (seed, Stream.TARIFF, quarter)
    unit_a = integer(22_000, 32_000, *keys, 1)
    return Tariff(
        standing_charge=integer(40_000, 65_000, *keys, 2),
        unit_rate_a=unit_a,
        unit_rate_b=unit_a * 4 // 5 if twin else unit_a,
    )


class TariffView:
    """Answers 'which tariff at time t' for one meter, base schedule plus writes."""

    def __init__(self, seed: int, twin: bool, writes: TariffWrites | None) -> None:
        self._seed = seed
        self._twin = twin
        self._writes = writes

    @property
    def base_only(self) -> bool:
        """True while no tariff was written (the schedule is a pure function of time)."""
        return self._writes is None or self._writes.cut is None

    def active_at(self, t: float) -> tuple[float, Tariff]:
        """(time it took effect, tariff) in force at ``t``."""
        writes = self._writes
        cut = writes.cut if writes is not None else None
        base_time = t if cut is None else min(t, cut)
        quarter = quarter_of(base_time)
        since: float = quarter_start(quarter)
        active = base_tariff(self._seed, self._twin, quarter)
        if writes is not None:
            for pending in writes.written:
                at = pending.activates_at
                if at is not None and since <= at <= t:
                    since, active = at, pending.tariff
        return since, active

    def future_at(self, t: float) -> tuple[int, Tariff]:
        """(activation time as the meter reports it, future tariff) at ``t``."""
        writes = self._writes
        if writes is None or writes.cut is None or t < writes.cut or not writes.written:
            quarter = quarter_of(t) + 1
            return quarter_start(quarter), base_tariff(self._seed, self._twin, quarter)
        last = writes.written[-1]
        return last.activation, last.tariff

    def change_points(self, start: float, end: float) -> list[float]:
        """Times in (start, end) where the active tariff may change."""
        points: list[float] = []
        writes = self._writes
        limit = end if writes is None or writes.cut is None else min(end, writes.cut)
        quarter = quarter_of(start) + 1
        while quarter_start(quarter) < limit:
            points.append(float(quarter_start(quarter)))
            quarter += 1
        if writes is not None:
            for pending in writes.written:
                at = pending.activates_at
                if at is not None and start < at < end:
                    points.append(at)
        return sorted(set(points))


def write_future_field(
    view: TariffView, writes: TariffWrites, now: float, change: dict[str, object]
) -> None:
    """Apply one write to the future bank at simulated time ``now``.

    ``change`` holds Tariff field names, or ``activation`` for the activation time.
    """
    if writes.cut is None:
        writes.cut = now
    last = writes.written[-1] if writes.written else None
    if last is None or (last.activates_at is not None and last.activates_at <= now):
        activation, tariff = view.future_at(now)
        last = PendingTariff(tariff, activation, now if activation > now else None)
        writes.written.append(last)
    if "activation" in change:
        last.activation = int(change.pop("activation"))  # type: ignore[call-overload]
        last.armed_from = now
    if change:
        last.tariff = dataclasses.replace(last.tariff, **change)  # type: ignore[arg-type]
