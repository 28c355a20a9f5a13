"""Cumulative energy registers as closed-form functions of time.

A register's value at the start of day ``d`` is ``base + floor(C(d))`` where ``C`` sums a
mean daily energy, a seasonal sinusoid (integrated in closed form) and a bounded per-day
noise term that telescopes; so any day's start value costs O(1), not a walk from the
commissioning date. Within a day the day's energy is spread over the 48 half hours by a
load shape with per-slot noise, zeroed where a power outage covers the slot. Integer Wh
values at half-hour boundaries make interval energies sum exactly to register increases.
"""

from __future__ import annotations

import math

from flowsd.sim.cache import BoundedCache
from flowsd.sim.identity import SECONDS_PER_DAY, Channel, ChannelId, MeterIdentity, Shape
from flowsd.sim.rand import Stream, between, prefix, uniform_after

SLOT_SECONDS = 1_800
SLOTS_PER_DAY = 48
_YEAR_DAYS = 365.25
_OUTAGE_PROBABILITY_PER_DAY = 0.015


def outage_on(seed: int, index: int, commission_day: int, day: int) -> tuple[int, int] | None:
    """The power outage of ``day`` as (start, end) EMOP seconds, if that day has one."""
    if day < commission_day or uniform_after(prefix(seed, index, Stream.OUTAGE), day) >= (
        _OUTAGE_PROBABILITY_PER_DAY
    ):
        return None
    start = day * SECONDS_PER_DAY + int(
        between(0, SECONDS_PER_DAY - 600, seed, index, Stream.OUTAGE, day, 1)
    )
    length = int(between(300, 7_200, seed, index, Stream.OUTAGE, day, 2))
    return start, min(start + length, (day + 1) * SECONDS_PER_DAY - 1)


def outage_overlap(outage: tuple[int, int] | None, start: int, end: int) -> int:
    """Seconds of [start, end) covered by ``outage``."""
    if outage is None:
        return 0
    return max(0, min(end, outage[1]) - max(start, outage[0]))


def _seasonal_integral(channel: Channel, day: float) -> float:
    period = _YEAR_DAYS
    return (
        period / (2 * math.pi) * math.sin(2 * math.pi * (day - channel.peak_day_of_year) / period)
    )


def _day_noise(seed: int, index: int, channel: Channel, day: int) -> float:
    return channel.day_noise * (
        2.0 * uniform_after(prefix(seed, index, Stream.DAY_NOISE, channel.id), day) - 1
    )


def day_start_value(identity: MeterIdentity, channel: Channel, day: int) -> int:
    """The register (Wh) at 00:00 UTC of ``day``."""
    if channel.shape is Shape.NONE or day <= identity.commission_day:
        return channel.base_wh
    first = identity.commission_day
    seed, index = identity.seed, identity.index
    relative = (
        (day - first)
        + channel.seasonal_amplitude
        * (_seasonal_integral(channel, day) - _seasonal_integral(channel, first))
        + _day_noise(seed, index, channel, day)
        - _day_noise(seed, index, channel, first)
    )
    return channel.base_wh + math.floor(channel.mean_wh_per_day * relative)


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


def _shape_weight(channel: Channel, day: int, slot: int) -> float:
    hour = (slot + 0.5) / 2
    shape = channel.shape
    if shape is Shape.POWER:
        return (
            0.35 + _bump(hour, 7.5, 1.5) + 0.3 * _bump(hour, 13, 3) + 1.8 * _bump(hour, 18.5, 2.5)
        )
    if shape is Shape.HEAT:
        return (2.0 if hour < 7 else 0.5) + 0.8 * _bump(hour, 18, 2)
    if shape is Shape.SOLAR:
        season = math.cos(2 * math.pi * (day - 172) / _YEAR_DAYS)
        half_daylight = 5.0 + 2.5 * season
        x = (hour - 13.0) / half_daylight
        return math.cos(math.pi * x / 2) if abs(x) < 1 else 0.0
    weekday = (day + 6) % 7 < 5  # EMOP day 0 (2000-01-01) was a Saturday
    working = 8 <= hour < 18
    return 0.5 + (1.6 if working and weekday else 0.2 if working else 0.0)


_BOUNDARY_CACHE: BoundedCache[tuple[int, int, str, int, int], tuple[int, ...]] = BoundedCache(4_096)


def _slot_boundaries(identity: MeterIdentity, channel: Channel, day: int) -> tuple[int, ...]:
    """The register at each of the day's 49 half-hour boundaries (00:00 … 24:00), cached."""
    key = (identity.seed, identity.index, identity.hardware.value, channel.id.value, day)
    return _BOUNDARY_CACHE.get_or_compute(
        key, lambda: _compute_slot_boundaries(identity, channel, day)
    )


def _compute_slot_boundaries(
    identity: MeterIdentity, channel: Channel, day: int
) -> tuple[int, ...]:
    start = day_start_value(identity, channel, day)
    end = day_start_value(identity, channel, day + 1)
    total = end - start
    if total == 0:
        return (start,) * (SLOTS_PER_DAY + 1)
    seed, index = identity.seed, identity.index
    outage = outage_on(seed, index, identity.commission_day, day)
    weights = []
    day_start = day * SECONDS_PER_DAY
    slot_keys = prefix(seed, index, Stream.SLOT_NOISE, channel.id)
    for slot in range(SLOTS_PER_DAY):
        jitter = 1.0 + 0.6 * (2.0 * uniform_after(slot_keys, day, slot) - 1)
        slot_start = day_start + slot * SLOT_SECONDS
        lit = 1.0 - outage_overlap(outage, slot_start, slot_start + SLOT_SECONDS) / SLOT_SECONDS
        weights.append(_shape_weight(channel, day, slot) * jitter * lit)
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights = [1.0] * SLOTS_PER_DAY
        weight_sum = float(SLOTS_PER_DAY)
    values = [start]
    running = 0.0
    for weight in weights:
        running += weight
        values.append(start + min(total, math.floor(total * running / weight_sum)))
    values[-1] = end
    return tuple(values)


def register_at(identity: MeterIdentity, channel_id: ChannelId, t: float) -> int:
    """The cumulative register (Wh) at EMOP time ``t`` (linear within a half hour)."""
    channel = identity.channel(channel_id)
    if channel.shape is Shape.NONE:
        return channel.base_wh
    day, into_day = divmod(t, SECONDS_PER_DAY)
    if into_day == 0:
        return day_start_value(identity, channel, int(day))  # O(1): no intra-day profile
    slot, into_slot = divmod(into_day, SLOT_SECONDS)
    bounds = _slot_boundaries(identity, channel, int(day))
    low, high = bounds[int(slot)], bounds[int(slot) + 1]
    return low + math.floor((high - low) * into_slot / SLOT_SECONDS)


def reactive_at(identity: MeterIdentity, channel_id: ChannelId, t: float) -> tuple[int, int]:
    """(reactive import, reactive export) in varh, derived from the active import register."""
    active = register_at(identity, channel_id, t)
    return math.floor(active * identity.reactive_ratio), math.floor(active * 0.02)


def instantaneous_power(identity: MeterIdentity, channel_id: ChannelId, t: float) -> int:
    """Average power (W) over the half hour containing ``t``."""
    start = (t // SLOT_SECONDS) * SLOT_SECONDS
    energy = register_at(identity, channel_id, start + SLOT_SECONDS) - register_at(
        identity, channel_id, start
    )
    return energy * 2
