"""The process's Prometheus registry and flowsd's one collector of statistics.

Every flowsd metric is registered here (not in prometheus-client's global registry), so
`/metrics` serves exactly flowsd's series plus the process collector. Components count for
themselves and expose ``statistics()`` snapshots; :data:`STATISTICS`, a collector, builds
their families from the snapshots at each scrape (the daemon attaches the export of its
components while it runs, :meth:`flowsd.app.Daemon.metric_families`). Latency and size
distributions, the projectors' batch histograms among them, stay prometheus-client
histograms, observed where they happen.

Metric names start with ``flowsd_`` and carry their unit
(``_seconds``, ``_bytes``, ``_events``, ``_total`` for counters); label values are
snake_case words from a fixed set; there are no per-meter labels: per-meter detail belongs in
tables and logs. The ``_created`` series prometheus-client adds to every counter and
histogram are switched off: they double the exposition and nothing here reads them.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from flowsd import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Gauge(
    "flowsd_build_info",
    "Always 1: flowsd's version, Python's, and the PostgreSQL server's it last connected to "
    "(unknown until then).",
    ["version", "python", "postgres"],
    registry=REGISTRY,
)


def set_build_info(postgres: str = "unknown") -> None:
    """Publish the build info, naming the PostgreSQL server version (e.g. ``15.8``)."""
    BUILD_INFO.clear()
    BUILD_INFO.labels(__version__, platform.python_version(), postgres).set(1)


set_build_info()

Export = Callable[[], Iterable[Metric]]


class StatisticsCollector:
    """Exports the metric families built from components' ``statistics()`` at each scrape.

    One export is attached at a time: the running daemon's (one daemon per process; a test
    that runs two in one process sees the one started last).
    """

    def __init__(self) -> None:
        self._export: Export | None = None

    def attach(self, export: Export) -> None:
        self._export = export

    def detach(self, export: Export) -> None:
        if self._export == export:
            self._export = None

    def describe(self) -> list[Metric]:
        return []  # the names depend on what is attached: no clash check at registration

    def collect(self) -> Iterator[Metric]:
        export = self._export
        if export is not None:
            yield from export()


STATISTICS = StatisticsCollector()
REGISTRY.register(STATISTICS)


class Samples(Protocol):
    """Values by their label values: a tuple of them, or a string for the one label."""

    def items(self) -> Iterable[tuple[tuple[str, ...] | str, float]]: ...


Values = float | Samples  # one value, or one per label values
_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def counter(name: str, documentation: str, value: Values, labels: Sequence[str] = ()) -> Metric:
    """A counter family of ``value`` (labelled by ``labels``)."""
    return _family(CounterMetricFamily(name, documentation, labels=labels), value)


def gauge(name: str, documentation: str, value: Values, labels: Sequence[str] = ()) -> Metric:
    """A gauge family of ``value`` (labelled by ``labels``)."""
    return _family(GaugeMetricFamily(name, documentation, labels=labels), value)


def _family(family: _Family, value: Values) -> _Family:
    if isinstance(value, int | float):
        family.add_metric([], value)
    else:
        for key, sample in value.items():
            family.add_metric([key] if isinstance(key, str) else list(key), sample)
    return family


def server_version(conn: asyncpg.Connection) -> str:
    """The server's version as it reports it, without the packager's suffix: ``15.20``."""
    reported: str = conn.get_settings().server_version
    return reported.split(maxsplit=1)[0] if reported else "unknown"


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """``IntervalRecord`` -> ``interval_record``, for label values built from type names."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()
