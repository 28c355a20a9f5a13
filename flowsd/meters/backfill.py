"""Half-hourly profile logs: which half hours to ask for, and what an answer moves.

All arithmetic is on EMOP seconds (UTC since 2000), in whole half hours of UTC, so local
clock changes (46- and 50-half-hour days in the UK) cannot skip or repeat an interval.
A record stamped T is the register reading at T; it exists once T has passed (plus a
settle margin for the meter to log it).

Each log (1 and 2; a three-phase meter's interval profile, :data:`THREE_PHASE_LOG`) has its
own cursor, the next half hour wanted. The cursor starts after
the last interval the caller has stored (:class:`flowsd.meters.target.MeterResume`), or
``horizon`` back from now when nothing is stored, and only moves over records actually
received, so a failed or short answer is simply asked again in a later poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, Literal, Protocol, TypeVar

from flowsd.emop.units import from_emop_seconds, to_emop_seconds

HALF_HOUR = 1800
# Profile logs 1 and 2 of single-phase meters, and 3: a three-phase meter's interval profile
# (format 0x14, profile 0), whose records are stamped with the start of their half hour.
ProfileLogNumber = Literal[1, 2, 3]
THREE_PHASE_LOG: Final = 3


class TimestampedRecord(Protocol):
    @property
    def timestamp(self) -> int: ...


R = TypeVar("R", bound=TimestampedRecord)


def floor_half_hour(seconds: int) -> int:
    return seconds - seconds % HALF_HOUR


def newest_complete(now: datetime, settle_seconds: float) -> int:
    """EMOP seconds of the newest half-hour record that should exist at ``now``."""
    return floor_half_hour(to_emop_seconds(now) - int(settle_seconds))


def first_wanted(last_stored: datetime | None, newest: int, horizon_seconds: int) -> int:
    """The first half hour to read, given the last one stored (None: nothing stored)."""
    oldest_allowed = newest - horizon_seconds + HALF_HOUR
    if last_stored is None:
        return oldest_allowed
    after_last = floor_half_hour(to_emop_seconds(last_stored)) + HALF_HOUR
    return max(after_last, oldest_allowed)


@dataclass(frozen=True, slots=True)
class Accepted(Generic[R]):
    """What one profile-log answer contributed."""

    records: tuple[R, ...]
    # Half hours [start, end) the meter skipped (it answered with later ones instead).
    gaps: tuple[tuple[int, int], ...]
    progressed: bool


class LogCursor:
    """The next half hour wanted from one profile log, and until when (wall-clock seconds)
    the log is not asked at all (``paused_until``: a log the meter keeps in a form the
    cursor cannot follow is looked at again later, not at every poll)."""

    __slots__ = ("log", "next_wanted", "paused_until")

    def __init__(self, log: ProfileLogNumber, next_wanted: int) -> None:
        self.log = log
        self.next_wanted = next_wanted
        self.paused_until = 0.0

    def pending(self, newest: int) -> int:
        """Half hours still to read."""
        return max(0, (newest - self.next_wanted) // HALF_HOUR + 1)

    def accept(self, requested: int, records: Sequence[R], newest: int) -> Accepted[R]:
        """Take the records of an answer to a request for ``requested``.

        Kept: aligned half hours from the cursor up to ``newest``, once each, in time order.
        Records later than ``newest`` (not complete yet by our clock) and those already
        behind the cursor are ignored; empty slots (timestamp 0) too.
        """
        by_time: dict[int, R] = {}
        for record in records:
            ts = record.timestamp
            if ts and ts % HALF_HOUR == 0 and self.next_wanted <= ts <= newest:
                by_time.setdefault(ts, record)
        if not by_time:
            return Accepted((), (), False)
        ordered = [by_time[ts] for ts in sorted(by_time)]
        gaps: list[tuple[int, int]] = []
        expected = max(requested, self.next_wanted)
        for record in ordered:
            if record.timestamp > expected:
                gaps.append((expected, record.timestamp))
            expected = record.timestamp + HALF_HOUR
        self.next_wanted = expected
        return Accepted(tuple(ordered), tuple(gaps), True)

    def skip_to(self, first_held: int, newest: int) -> tuple[int, int] | None:
        """The meter holds nothing before ``first_held``: move past the half hours before it
        (up to ``newest``); the skipped range [start, end), or None when nothing moved."""
        target = min(floor_half_hour(first_held), newest + HALF_HOUR)
        if target <= self.next_wanted:
            return None
        skipped = (self.next_wanted, target)
        self.next_wanted = target
        return skipped


def choose_next(cursors: Iterable[LogCursor], newest: int, stalled: set[int]) -> LogCursor | None:
    """The log furthest behind that still has something to read and did not stall."""
    candidates = [c for c in cursors if c.pending(newest) > 0 and c.log not in stalled]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.next_wanted, c.log))


def half_hours(start: int, end: int) -> list[int]:
    """The half hours from ``start`` (inclusive) to ``end`` (exclusive), EMOP seconds."""
    first = floor_half_hour(start) + (HALF_HOUR if start % HALF_HOUR else 0)
    return list(range(first, end, HALF_HOUR))


def to_datetime(seconds: int) -> datetime:
    return from_emop_seconds(seconds)
