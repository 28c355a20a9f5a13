"""Paging the meter's own event log (format 05, SPEC §9) without the reference's losses.

The meter keeps its last 100 events in 10 pages of 10, newest first. The reference stops
at the first entry not strictly newer than the newest stored one and keys entries on
(meter, second, type), so it loses (a) a different event in the same second as the
stored newest one, (b) repeats of the same event in the same second, and (c) silently
everything beyond 100 new events. Here:

* the cursor holds the newest stored second *and* the (event id, event set) of every
  entry already stored at that second, with repeats; paging continues while a page still
  reaches back to that second, and entries at it are matched as a multiset;
* entries sharing a second, an event id and an event set (the log's idempotency key) get an
  ``ordinal`` in logging order (:class:`RepeatNumbering`, also used for a client's raw read);
* reaching the last page without getting back to the cursor is reported
  (``possibly_lost_before``), never silent;
* id-0 records (invalid, seen on real meters) are counted and reported, not emitted; an
  all-zero record is an empty slot and ends the log;
* a scan over several pages re-reads page 0 at the end and is dropped (and repeated next
  poll) if the log moved meanwhile, since a shift would show an entry twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from flowsd.emop.units import from_emop_seconds, to_emop_seconds
from flowsd.meters.observations import EventLogCursor

PAGES = 10


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One event-log record as read (EMOP seconds, numeric id)."""

    timestamp: int
    event_id: int
    event_set: int


class RepeatNumbering:
    """Numbers event-log entries that repeat one logged earlier in the same second.

    Entries are keyed as the event log stores them, on (second, event id, event set): the
    first gets ordinal 0, and an entry with ordinal > 0 is one the log keeps only once.
    Feed entries oldest first, in the order the meter logged them.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: Counter[tuple[int, int, int]] = Counter()

    def next(self, timestamp: int, event_id: int, event_set: int) -> int:
        key = (timestamp, event_id, event_set)
        ordinal = self._seen[key]
        self._seen[key] = ordinal + 1
        return ordinal


@dataclass(frozen=True, slots=True)
class NewEntry:
    timestamp: int
    event_id: int
    event_set: int
    ordinal: int

    @property
    def occurred_at(self) -> datetime:
        return from_emop_seconds(self.timestamp)


@dataclass(frozen=True, slots=True)
class ScanResult:
    entries: tuple[NewEntry, ...]  # oldest first
    cursor: EventLogCursor | None
    pages_read: int
    possibly_lost_before: datetime | None
    invalid_records: int


def cursor_from_entries(entries: Iterable[tuple[datetime, int, int]]) -> EventLogCursor | None:
    """The cursor after the given stored entries ``(occurred_at, event_id, event_set)``.

    The daemon can build it from the database: the newest second stored for the meter and
    the rows at that second.
    """
    rows = list(entries)
    if not rows:
        return None
    newest = max(row[0] for row in rows)
    seen = sorted((event_id, event_set) for at, event_id, event_set in rows if at == newest)
    return EventLogCursor(newest=newest, seen_at_newest=tuple(seen))


@dataclass
class EventLogScan:
    """The paging state of one scan: ask :meth:`next_page`, feed :meth:`add_page`."""

    cursor: EventLogCursor | None
    max_pages: int = PAGES
    records: list[LogRecord] = field(default_factory=list)
    pages_read: int = 0
    invalid: int = 0
    ended: bool = False  # an empty slot was seen: the meter holds no older entries
    reached_cursor: bool = False
    first_page: list[LogRecord] = field(default_factory=list)

    @property
    def _cursor_seconds(self) -> int | None:
        return None if self.cursor is None else to_emop_seconds(self.cursor.newest)

    def next_page(self) -> int | None:
        """Index of the page to read next, or None when the scan is complete."""
        if self.ended or self.reached_cursor or self.pages_read >= min(self.max_pages, PAGES):
            return None
        return self.pages_read

    def add_page(self, page: Sequence[LogRecord]) -> None:
        if self.pages_read == 0:
            self.first_page = list(page)
        self.pages_read += 1
        cursor_at = self._cursor_seconds
        for record in page:
            if record.event_id == 0:
                if record.timestamp == 0 and record.event_set == 0:
                    self.ended = True
                    break
                self.invalid += 1
                continue
            self.records.append(record)
            # An entry older than the cursor second proves everything newer was seen.
            if cursor_at is not None and record.timestamp < cursor_at:
                self.reached_cursor = True

    @property
    def needs_confirmation(self) -> bool:
        """A scan over several pages must check the log did not move while it was read."""
        return self.pages_read > 1

    def unchanged(self, first_page_again: Sequence[LogRecord]) -> bool:
        """Page 0 read again at the end is what it was: no entry was logged during the scan.

        A new entry shifts every page by one, which would show the entry at a page boundary
        twice; such a scan is dropped and repeated at the next poll.
        """
        return list(first_page_again) == self.first_page

    def result(self) -> ScanResult:
        cursor_at = self._cursor_seconds
        seen = Counter(self.cursor.seen_at_newest if self.cursor is not None else ())
        relevant = [r for r in self.records if cursor_at is None or r.timestamp >= cursor_at]
        # Chronological order: the meter lists newest first; a stable sort keeps the
        # logging order of entries in the same second.
        chronological = sorted(reversed(relevant), key=lambda r: r.timestamp)
        numbering = RepeatNumbering()
        entries = []
        for r in chronological:
            ordinal = numbering.next(r.timestamp, r.event_id, r.event_set)
            if r.timestamp == cursor_at and seen[(r.event_id, r.event_set)] > 0:
                seen[(r.event_id, r.event_set)] -= 1  # stored already (logged earliest)
                continue
            entries.append(NewEntry(r.timestamp, r.event_id, r.event_set, ordinal))
        lost: datetime | None = None
        exhausted = not self.ended and not self.reached_cursor
        if exhausted and cursor_at is not None and self.records:
            oldest = min(r.timestamp for r in self.records)
            if oldest > cursor_at:
                lost = from_emop_seconds(oldest)
        return ScanResult(
            entries=tuple(entries),
            cursor=self._next_cursor(),
            pages_read=self.pages_read,
            possibly_lost_before=lost,
            invalid_records=self.invalid,
        )

    def _next_cursor(self) -> EventLogCursor | None:
        if not self.records:
            return self.cursor
        newest = max(r.timestamp for r in self.records)
        cursor_at = self._cursor_seconds
        if cursor_at is not None and newest < cursor_at:
            return self.cursor
        at_newest = sorted((r.event_id, r.event_set) for r in self.records if r.timestamp == newest)
        return EventLogCursor(newest=from_emop_seconds(newest), seen_at_newest=tuple(at_newest))
