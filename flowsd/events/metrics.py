"""Metrics of the event store (``flowsd_`` names, no per-meter labels): the appender's
histograms, observed as it commits, and the families :data:`flowsd.ops.metrics.STATISTICS`
builds from :meth:`flowsd.events.appender.Appender.statistics`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, get_args

import asyncpg
from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import REGISTRY, counter, gauge

if TYPE_CHECKING:
    from flowsd.events.appender import AppenderStatistics

BATCH_SIZE = Histogram(
    "flowsd_appender_batch_events",
    "Events per committed append batch",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "flowsd_appender_commit_duration_seconds",
    "Duration of one append transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
AppendErrorKind = Literal["connection", "timeout", "refused", "statement"]
APPEND_ERROR_KINDS: tuple[AppendErrorKind, ...] = get_args(AppendErrorKind)

# SQLSTATEs: query_canceled (statement_timeout), lock_not_available (lock_timeout).
_TIMEOUT_STATES = frozenset({"57014", "55P03"})
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def append_error_kind(exc: BaseException) -> AppendErrorKind:
    """The label value of ``flowsd_appender_errors_total`` for a failed append."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate in _TIMEOUT_STATES:
            return "timeout"
        if sqlstate[:2] == "08" or sqlstate in _UNAVAILABLE_STATES:
            return "connection"
        if sqlstate[:2] == "28" or sqlstate in ("3D000", "42501"):
            return "refused"
        return "statement"
    return "connection"  # the socket, asyncpg's client side, flowsd's own connect errors


def appender_families(stats: AppenderStatistics) -> Iterator[Metric]:
    """The appender's, its spill journal's and its subscribers' counts and states."""
    yield gauge(
        "flowsd_appender_queue_events", "Events accepted and waiting for the appender", stats.queued
    )
    yield gauge(
        "flowsd_appender_memory_events",
        "Events held in memory by the appender (taken from the queue, not yet committed)",
        stats.in_memory,
    )
    yield counter(
        "flowsd_events_appended_total", "Events committed to the event log", stats.committed
    )
    yield counter(
        "flowsd_events_duplicate_total",
        "Events not stored because their idempotency key was already in the log",
        stats.duplicates,
    )
    yield counter(
        "flowsd_events_rejected_total",
        "Events the database refused on their own (kept in flowsd.rejected_event)",
        stats.rejected,
    )
    yield counter(
        "flowsd_fenced_writes_total",
        "Events the database refused because this daemon's lease of their meter had passed to "
        "another daemon (the new holder reads the meter again)",
        stats.fenced,
    )
    yield gauge(
        "flowsd_event_log_head_position",
        "Highest position this process committed",
        stats.head_position,
    )
    yield gauge(
        "flowsd_appender_database_up",
        "1 while the appender's last database operation succeeded, 0 while it is retrying",
        stats.database_up,
    )
    yield counter(
        "flowsd_appender_errors_total",
        "Failed append attempts (each is retried), by kind: connection (unreachable, lost, "
        "server starting or stopping), timeout (statement or lock timeout), refused (login or "
        "privileges), statement (any other error of the database)",
        {(kind,): stats.database_failures_by_kind.get(kind, 0) for kind in APPEND_ERROR_KINDS},
        ["kind"],
    )
    yield counter(
        "flowsd_spill_events_written_total",
        "Events written to the spill journal while the database was unreachable",
        stats.spilled,
    )
    yield gauge(
        "flowsd_spill_pending_events",
        "Events in the spill journal not yet committed to the database",
        stats.pending_in_journal,
    )
    yield gauge("flowsd_spill_bytes", "Size of the spill journal on disk", stats.journal_bytes)
    yield gauge(
        "flowsd_spill_disk_full",
        "1 while the spill journal cannot be written (disk full or I/O error): an alarm",
        stats.spill_blocked,
    )
    yield counter(
        "flowsd_spill_write_errors_total",
        "Failed writes to the spill journal",
        stats.spill_write_errors,
    )
    yield counter(
        "flowsd_spill_corrupt_records_total",
        "Spill records that failed their checksum (a torn write at a crash)",
        stats.journal_corrupt_records,
    )
    yield counter(
        "flowsd_event_subscriber_dropped_batches_total",
        "Committed batches not handed to a slow in-process subscriber (it reads the log instead)",
        stats.subscriber_dropped_batches,
    )
