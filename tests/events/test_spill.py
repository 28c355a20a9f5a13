"""The spill journal's file format: order, rotation, torn writes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flowsd.events.spill import MAGIC, SpillDirectoryInUseError, SpillJournal
from tests.events.helpers import balance_event, native_event

METER = uuid.UUID("0b5e7c1a-3f42-4a8e-9d61-2c7a5b9e4f10")


def test_segments_keep_write_order_across_rotation(tmp_path: Path) -> None:
    journal = SpillJournal(tmp_path, segment_max_bytes=2000)
    events = [balance_event(METER, n) for n in range(60)] + [native_event(METER, 61)]
    for start in range(0, len(events), 7):
        journal.write(events[start : start + 7])
    journal.close()
    segments = journal.segments()
    assert len(segments) > 2
    assert [e for s in segments for e in journal.read(s)] == events
    assert SpillJournal(tmp_path).scan() == len(events)


def test_a_torn_last_write_keeps_every_complete_record(tmp_path: Path) -> None:
    journal = SpillJournal(tmp_path)
    events = [balance_event(METER, n) for n in range(5)]
    journal.write(events[:3])
    journal.write(events[3:])
    journal.close()
    (segment,) = journal.segments()
    data = segment.read_bytes()
    for cut in (1, 5, 20):
        segment.write_bytes(data[:-cut])
        assert journal.read(segment) == events[:4]


def test_a_corrupted_record_ends_the_readable_part(tmp_path: Path) -> None:
    journal = SpillJournal(tmp_path)
    events = [balance_event(METER, n) for n in range(4)]
    journal.write(events)
    journal.close()
    (segment,) = journal.segments()
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's body: its checksum no longer matches
    segment.write_bytes(bytes(data))
    assert journal.read(segment) == events[:3]


def test_foreign_files_and_headerless_segments_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a segment")
    (tmp_path / "segment-00000000000000000001.spill").write_bytes(b"garbage")
    (tmp_path / "segment-00000000000000000002.spill").write_bytes(MAGIC[:5])
    journal = SpillJournal(tmp_path)
    assert [p.name for p in journal.segments()] == [
        "segment-00000000000000000001.spill",
        "segment-00000000000000000002.spill",
    ]
    assert journal.scan() == 0
    journal.write([balance_event(METER, 1)])
    journal.close()
    assert journal.segments()[-1].name == "segment-00000000000000000003.spill"


def test_removing_a_segment_forgets_it(tmp_path: Path) -> None:
    journal = SpillJournal(tmp_path)
    journal.write([balance_event(METER, 1)])
    assert journal.has_segments()
    journal.remove(journal.oldest_segment())
    assert not journal.has_segments()
    assert journal.segments() == []


def test_one_journal_per_directory(tmp_path: Path) -> None:
    first = SpillJournal(tmp_path)
    first.scan()
    second = SpillJournal(tmp_path)
    with pytest.raises(SpillDirectoryInUseError, match="in use"):
        second.scan()
    with pytest.raises(SpillDirectoryInUseError):
        second.write([balance_event(METER, 1)])
    first.close()
    second.write([balance_event(METER, 1)])
    second.close()
    assert SpillJournal(tmp_path).scan() == 1
