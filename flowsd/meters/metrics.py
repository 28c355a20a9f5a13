"""Metrics of the polling engine (``flowsd_meter_*``, ``flowsd_meters*``), in flowsd's registry:
the latency histograms, observed where a request, a poll or a clock read happens, and the
families :data:`flowsd.ops.metrics.STATISTICS` builds from the statistics of the fleet
supervisor, the meter list (:mod:`flowsd.meters.registry`) and the leases
(:mod:`flowsd.meters.ownership`).

No per-meter labels: per-meter detail goes to logs and observations. Labels are bounded
sets (outcome, failure reason, breaker state, request kind).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import REGISTRY, counter, gauge, snake_case

if TYPE_CHECKING:
    from flowsd.meters.ownership import OwnershipStatistics
    from flowsd.meters.registry import RegistryStatistics
    from flowsd.meters.statistics import FleetStatistics

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40)
_POLL_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

REQUEST_LATENCY = Histogram(
    "flowsd_meter_request_duration_seconds",
    "Connect to last byte of a successful meter exchange.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "flowsd_meter_poll_duration_seconds",
    "Duration of one poll of one meter.",
    buckets=_POLL_BUCKETS,
    registry=REGISTRY,
)
SCHEDULE_LATENESS = Histogram(
    "flowsd_meter_schedule_lateness_seconds",
    "How late a poll started after its due time.",
    buckets=_POLL_BUCKETS,
    registry=REGISTRY,
)
CLOCK_DRIFT = Histogram(
    "flowsd_meter_clock_drift_abs_seconds",
    "Absolute meter clock drift measured at each clock read.",
    buckets=(0.5, 1, 2, 5, 10, 20, 60, 300, 3600, 86400),
    registry=REGISTRY,
)

_type_labels: dict[type, str] = {}


def type_label(value: object) -> str:
    """The snake_case label value naming ``value``'s type (``IntervalRecord`` ->
    ``interval_record``), cached."""
    kind = type(value)
    label = _type_labels.get(kind)
    if label is None:
        label = _type_labels[kind] = snake_case(kind.__name__)
    return label


def fleet_families(stats: FleetStatistics) -> Iterator[Metric]:
    """The engine's counts and the fleet's state."""
    yield counter(
        "flowsd_meter_requests",
        "Meter request attempts by outcome and failure reason (reason 'ok' for successes).",
        stats.attempts,
        ["kind", "outcome", "reason"],
    )
    yield counter(
        "flowsd_meter_request_retries", "Request attempts that were retried.", stats.retries
    )
    yield gauge(
        "flowsd_meter_connections_in_flight",
        "Open TCP connections to meters.",
        stats.connections_in_flight,
    )
    yield counter("flowsd_meter_connects", "TCP connections opened to meters.", stats.connects)
    yield counter(
        "flowsd_meter_connection_grants",
        "Connections granted under the fleet caps, by lane (live: cadence reads, commands, "
        "probes; backfill: profile-log history, granted only while no live request waits).",
        stats.connection_grants,
        ["lane"],
    )
    yield counter(
        "flowsd_meter_backfill_deferred",
        "Back-fill requests that gave up their place in the queue because their meter's next "
        "cadence came due or a command arrived (the rest is read in a later poll).",
        stats.backfill_deferred,
    )
    yield counter("flowsd_meter_sent_bytes", "Bytes written to meters.", stats.bytes_sent)
    yield counter(
        "flowsd_meter_received_bytes", "Bytes received from meters.", stats.bytes_received
    )
    yield gauge(
        "flowsd_meters",
        "Meters under polling by breaker state (online only once a meter has answered).",
        stats.meters_by_state,
        ["state"],
    )
    yield gauge(
        "flowsd_meters_never_answered",
        "Meters under polling that never answered, whether still awaiting a first answer or "
        "offline.",
        stats.never_answered,
    )
    yield gauge(
        "flowsd_meters_stale",
        "Online meters with a cadence not polled successfully for more than 3 of its periods "
        "(the rule: flowsd/meters/freshness.py).",
        stats.stale,
    )
    yield counter(
        "flowsd_meter_breaker_transitions",
        "Meters going offline / coming online.",
        stats.breaker_transitions,
        ["transition"],
    )
    yield counter(
        "flowsd_meter_breaker_probes",
        "Probes of offline meters.",
        {("ok",): stats.probes - stats.failed_probes, ("failed",): stats.failed_probes},
        ["outcome"],
    )
    yield counter(
        "flowsd_meter_watchdog_cancellations",
        "Polls cancelled because they made no progress within the watchdog deadline.",
        stats.watchdog_cancellations,
    )
    yield counter(
        "flowsd_meter_polls",
        "Polls finished, by outcome.",
        {("ok",): stats.polls - stats.failed_polls, ("failed",): stats.failed_polls},
        ["outcome"],
    )
    yield gauge("flowsd_meter_polls_running", "Polls in progress.", stats.runs_in_progress)
    yield gauge(
        "flowsd_meters_waiting_to_start",
        "Meters due whose poll, probe or commands wait for one of the meter tasks the caps "
        "allow to end (flowsd/meters/launcher.py).",
        stats.meters_waiting_to_start,
    )
    yield counter(
        "flowsd_meter_skipped_slots",
        "Cadence slots not serviced (meter offline or still busy).",
        stats.skipped_slots,
    )
    yield counter(
        "flowsd_meter_sink_wait_seconds",
        "Time sessions spent waiting for the observation sink (back-pressure).",
        stats.sink_wait_seconds,
    )
    yield counter(
        "flowsd_meter_observations",
        "Observations handed to the sink, by type (reading, interval_record, read_failure, ...).",
        stats.observations,
        ["type"],
    )
    yield counter(
        "flowsd_meter_interval_gaps",
        "Ranges of half hours a meter did not return (unrecoverable gaps).",
        stats.interval_gaps,
    )
    yield counter(
        "flowsd_meter_event_log_overflows",
        "Event-log scans that hit the meter's 100-event window before the last seen entry.",
        stats.event_log_overflows,
    )
    yield counter(
        "flowsd_meter_event_log_rescans",
        "Multi-page event-log scans dropped because the log moved while it was read.",
        stats.event_log_rescans,
    )
    yield counter(
        "flowsd_meter_event_log_invalid_records",
        "Event-log records with the invalid event id 0.",
        stats.event_log_invalid_records,
    )
    yield counter(
        "flowsd_meter_invalid_values",
        "Answers that decoded but hold an impossible value (e.g. a clock that is not a date).",
        stats.invalid_values,
    )
    yield counter(
        "flowsd_meter_sink_failures",
        "Observation batches the sink raised on (the poll's outcome is then lost; see the log).",
        stats.sink_failures,
    )
    yield counter(
        "flowsd_meter_commands",
        "Commands run for clients (gRPC, database, CLI) by operation and outcome "
        "('ok', or the failure reason).",
        stats.commands,
        ["operation", "outcome"],
    )
    yield gauge(
        "flowsd_meter_commands_running",
        "Commands being sent to meters now.",
        stats.commands_running,
    )
    yield gauge(
        "flowsd_meter_commands_queued",
        "Commands waiting in meters' queues.",
        stats.commands_queued,
    )
    yield counter(
        "flowsd_meter_commands_refused",
        "Commands refused before queueing, by reason (not_found, unavailable, queue_full, "
        "stopping).",
        stats.commands_refused,
        ["reason"],
    )


def registry_families(stats: RegistryStatistics) -> Iterator[Metric]:
    """The meter list in force and its reloads."""
    yield gauge(
        "flowsd_registry_meters",
        "Active meters of meter_registry that flowsd dials, at the last reload.",
        stats.dialled,
    )
    yield gauge(
        "flowsd_registry_not_dialled",
        "Active meters of meter_registry that flowsd does not dial, by reason, at the last reload.",
        stats.not_dialled,
        ["reason"],
    )
    yield counter("flowsd_registry_reloads", "Reloads of the meter list.", stats.reloads)
    yield counter(
        "flowsd_registry_reload_errors",
        "Failed reloads of the meter list (the previous list stays in force).",
        stats.reload_errors,
    )


def ownership_families(stats: OwnershipStatistics) -> Iterator[Metric]:
    """The leases this daemon holds and what happened to them."""
    yield gauge("flowsd_meters_owned", "Meters whose lease this daemon holds", stats.owned)
    yield counter(
        "flowsd_lease_renewals_total",
        "Successful batched lease renewals (one statement renews all of a daemon's leases)",
        stats.renewals,
    )
    yield counter(
        "flowsd_lease_takeovers_total",
        "Meters taken over from another daemon whose lease had expired",
        stats.takeovers,
    )
    yield counter(
        "flowsd_lease_acquired_total",
        "Leases taken (free, handed back or expired)",
        stats.acquired,
    )
    yield counter(
        "flowsd_lease_handed_back_total",
        "Leases handed back between polls (rebalancing or stop)",
        stats.handed_back,
    )
    yield counter(
        "flowsd_lease_lost_total",
        "Leases this daemon found taken over by another daemon or dropped unrenewed",
        stats.lost,
    )
    yield counter(
        "flowsd_fenced_commands_total",
        "Commands refused because this daemon's lease of their meter had passed on, by source: "
        "database (a meter_command row left for the holder, counted at each claim that skipped "
        "it), grpc (a mediator write or raw exchange refused before it was sent)",
        stats.fenced_commands,
        ["source"],
    )
    yield gauge(
        "flowsd_daemons_live",
        "Live daemons sharing the fleet, as last seen",
        len(stats.live_daemons),
    )
