"""The one collector: what an attached export builds from components' snapshots is what the
registry serves, under the names dashboards and alert rules use."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from flowsd.events.appender import AppenderStatistics
from flowsd.events.metrics import appender_families
from flowsd.ops.metrics import REGISTRY, STATISTICS
from tests.support import sample_value

APPENDER = AppenderStatistics(
    accepted=100,
    committed=90,
    duplicates=3,
    rejected=2,
    fenced=1,
    spilled=40,
    drained_segments=2,
    spill_write_errors=5,
    spill_blocked=True,
    queued=7,
    in_memory=8,
    pending_in_journal=9,
    database_failures=6,
    database_failures_by_kind={"connection": 4, "timeout": 2, "refused": 0, "statement": 0},
    database_up=False,
    head_position=1234,
    journal_bytes=4096,
    journal_corrupt_records=1,
    subscriber_dropped_batches=11,
    running=True,
)


def _families() -> Iterator[Metric]:
    yield from appender_families(APPENDER)


def test_the_registry_serves_the_attached_snapshots() -> None:
    STATISTICS.attach(_families)
    try:
        expected = {
            ("flowsd_appender_queue_events", ()): 7,
            ("flowsd_appender_memory_events", ()): 8,
            ("flowsd_events_appended_total", ()): 90,
            ("flowsd_events_duplicate_total", ()): 3,
            ("flowsd_events_rejected_total", ()): 2,
            ("flowsd_fenced_writes_total", ()): 1,
            ("flowsd_event_log_head_position", ()): 1234,
            ("flowsd_appender_database_up", ()): 0,
            ("flowsd_appender_errors_total", (("kind", "connection"),)): 4,
            ("flowsd_appender_errors_total", (("kind", "timeout"),)): 2,
            ("flowsd_appender_errors_total", (("kind", "statement"),)): 0,
            ("flowsd_spill_events_written_total", ()): 40,
            ("flowsd_spill_pending_events", ()): 9,
            ("flowsd_spill_bytes", ()): 4096,
            ("flowsd_spill_disk_full", ()): 1,
            ("flowsd_spill_write_errors_total", ()): 5,
            ("flowsd_spill_corrupt_records_total", ()): 1,
            ("flowsd_event_subscriber_dropped_batches_total", ()): 11,
        }
        for (name, labels), value in expected.items():
            assert sample_value(name, dict(labels)) == value, name
    finally:
        STATISTICS.detach(_families)
    assert REGISTRY.get_sample_value("flowsd_appender_queue_events") is None
