"""Metrics of the projectors (label: projection name only, never a meter): the batch
histograms, observed at each projector transaction, and the families
:data:`flowsd.ops.metrics.STATISTICS` builds from
:meth:`flowsd.projections.runner.ProjectorRunner.statistics`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import REGISTRY, counter, gauge

if TYPE_CHECKING:
    from flowsd.projections.status import ProjectorStatistics

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


def projector_families(projectors: Iterable[ProjectorStatistics]) -> Iterator[Metric]:
    """One series per projection in each family, counters from 0 (no projection, no series)."""
    stats = list(projectors)

    def each(value: Callable[[ProjectorStatistics], float]) -> dict[tuple[str, ...], float]:
        return {(s.name,): value(s) for s in stats}

    label = ["projection"]
    yield gauge(
        "flowsd_projector_checkpoint_position",
        "Last event-log position the projection has applied",
        each(lambda s: s.checkpoint),
        label,
    )
    yield gauge(
        "flowsd_projector_lag_events",
        "Known log head minus the projection's checkpoint",
        each(lambda s: s.lag_events),
        label,
    )
    yield gauge(
        "flowsd_projector_lag_seconds",
        "Age (recorded_at to now) of the last event applied while behind; 0 when caught up",
        each(lambda s: s.lag_seconds),
        label,
    )
    yield counter(
        "flowsd_projector_events_total",
        "Events covered by the projection's checkpoint",
        each(lambda s: s.events),
        label,
    )
    yield counter(
        "flowsd_projector_log_reads_total",
        "Pages read from the log (catch-up after a start, a gap or another process's appends)",
        each(lambda s: s.log_reads),
        label,
    )
    yield counter(
        "flowsd_projector_parked_events_total",
        "Events parked in flowsd.projection_parked_event because they could not be applied",
        each(lambda s: s.parked),
        label,
    )
    yield counter(
        "flowsd_projector_checkpoint_conflicts_total",
        "Batches not applied because the checkpoint had moved (another instance or a replay)",
        each(lambda s: s.conflicts),
        label,
    )
    yield counter(
        "flowsd_projector_errors_total",
        "Failed projector transactions (retried with back-off)",
        each(lambda s: s.errors),
        label,
    )
    yield gauge(
        "flowsd_projector_active",
        "1 while this daemon runs the projection, 0 while it stands by for another daemon",
        each(lambda s: 1 if s.role == "active" else 0),
        label,
    )
    yield gauge(
        "flowsd_projector_healthy",
        "1 while the projector is running and caught up or advancing",
        each(lambda s: 1 if s.healthy else 0),
        label,
    )
