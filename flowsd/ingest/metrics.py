"""Prometheus metrics of the ingest step (``flowsd_ingest_*``; no per-meter labels).

Queue depth, events appended and meters by state are registered by the appender and the
polling engine; only what happens between the two is counted here.
"""

from __future__ import annotations

from prometheus_client import Counter

from flowsd.ops.metrics import REGISTRY

STATE_CHANGES = Counter(
    "flowsd_ingest_state_changes_total",
    "State-change events derived from readings and poll outcomes, by kind.",
    ["kind"],
    registry=REGISTRY,
)
INCOMPLETE_GROUPS = Counter(
    "flowsd_ingest_incomplete_groups_total",
    "Grouped reads (e.g. a tariff) not stored because a required piece was not read, by "
    "cause: piece_missing (a read failed) or poll_stopped (a stop cut the poll short).",
    ["cause"],
    registry=REGISTRY,
)
for _cause in ("piece_missing", "poll_stopped"):
    INCOMPLETE_GROUPS.labels(_cause)  # both series from the start, at 0
UNMAPPED_READINGS = Counter(
    "flowsd_ingest_unmapped_readings_total",
    "Readings of objects flowsd has no event type for (kept only in the logs).",
    registry=REGISTRY,
)
INTERVAL_GAPS = Counter(
    "flowsd_ingest_interval_gaps_total",
    "Half hours the meters reported they do not hold (unrecoverable profile gaps).",
    registry=REGISTRY,
)
SESSION_STATE_WRITES = Counter(
    "flowsd_session_state_rows_written_total",
    "Per-meter session-state rows upserted into flowsd.meter_session_state.",
    registry=REGISTRY,
)
SESSION_STATE_ERRORS = Counter(
    "flowsd_session_state_write_errors_total",
    "Failed batched writes of session state or heartbeat (retried at the next flush).",
    registry=REGISTRY,
)
METER_LOG_REPEATS = Counter(
    "flowsd_ingest_meter_log_repeats_total",
    "Meter event-log entries repeating an earlier one in the same second (id and set): "
    "stored once, as the event log's idempotency key cannot tell them apart.",
    registry=REGISTRY,
)
SEED_UNREADABLE = Counter(
    "flowsd_ingest_seed_unreadable_events_total",
    "Stored state-change events whose payload did not decode when seeding the change detector.",
    registry=REGISTRY,
)
