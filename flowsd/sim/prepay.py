"""The prepay balance as a function of time: credits minus what the tariffs charged.

``balance(t) = opening + top-ups + tokens − energy × unit rates − standing charges
− debt recovered``, each integrated over the tariff periods since commissioning, in
1e-5 GBP. Standing charge and debt recovery are taken per half hour (1/48 of the daily
amount); customers top up weekly by a multiple of £5 roughly matching their spend.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from flowsd.sim.cache import BoundedCache
from flowsd.sim.consumption import SLOT_SECONDS, day_start_value, register_at
from flowsd.sim.identity import SECONDS_PER_DAY, ChannelId, MeterIdentity
from flowsd.sim.overrides import Credit, MeterOverrides
from flowsd.sim.rand import Stream, prefix, uniform_after
from flowsd.sim.tariffs import TariffView, base_tariff, quarter_of

WEEK_SECONDS = 7 * SECONDS_PER_DAY
_FIVE_POUNDS = 500_000
_TOPUP_CACHE: BoundedCache[tuple[int, int, str], tuple[int, int]] = BoundedCache(20_000)
# Charge sums up to a meter's last tariff change (only for meters without tariff writes).
_CHARGES_CACHE: BoundedCache[tuple[int, int, str, float], tuple[int, int, int]] = BoundedCache(
    20_000
)


@dataclass(frozen=True, slots=True)
class Charges:
    """What the meter debited between commissioning and a time (1e-5 GBP)."""

    energy: int
    standing: int
    debt_recovered: int


def _expected_weekly_spend(identity: MeterIdentity) -> float:
    a = identity.channel(ChannelId.IMPORT_A).mean_wh_per_day
    b = identity.channel(ChannelId.IMPORT_B).mean_wh_per_day
    return 7 * ((a + b) * 26 + 52_000)  # ~26p/kWh, ~52p/day standing


def _week_spend(identity: MeterIdentity, week: int) -> float:
    """Roughly what week ``week`` cost under the base tariff (what a customer tops up by)."""
    if week < 0:
        return _expected_weekly_spend(identity)
    first_day = identity.commission_day + 7 * week
    tariff = base_tariff(
        identity.seed, identity.hardware.twin_element, quarter_of(first_day * SECONDS_PER_DAY)
    )
    spend = 7.0 * tariff.standing_charge
    if identity.opening_debt:
        spend += 7.0 * tariff.debt_recovery_rate
    for channel_id, rate in (
        (ChannelId.IMPORT_A, tariff.unit_rate_a),
        (ChannelId.IMPORT_B, tariff.unit_rate_b),
    ):
        channel = identity.channel(channel_id)
        used = day_start_value(identity, channel, first_day + 7) - day_start_value(
            identity, channel, first_day
        )
        spend += used * rate / 1000
    return spend


def _topup_noise(identity: MeterIdentity, week: int) -> float:
    return (
        0.4
        * _expected_weekly_spend(identity)
        * uniform_after(prefix(identity.seed, identity.index, Stream.TOPUP), week, 1)
    )


def customer_topup(identity: MeterIdentity, week: int) -> Credit:
    """The customer's top-up in week ``week`` after commissioning: last week's spend, give or
    take (the noise telescopes over the weeks, so balances wander but do not drift off)."""
    wanted = (
        _week_spend(identity, week - 1)
        + _topup_noise(identity, week)
        - _topup_noise(identity, week - 1)
    )
    amount = max(1, min(100, round(wanted / _FIVE_POUNDS))) * _FIVE_POUNDS
    offset = int(
        uniform_after(prefix(identity.seed, identity.index, Stream.TOPUP), week, 2) * WEEK_SECONDS
    )
    return Credit(
        time=float(identity.commissioned_at + week * WEEK_SECONDS + offset), amount=amount
    )


def customer_topups_between(identity: MeterIdentity, start: float, end: float) -> list[Credit]:
    """Customer top-ups with start < time <= end."""
    first = max(0, int((start - identity.commissioned_at) // WEEK_SECONDS))
    last = int((end - identity.commissioned_at) // WEEK_SECONDS)
    found = []
    for week in range(first, last + 1):
        credit = customer_topup(identity, week)
        if start < credit.time <= end:
            found.append(credit)
    return found


def _topups_before_week(identity: MeterIdentity, week: int) -> int:
    """Sum of the customer's top-ups in weeks 0..week-1, extended from the last answer."""
    key = (identity.seed, identity.index, identity.hardware.value)
    done, total = _TOPUP_CACHE.get(key) or (0, 0)
    if done > week:
        done, total = 0, 0
    total += sum(customer_topup(identity, w).amount for w in range(done, week))
    _TOPUP_CACHE.put(key, (week, total))
    return total


def customer_topups_total(identity: MeterIdentity, t: float) -> int:
    """Sum of customer top-ups made up to ``t``."""
    if t < identity.commissioned_at:
        return 0
    week = int((t - identity.commissioned_at) // WEEK_SECONDS)
    total = _topups_before_week(identity, week)
    current = customer_topup(identity, week)
    return total + (current.amount if current.time <= t else 0)


def _charge_sums(
    identity: MeterIdentity, view: TariffView, bounds: list[float]
) -> tuple[int, int, int]:
    """Unscaled (energy × rate, standing × slots, debt rate × slots) over consecutive periods."""
    energy = standing = debt = 0
    for low, high in itertools.pairwise(bounds):
        _, tariff = view.active_at(low)
        used_a = register_at(identity, ChannelId.IMPORT_A, high) - register_at(
            identity, ChannelId.IMPORT_A, low
        )
        used_b = register_at(identity, ChannelId.IMPORT_B, high) - register_at(
            identity, ChannelId.IMPORT_B, low
        )
        energy += tariff.unit_rate_a * used_a + tariff.unit_rate_b * used_b
        slots = math.floor(high / SLOT_SECONDS) - math.floor(low / SLOT_SECONDS)
        standing += tariff.standing_charge * slots
        debt += tariff.debt_recovery_rate * slots
    return energy, standing, debt


def charges_until(identity: MeterIdentity, view: TariffView, t: float) -> Charges:
    """Energy, standing charge and debt recovery debited from commissioning to ``t``."""
    start = float(identity.commissioned_at)
    if t <= start:
        return Charges(0, 0, 0)
    points = [start, *view.change_points(start, t)]
    if view.base_only:
        key = (identity.seed, identity.index, identity.hardware.value, points[-1])
        settled = _CHARGES_CACHE.get_or_compute(key, lambda: _charge_sums(identity, view, points))
        tail = _charge_sums(identity, view, [points[-1], t])
        energy, standing, debt = (a + b for a, b in zip(settled, tail, strict=True))
    else:
        energy, standing, debt = _charge_sums(identity, view, [*points, t])
    return Charges(
        energy=energy // 1000,
        standing=standing // 48,
        debt_recovered=min(identity.opening_debt, debt // 48),
    )


def credits_until(identity: MeterIdentity, overrides: MeterOverrides | None, t: float) -> int:
    tokens = 0 if overrides is None else sum(c.amount for c in overrides.tokens if c.time <= t)
    return customer_topups_total(identity, t) + tokens


def balance_at(
    identity: MeterIdentity, overrides: MeterOverrides | None, view: TariffView, t: float
) -> int:
    """The prepay balance (1e-5 GBP, negative = emergency credit or debt) at ``t``."""
    charges = charges_until(identity, view, t)
    return (
        identity.opening_balance
        + credits_until(identity, overrides, t)
        - charges.energy
        - charges.standing
        - charges.debt_recovered
    )
