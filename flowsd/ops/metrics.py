"""The process's Prometheus registry.

Every flowsd metric is registered here (not in prometheus-client's global registry), so
tests can read values without interference and `/metrics` serves exactly flowsd's series
plus the process collector. Metric names start with ``flowsd_``; there are no per-meter
labels: per-meter detail belongs in tables and logs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (0.0 when absent), for tests and `flowsd status`."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
