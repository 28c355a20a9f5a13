"""Deterministic pseudo-random draws keyed by integers (no generator state to carry).

Every quantity the simulator invents is a pure function of a key such as
``(seed, meter index, stream, day)``; hashing the key gives the same value on every run and
in every process, so nothing has to be stored or ticked forward.
"""

from __future__ import annotations

import enum
import functools

_MASK = (1 << 64) - 1
_TWO_64 = float(1 << 64)


class Stream(enum.IntEnum):
    """Separates the draws of unrelated quantities that share the other key parts."""

    IDENTITY = 1
    HARDWARE = 2
    CHANNEL = 3
    DAY_NOISE = 4
    SLOT_NOISE = 5
    OUTAGE = 6
    EVENTS = 7
    TOPUP = 8
    TARIFF = 9
    CLOCK = 10
    CSQ = 11
    VOLTAGE = 12
    FAULT = 13
    OFFLINE = 14
    GARBAGE = 15
    THREE_PHASE_NAK = 16
    PREPAY = 17


def _mix(value: int) -> int:
    # splitmix64 finaliser: a cheap bijection with good avalanche.
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def draw(*keys: int) -> int:
    """A 64-bit value determined by ``keys``."""
    state = 0
    for key in keys:
        state = _mix(state ^ (key & _MASK))
    return state


@functools.lru_cache(maxsize=16_384)
def prefix(*keys: int) -> int:
    """``draw(*keys)``, cached: hot paths continue from it with :func:`uniform_after`."""
    return draw(*keys)


def uniform_after(start: int, *keys: int) -> float:
    """``uniform(*first, *keys)`` when ``start == prefix(*first)``, at the cost of ``keys``."""
    state = start
    for key in keys:
        state = _mix(state ^ (key & _MASK))
    return state / _TWO_64


def uniform(*keys: int) -> float:
    """A float in [0, 1) determined by ``keys``."""
    return draw(*keys) / _TWO_64


def between(low: float, high: float, *keys: int) -> float:
    """A float in [low, high) determined by ``keys``."""
    return low + (high - low) * uniform(*keys)


def integer(low: int, high: int, *keys: int) -> int:
    """An integer in [low, high] determined by ``keys``."""
    return low + draw(*keys) % (high - low + 1)


def smooth(period: float, t: float, *keys: int) -> float:
    """Value noise in [-1, 1] that wanders smoothly with ``t`` (knots every ``period``)."""
    knot = int(t // period)
    frac = (t - knot * period) / period
    left = 2.0 * uniform(*keys, knot) - 1.0
    right = 2.0 * uniform(*keys, knot + 1) - 1.0
    eased = frac * frac * (3.0 - 2.0 * frac)
    return left + (right - left) * eased
