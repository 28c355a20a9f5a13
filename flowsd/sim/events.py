"""The meter's event log (SPEC §9): the 100 most recent events, newest first, 10 per page.

Events are generated per day from the seed: a daily snapshot at midnight, power down/up
around outages (the same outages that zero the profile data), customer top-ups, the
occasional modem reset, status-word reset, tamper, and the id-0 record real meters emit.
Events caused by writes (an applied token) come from the meter's overrides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flowsd.sim.cache import BoundedCache
from flowsd.sim.consumption import outage_on
from flowsd.sim.identity import SECONDS_PER_DAY, MeterIdentity
from flowsd.sim.overrides import MeterOverrides
from flowsd.sim.prepay import WEEK_SECONDS, customer_topup
from flowsd.sim.rand import Stream, integer, prefix, uniform_after

LOG_CAPACITY = 100
PAGE_SIZE = 10


class EventId(enum.IntEnum):
    """Event ids the simulator emits (names from the SPEC's enum)."""

    INVALID = 0
    TERMINAL_COVER_REMOVED = 4
    MAGNETIC_FRAUD = 10
    POWER_UP = 33
    POWER_DOWN = 34
    DAILY_LOG_SNAPSHOT = 38
    # Not in the reference's enum: the simulator's choice of id for an accepted top-up,
    # so clients also meet an unknown id (the SPEC notes real meters emit e.g. 52).
    TOKEN_APPLIED = 52
    GSM_RESET_NO_CONNECTION = 94
    STATUS_WORD_RESET = 95


# (event, event_set, probability per day)
_RANDOM_DAILY = (
    (EventId.GSM_RESET_NO_CONNECTION, 1, 0.04),
    (EventId.STATUS_WORD_RESET, 0, 0.01),
    (EventId.TERMINAL_COVER_REMOVED, 0, 0.004),
    (EventId.MAGNETIC_FRAUD, 0, 0.002),
    (EventId.INVALID, 0, 0.01),
)


@dataclass(frozen=True, slots=True, order=True)
class Event:
    """One event-log record."""

    timestamp: int
    event_id: int
    event_set: int


_DAY_CACHE: BoundedCache[tuple[int, int, str, int], tuple[Event, ...]] = BoundedCache(8_192)


def events_of_day(identity: MeterIdentity, day: int) -> tuple[Event, ...]:
    """The seed-driven events of one UTC day (unsorted), cached."""
    key = (identity.seed, identity.index, identity.hardware.value, day)
    return _DAY_CACHE.get_or_compute(key, lambda: tuple(_generate_day(identity, day)))


def _generate_day(identity: MeterIdentity, day: int) -> list[Event]:
    if day < identity.commission_day:
        return []
    seed, index = identity.seed, identity.index
    start = day * SECONDS_PER_DAY
    found = [Event(start, EventId.DAILY_LOG_SNAPSHOT, 4)]
    outage = outage_on(seed, index, identity.commission_day, day)
    if outage is not None:
        found.append(Event(outage[0], EventId.POWER_DOWN, 0))
        found.append(Event(outage[1], EventId.POWER_UP, 0))
    if not identity.hardware.three_phase:
        weeks = {
            (start - identity.commissioned_at) // WEEK_SECONDS,
            (start + SECONDS_PER_DAY - 1 - identity.commissioned_at) // WEEK_SECONDS,
        }
        for week in weeks:
            credit = customer_topup(identity, int(week))
            if start <= credit.time < start + SECONDS_PER_DAY:
                found.append(Event(int(credit.time), EventId.TOKEN_APPLIED, 0))
    for number, (event_id, event_set, probability) in enumerate(_RANDOM_DAILY):
        if uniform_after(prefix(seed, index, Stream.EVENTS), day, number) < probability:
            at = start + integer(
                1, SECONDS_PER_DAY - 1, seed, index, Stream.EVENTS, day, 100 + number
            )
            found.append(Event(at, event_id, event_set))
    return found


def recent_events(
    identity: MeterIdentity, overrides: MeterOverrides | None, t: float, limit: int = LOG_CAPACITY
) -> list[Event]:
    """The ``limit`` most recent events at ``t``, newest first."""
    extra = [] if overrides is None else [Event(*e) for e in overrides.events if e[0] <= t]
    collected = list(extra)
    day = int(t // SECONDS_PER_DAY)
    # Every day since commissioning logs at least its snapshot, so this walks back at most
    # `limit` days.
    while day >= identity.commission_day and day >= 0:
        collected.extend(e for e in events_of_day(identity, day) if e.timestamp <= t)
        if sum(1 for e in collected if e.timestamp >= day * SECONDS_PER_DAY) >= limit:
            break
        day -= 1
    collected.sort(reverse=True)
    return collected[:limit]


def event_page(
    identity: MeterIdentity, overrides: MeterOverrides | None, t: float, page: int
) -> list[Event]:
    """Page ``page`` (0 = newest) of the log: up to 10 events, newest first."""
    events = recent_events(identity, overrides, t, limit=(page + 1) * PAGE_SIZE)
    return events[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
