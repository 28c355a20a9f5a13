"""Prometheus metrics of the mediator API (``flowsd_mediator_*``); no per-meter or per-client
labels (the log names both)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from flowsd.ops.metrics import REGISTRY

REQUESTS = Counter(
    "flowsd_mediator_requests",
    "Mediator gRPC calls by method and status code, both snake_case (read_element, not_found).",
    ["method", "code"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "flowsd_mediator_request_duration_seconds",
    "Mediator gRPC calls from arrival to answer, by method (includes waiting for the meter).",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 75, 150),
    registry=REGISTRY,
)
REFUSALS = Counter(
    "flowsd_mediator_refusals",
    "Calls refused with PERMISSION_DENIED, by reason (role: the method; esco: the meter).",
    ["reason"],
    registry=REGISTRY,
)
