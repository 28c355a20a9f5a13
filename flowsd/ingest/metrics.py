"""Metrics of the ingest step (``flowsd_ingest_*``, ``flowsd_session_state_*``; no per-meter
labels): the families :data:`flowsd.ops.metrics.STATISTICS` builds from
:meth:`flowsd.ingest.pipeline.Ingest.statistics`.

Queue depth, events appended and meters by state are the appender's and the polling
engine's; only what happens between the two is counted here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import counter

if TYPE_CHECKING:
    from flowsd.ingest.pipeline import IngestStatistics


def ingest_families(stats: IngestStatistics) -> Iterator[Metric]:
    """The ingest step's counts."""
    yield counter(
        "flowsd_ingest_state_changes_total",
        "State-change events derived from readings and poll outcomes, by kind.",
        stats.state_changes,
        ["kind"],
    )
    yield counter(
        "flowsd_ingest_incomplete_groups_total",
        "Grouped reads (e.g. a tariff) not stored because a required piece was not read, by "
        "cause: piece_missing (a read failed) or poll_stopped (a stop cut the poll short).",
        stats.incomplete_groups,
        ["cause"],
    )
    yield counter(
        "flowsd_ingest_unmapped_readings_total",
        "Readings of objects flowsd has no event type for (kept only in the logs).",
        stats.unmapped_readings,
    )
    yield counter(
        "flowsd_ingest_interval_gaps_total",
        "Half hours the meters reported they do not hold (unrecoverable profile gaps).",
        stats.interval_gaps,
    )
    yield counter(
        "flowsd_session_state_rows_written_total",
        "Per-meter session-state rows upserted into flowsd.meter_session_state.",
        stats.session_rows_written,
    )
    yield counter(
        "flowsd_session_state_write_errors_total",
        "Failed batched writes of session state or heartbeat (retried at the next flush).",
        stats.session_write_errors,
    )
    yield counter(
        "flowsd_ingest_meter_log_repeats_total",
        "Meter event-log entries repeating an earlier one in the same second (id and set): "
        "stored once, as the event log's idempotency key cannot tell them apart.",
        stats.meter_log_repeats,
    )
    yield counter(
        "flowsd_ingest_seed_unreadable_events_total",
        "Stored state-change events whose payload did not decode when seeding the change detector.",
        stats.seed_unreadable,
    )
