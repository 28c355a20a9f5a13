"""The process's Prometheus registry.

Every flowsd metric is registered here (not in prometheus-client's global registry), so
tests can read values without interference and `/metrics` serves exactly flowsd's series
plus the process collector. Metric names start with ``flowsd_`` and carry their unit
(``_seconds``, ``_bytes``, ``_events``, ``_total`` for counters); label values are
snake_case words from a fixed set; there are no per-meter labels: per-meter detail belongs in
tables and logs. The ``_created`` series prometheus-client adds to every counter and
histogram are switched off: they double the exposition and nothing here reads them.
"""

from __future__ import annotations

import platform
import re

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

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


def server_version(conn: asyncpg.Connection) -> str:
    """The server's version as it reports it, without the packager's suffix: ``15.20``."""
    reported: str = conn.get_settings().server_version
    return reported.split(maxsplit=1)[0] if reported else "unknown"


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """``IntervalRecord`` -> ``interval_record``, for label values built from type names."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()
