"""Prometheus metrics of the projectors (label: projection name only, never a meter)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from flowsd.ops.metrics import REGISTRY

CHECKPOINT = Gauge(
    "flowsd_projector_checkpoint_position",
    "Last event-log position the projection has applied",
    ["projection"],
    registry=REGISTRY,
)
LAG_EVENTS = Gauge(
    "flowsd_projector_lag_events",
    "Known log head minus the projection's checkpoint",
    ["projection"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "flowsd_projector_lag_seconds",
    "Age (recorded_at to now) of the last event applied while behind; 0 when caught up",
    ["projection"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "flowsd_projector_events_total",
    "Events covered by the projection's checkpoint",
    ["projection"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "flowsd_projector_batch_duration_seconds",
    "Duration of one projector transaction",
    ["projection"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "flowsd_projector_batch_events",
    "Events per projector transaction",
    ["projection"],
    buckets=(1, 10, 100, 500, 1000, 5000, 20000, 100000),
    registry=REGISTRY,
)
CATCH_UP_READS = Counter(
    "flowsd_projector_log_reads_total",
    "Pages read from the log (catch-up after a start, a gap or another process's appends)",
    ["projection"],
    registry=REGISTRY,
)
PARKED_EVENTS = Counter(
    "flowsd_projector_parked_events_total",
    "Events parked in flowsd.projection_parked_event because they could not be applied",
    ["projection"],
    registry=REGISTRY,
)
CONFLICTS = Counter(
    "flowsd_projector_checkpoint_conflicts_total",
    "Batches not applied because the checkpoint had moved (another instance or a replay)",
    ["projection"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "flowsd_projector_errors_total",
    "Failed projector transactions (retried with back-off)",
    ["projection"],
    registry=REGISTRY,
)
UP = Gauge(
    "flowsd_projector_healthy",
    "1 while the projector is running and caught up or advancing",
    ["projection"],
    registry=REGISTRY,
)
