"""Profile-log backfill windows, including the UK clock-change days."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flowsd.emop.units import from_emop_seconds, to_emop_seconds
from flowsd.meters.backfill import (
    HALF_HOUR,
    LogCursor,
    choose_next,
    first_wanted,
    half_hours,
    newest_complete,
)

LONDON = ZoneInfo("Europe/London")


@dataclass(frozen=True)
class Rec:
    timestamp: int


def _meter_answer(requested: int, count: int, holes: frozenset[int] = frozenset()) -> list[Rec]:
    """What a meter returns: ``count`` records from the first it holds at/after ``requested``."""
    out: list[Rec] = []
    ts = requested
    while len(out) < count:
        if ts not in holes:
            out.append(Rec(ts))
        ts += HALF_HOUR
    return out


def _drain(
    cursor: LogCursor,
    newest: int,
    per_request: int,
    budget: int,
    holes: frozenset[int] = frozenset(),
) -> tuple[list[int], list[tuple[int, int]], int]:
    got: list[int] = []
    gaps: list[tuple[int, int]] = []
    requests = 0
    while requests < budget and cursor.pending(newest):
        requested = cursor.next_wanted
        requests += 1
        accepted = cursor.accept(requested, _meter_answer(requested, per_request, holes), newest)
        got += [r.timestamp for r in accepted.records]
        gaps += accepted.gaps
        if not accepted.progressed:
            break
    return got, gaps, requests


@pytest.mark.parametrize(
    ("day", "expected"),
    [("2025-03-30", 46), ("2025-10-26", 50), ("2025-06-15", 48)],
)
def test_local_clock_change_days_are_read_once_each_half_hour(day: str, expected: int) -> None:
    local_midnight = datetime.fromisoformat(day).replace(tzinfo=LONDON)
    next_midnight = (local_midnight + timedelta(days=1, hours=3)).replace(hour=0, tzinfo=LONDON)
    start = to_emop_seconds(local_midnight.astimezone(UTC))
    end = to_emop_seconds(next_midnight.astimezone(UTC))
    # The last stored interval is the one just before local midnight.
    last = from_emop_seconds(start - HALF_HOUR)
    newest = end - HALF_HOUR
    for per_request in (4, 3, 2):
        cursor = LogCursor(1, first_wanted(last, newest, 30 * 86400))
        got, gaps, _ = _drain(cursor, newest, per_request, budget=100)
        assert len(got) == expected
        assert len(set(got)) == expected
        assert all(b - a == HALF_HOUR for a, b in itertools.pairwise(got))
        assert got[0] == start and got[-1] == newest and gaps == []
    assert len(half_hours(start, end)) == expected


def test_backfill_is_bounded_per_poll_and_completes_over_polls() -> None:
    newest = to_emop_seconds(datetime(2025, 6, 15, 12, tzinfo=UTC))
    cursor = LogCursor(1, first_wanted(None, newest, 48 * 3600))
    assert cursor.pending(newest) == 96
    polls = 0
    seen: list[int] = []
    while cursor.pending(newest):
        got, _, requests = _drain(cursor, newest, 4, budget=5)
        assert requests <= 5
        seen += got
        polls += 1
        assert polls < 10
    assert polls == 5 and len(seen) == 96 == len(set(seen))


def test_meter_skipping_half_hours_is_reported_as_a_gap() -> None:
    base = to_emop_seconds(datetime(2025, 6, 15, tzinfo=UTC))
    holes = {base + i * HALF_HOUR for i in range(2, 6)}
    newest = base + 20 * HALF_HOUR
    cursor = LogCursor(2, base)
    got, gaps, _ = _drain(cursor, newest, 3, budget=50, holes=frozenset(holes))
    assert gaps == [(base + 2 * HALF_HOUR, base + 6 * HALF_HOUR)]
    assert len(got) == 21 - 4 and not (set(got) & holes)


def test_records_not_complete_yet_duplicates_and_empty_slots_are_ignored() -> None:
    base = to_emop_seconds(datetime(2025, 6, 15, tzinfo=UTC))
    cursor = LogCursor(1, base)
    answer = [Rec(base - HALF_HOUR), Rec(base), Rec(0), Rec(base + HALF_HOUR), Rec(base + 7)]
    accepted = cursor.accept(base, answer, newest=base)
    assert [r.timestamp for r in accepted.records] == [base]
    assert cursor.next_wanted == base + HALF_HOUR
    # Nothing new (the meter has not logged the next half hour yet): no progress, no gap.
    stalled = cursor.accept(cursor.next_wanted, [Rec(0)] * 4, newest=base + HALF_HOUR)
    assert not stalled.progressed and stalled.gaps == ()


def test_start_point_and_log_choice() -> None:
    now = datetime(2025, 6, 15, 12, 0, 30, tzinfo=UTC)
    newest = newest_complete(now, 60)
    assert from_emop_seconds(newest) == datetime(2025, 6, 15, 11, 30, tzinfo=UTC)
    last = datetime(2025, 6, 15, 9, 0, tzinfo=UTC)
    assert from_emop_seconds(first_wanted(last, newest, 86400)) == datetime(
        2025, 6, 15, 9, 30, tzinfo=UTC
    )
    ancient = datetime(2020, 1, 1, tzinfo=UTC)
    assert first_wanted(ancient, newest, 86400) == newest - 86400 + HALF_HOUR
    one, two = LogCursor(1, newest - 4 * HALF_HOUR), LogCursor(2, newest - 8 * HALF_HOUR)
    assert choose_next([one, two], newest, set()) is two
    assert choose_next([one, two], newest, {2}) is one
    two.next_wanted = newest + HALF_HOUR
    one.next_wanted = newest + HALF_HOUR
    assert choose_next([one, two], newest, set()) is None
