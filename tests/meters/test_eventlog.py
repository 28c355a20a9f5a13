"""Event-log paging: same-second events, the cursor, id-0 records, more than 100 events."""

from __future__ import annotations

from datetime import UTC, datetime

from flowsd.emop.units import from_emop_seconds, to_emop_seconds
from flowsd.meters.eventlog import EventLogScan, LogRecord, cursor_from_entries

T0 = to_emop_seconds(datetime(2025, 6, 1, tzinfo=UTC))


class FakeLog:
    """The meter side: newest first, at most 100 entries, empty slots as zeros."""

    def __init__(self) -> None:
        self.chronological: list[LogRecord] = []

    def log(self, ts: int, event_id: int, event_set: int = 0) -> None:
        self.chronological.append(LogRecord(ts, event_id, event_set))

    def page(self, index: int) -> list[LogRecord]:
        newest_first = list(reversed(self.chronological))[:100]
        page = newest_first[index * 10 : index * 10 + 10]
        return page + [LogRecord(0, 0, 0)] * (10 - len(page))


def scan(meter: FakeLog, cursor, max_pages: int = 10):  # type: ignore[no-untyped-def]
    s = EventLogScan(cursor, max_pages=max_pages)
    while (index := s.next_page()) is not None:
        s.add_page(meter.page(index))
    return s.result()


def test_first_scan_reads_everything_in_order_and_stops_at_the_empty_slot() -> None:
    meter = FakeLog()
    for i in range(25):
        meter.log(T0 + i * 60, 33 + i % 2)
    result = scan(meter, None)
    assert result.pages_read == 3
    assert [e.timestamp for e in result.entries] == [T0 + i * 60 for i in range(25)]
    assert result.possibly_lost_before is None
    assert result.cursor is not None and result.cursor.newest == from_emop_seconds(T0 + 24 * 60)


def test_same_second_same_type_events_all_arrive_with_ordinals() -> None:
    meter = FakeLog()
    meter.log(T0, 48)
    meter.log(T0, 48)
    meter.log(T0, 33)
    meter.log(T0, 48)
    result = scan(meter, None)
    assert [(e.event_id, e.ordinal) for e in result.entries] == [(48, 0), (48, 1), (33, 0), (48, 2)]


def test_ordinals_follow_the_log_key_so_another_event_set_is_not_a_repeat() -> None:
    # The log stores (meter, second, event id, event set) once: only an entry equal in all
    # of them is a repeat (ordinal > 0); the same id in another set is a new entry.
    meter = FakeLog()
    meter.log(T0, 48, event_set=1)
    meter.log(T0, 48, event_set=2)
    meter.log(T0, 48, event_set=1)
    result = scan(meter, None)
    assert [(e.event_set, e.ordinal) for e in result.entries] == [(1, 0), (2, 0), (1, 1)]


def test_events_in_the_cursor_second_are_not_lost_nor_repeated() -> None:
    meter = FakeLog()
    meter.log(T0 - 10, 38)
    meter.log(T0, 48)
    first = scan(meter, None)
    assert first.cursor is not None
    # More entries in the very same second after the first scan (the reference loses these).
    meter.log(T0, 48)
    meter.log(T0, 34)
    meter.log(T0 + 5, 33)
    second = scan(meter, first.cursor)
    assert [(e.timestamp, e.event_id, e.ordinal) for e in second.entries] == [
        (T0, 48, 1),
        (T0, 34, 0),
        (T0 + 5, 33, 0),
    ]
    third = scan(meter, second.cursor)
    assert third.entries == () and third.pages_read == 1
    assert third.cursor == second.cursor


def test_cursor_second_spanning_a_page_boundary_reads_the_next_page() -> None:
    meter = FakeLog()
    for _ in range(15):
        meter.log(T0, 38)
    first = scan(meter, None)
    assert len(first.entries) == 15
    meter.log(T0 + 1, 33)
    result = scan(meter, first.cursor)
    assert [(e.timestamp, e.event_id) for e in result.entries] == [(T0 + 1, 33)]
    assert result.pages_read == 2


def test_cursor_from_stored_entries_matches_the_scan_cursor() -> None:
    meter = FakeLog()
    meter.log(T0 - 1, 38, 4)
    meter.log(T0, 48, 1)
    meter.log(T0, 33, 0)
    result = scan(meter, None)
    stored = [(e.occurred_at, e.event_id, e.event_set) for e in result.entries]
    assert cursor_from_entries(stored) == result.cursor
    assert cursor_from_entries([]) is None


def test_id_zero_records_are_counted_not_emitted() -> None:
    meter = FakeLog()
    meter.log(T0, 33)
    meter.log(T0 + 1, 0, 7)  # invalid id 0 with a timestamp (seen on real meters)
    meter.log(T0 + 2, 34)
    result = scan(meter, None)
    assert [e.event_id for e in result.entries] == [33, 34]
    assert result.invalid_records == 1


def test_more_than_100_new_events_is_reported_as_possible_loss() -> None:
    meter = FakeLog()
    meter.log(T0, 38)
    first = scan(meter, None)
    for i in range(1, 131):
        meter.log(T0 + i, 33)
    result = scan(meter, first.cursor)
    assert result.pages_read == 10
    assert len(result.entries) == 100
    assert result.possibly_lost_before == from_emop_seconds(T0 + 31)
    # Exactly 100 new events still reach back only to the window's end: also flagged, as
    # the meter cannot show whether older ones were pushed out.
    meter2 = FakeLog()
    meter2.log(T0, 38)
    c = scan(meter2, None).cursor
    for i in range(1, 100):
        meter2.log(T0 + i, 33)
    ok = scan(meter2, c)
    assert len(ok.entries) == 99 and ok.possibly_lost_before is None


def test_page_limit_below_ten_is_also_reported() -> None:
    meter = FakeLog()
    meter.log(T0, 38)
    first = scan(meter, None)
    for i in range(1, 40):
        meter.log(T0 + i, 33)
    result = scan(meter, first.cursor, max_pages=2)
    assert result.pages_read == 2 and len(result.entries) == 20
    assert result.possibly_lost_before == from_emop_seconds(T0 + 20)


def test_a_multi_page_scan_detects_an_entry_logged_while_it_was_read() -> None:
    meter = FakeLog()
    for i in range(15):
        meter.log(T0 + i, 33)
    s = EventLogScan(None)
    s.add_page(meter.page(0))
    meter.log(T0 + 100, 34)  # logged between the page reads: page 1 now repeats an entry
    s.add_page(meter.page(1))
    assert s.needs_confirmation
    assert not s.unchanged(meter.page(0))
    calm = EventLogScan(None)
    calm.add_page(meter.page(0))
    calm.add_page(meter.page(1))
    assert calm.unchanged(meter.page(0))
    assert len(calm.result().entries) == 16
