"""Metrics of the mediator API (``flowsd_mediator_*``); no per-meter or per-client labels
(the log names both): the call-duration histogram, observed as each call ends, and the
families :data:`flowsd.ops.metrics.STATISTICS` builds from
:meth:`flowsd.mediator.service.MediatorService.statistics`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import REGISTRY, counter

if TYPE_CHECKING:
    from flowsd.mediator.service import MediatorStatistics

REQUEST_DURATION = Histogram(
    "flowsd_mediator_request_duration_seconds",
    "Mediator gRPC calls from arrival to answer, by method (includes waiting for the meter).",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 75, 150),
    registry=REGISTRY,
)


def mediator_families(stats: MediatorStatistics) -> Iterator[Metric]:
    """The mediator's calls and refusals."""
    yield counter(
        "flowsd_mediator_requests",
        "Mediator gRPC calls by method and status code, both snake_case (read_element, not_found).",
        stats.calls,
        ["method", "code"],
    )
    yield counter(
        "flowsd_mediator_refusals",
        "Calls refused with PERMISSION_DENIED, by reason (role: the method; esco: the meter).",
        stats.refusals,
        ["reason"],
    )
