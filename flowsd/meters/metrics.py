"""Prometheus metrics of the polling engine (``flowsd_meter_*``), in flowsd's registry.

No per-meter labels: per-meter detail goes to logs and observations. Labels are bounded
sets (outcome, failure reason, breaker state, request kind).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from flowsd.ops.metrics import REGISTRY, snake_case

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40)
_POLL_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "flowsd_meter_requests",
    "Meter request attempts by outcome and failure reason (reason 'ok' for successes).",
    ["kind", "outcome", "reason"],
    registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "flowsd_meter_request_duration_seconds",
    "Connect to last byte of a successful meter exchange.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "flowsd_meter_request_retries", "Request attempts that were retried.", registry=REGISTRY
)
CONNECTIONS_IN_FLIGHT = Gauge(
    "flowsd_meter_connections_in_flight", "Open TCP connections to meters.", registry=REGISTRY
)
CONNECTS = Counter("flowsd_meter_connects", "TCP connections opened to meters.", registry=REGISTRY)
CONNECTION_GRANTS = Counter(
    "flowsd_meter_connection_grants",
    "Connections granted under the fleet caps, by lane (live: cadence reads, commands, probes; "
    "backfill: profile-log history, granted only while no live request waits).",
    ["lane"],
    registry=REGISTRY,
)
BACKFILL_DEFERRED = Counter(
    "flowsd_meter_backfill_deferred",
    "Back-fill requests that gave up their place in the queue because their meter's next "
    "cadence came due or a command arrived (the rest is read in a later poll).",
    registry=REGISTRY,
)
BYTES_SENT = Counter("flowsd_meter_sent_bytes", "Bytes written to meters.", registry=REGISTRY)
BYTES_RECEIVED = Counter(
    "flowsd_meter_received_bytes", "Bytes received from meters.", registry=REGISTRY
)
METERS = Gauge(
    "flowsd_meters",
    "Meters under polling by breaker state (online only once a meter has answered).",
    ["state"],
    registry=REGISTRY,
)
NEVER_ANSWERED = Gauge(
    "flowsd_meters_never_answered",
    "Meters under polling that never answered, whether still awaiting a first answer or offline.",
    registry=REGISTRY,
)
METERS_STALE = Gauge(
    "flowsd_meters_stale",
    "Online meters with a cadence not polled successfully for more than 3 of its periods "
    "(the rule: flowsd/meters/freshness.py).",
    registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "flowsd_meter_breaker_transitions",
    "Meters going offline / coming online.",
    ["transition"],
    registry=REGISTRY,
)
BREAKER_PROBES = Counter(
    "flowsd_meter_breaker_probes", "Probes of offline meters.", ["outcome"], registry=REGISTRY
)
WATCHDOG_CANCELLATIONS = Counter(
    "flowsd_meter_watchdog_cancellations",
    "Polls cancelled because they made no progress within the watchdog deadline.",
    registry=REGISTRY,
)
POLLS = Counter("flowsd_meter_polls", "Polls finished, by outcome.", ["outcome"], registry=REGISTRY)
POLL_DURATION = Histogram(
    "flowsd_meter_poll_duration_seconds",
    "Duration of one poll of one meter.",
    buckets=_POLL_BUCKETS,
    registry=REGISTRY,
)
POLLS_RUNNING = Gauge("flowsd_meter_polls_running", "Polls in progress.", registry=REGISTRY)
SCHEDULE_LATENESS = Histogram(
    "flowsd_meter_schedule_lateness_seconds",
    "How late a poll started after its due time.",
    buckets=_POLL_BUCKETS,
    registry=REGISTRY,
)
SKIPPED_SLOTS = Counter(
    "flowsd_meter_skipped_slots",
    "Cadence slots not serviced (meter offline or still busy).",
    registry=REGISTRY,
)
SINK_WAIT = Counter(
    "flowsd_meter_sink_wait_seconds",
    "Time sessions spent waiting for the observation sink (back-pressure).",
    registry=REGISTRY,
)
OBSERVATIONS = Counter(
    "flowsd_meter_observations",
    "Observations handed to the sink, by type (reading, interval_record, read_failure, ...).",
    ["type"],
    registry=REGISTRY,
)
INTERVAL_GAPS = Counter(
    "flowsd_meter_interval_gaps",
    "Ranges of half hours a meter did not return (unrecoverable gaps).",
    registry=REGISTRY,
)
EVENT_LOG_OVERFLOWS = Counter(
    "flowsd_meter_event_log_overflows",
    "Event-log scans that hit the meter's 100-event window before the last seen entry.",
    registry=REGISTRY,
)
EVENT_LOG_RESCANS = Counter(
    "flowsd_meter_event_log_rescans",
    "Multi-page event-log scans dropped because the log moved while it was read.",
    registry=REGISTRY,
)
EVENT_LOG_INVALID = Counter(
    "flowsd_meter_event_log_invalid_records",
    "Event-log records with the invalid event id 0.",
    registry=REGISTRY,
)
INVALID_VALUES = Counter(
    "flowsd_meter_invalid_values",
    "Answers that decoded but hold an impossible value (e.g. a clock that is not a date).",
    registry=REGISTRY,
)
SINK_FAILURES = Counter(
    "flowsd_meter_sink_failures",
    "Observation batches the sink raised on (the poll's outcome is then lost; see the log).",
    registry=REGISTRY,
)
CLOCK_DRIFT = Histogram(
    "flowsd_meter_clock_drift_abs_seconds",
    "Absolute meter clock drift measured at each clock read.",
    buckets=(0.5, 1, 2, 5, 10, 20, 60, 300, 3600, 86400),
    registry=REGISTRY,
)


COMMANDS = Counter(
    "flowsd_meter_commands",
    "Commands run for clients (gRPC, database, CLI) by operation and outcome "
    "('ok', or the failure reason).",
    ["operation", "outcome"],
    registry=REGISTRY,
)
COMMANDS_RUNNING = Gauge(
    "flowsd_meter_commands_running", "Commands being sent to meters now.", registry=REGISTRY
)
COMMANDS_QUEUED = Gauge(
    "flowsd_meter_commands_queued", "Commands waiting in meters' queues.", registry=REGISTRY
)
COMMANDS_REFUSED = Counter(
    "flowsd_meter_commands_refused",
    "Commands refused before queueing, by reason (not_found, unavailable, queue_full, stopping).",
    ["reason"],
    registry=REGISTRY,
)

# Series of fixed label sets exist from the start, at 0: a dashboard shows 0, not "no data",
# and rate() sees the first increment.
for _transition in ("went_offline", "came_online"):
    BREAKER_TRANSITIONS.labels(_transition)
for _outcome in ("ok", "failed"):
    BREAKER_PROBES.labels(_outcome)
    POLLS.labels(_outcome)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}
_type_labels: dict[type, str] = {}


def type_label(value: object) -> str:
    """The snake_case label value naming ``value``'s type (``IntervalRecord`` ->
    ``interval_record``), cached."""
    kind = type(value)
    label = _type_labels.get(kind)
    if label is None:
        label = _type_labels[kind] = snake_case(kind.__name__)
    return label


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, cached: label lookups are on the per-request path."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child
