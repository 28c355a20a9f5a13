"""The one collector: what an attached export builds from components' snapshots is what the
registry serves, under the names dashboards and alert rules use."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from flowsd.events.appender import AppenderStatistics
from flowsd.events.metrics import appender_families
from flowsd.ingest.metrics import ingest_families
from flowsd.ingest.pipeline import IngestStatistics
from flowsd.mediator.metrics import mediator_families
from flowsd.mediator.service import MediatorStatistics
from flowsd.meters.metrics import fleet_families, ownership_families, registry_families
from flowsd.meters.ownership import OwnershipStatistics
from flowsd.meters.registry import RegistryStatistics
from flowsd.meters.statistics import FleetStatistics
from flowsd.ops.metrics import REGISTRY, STATISTICS
from flowsd.projections.metrics import projector_families
from flowsd.projections.status import ProjectorStatistics
from flowsd.supervision import ComponentStatistics, component_families
from tests.support import sample_value

APPENDER = AppenderStatistics(
    accepted=100,
    committed=90,
    duplicates=3,
    rejected=2,
    fenced=1,
    spilled=40,
    drained_segments=2,
    spill_write_errors=5,
    spill_blocked=True,
    queued=7,
    in_memory=8,
    pending_in_journal=9,
    database_failures=6,
    database_failures_by_kind={"connection": 4, "timeout": 2, "refused": 0, "statement": 0},
    database_up=False,
    head_position=1234,
    journal_bytes=4096,
    journal_corrupt_records=1,
    subscriber_dropped_batches=11,
    running=True,
)

FLEET = FleetStatistics(
    meters_by_state={"online": 5, "offline": 2, "awaiting_first_answer": 1},
    never_answered=3,
    stale=1,
    runs_in_progress=4,
    meters_running=4,
    meters_running_bound=276,
    meters_waiting_to_start=13,
    connections_in_flight=2,
    peak_connections_in_flight=9,
    connects=50,
    connection_grants={"live": 45, "backfill": 5},
    backfill_deferred=6,
    bytes_sent=700,
    bytes_received=8000,
    requests_ok=60,
    request_failures={"read_timeout": 2},
    attempts={("object", "ok", "ok"): 58, ("object", "failed", "read_timeout"): 4},
    retries=2,
    polls=20,
    failed_polls=3,
    probes=7,
    failed_probes=6,
    watchdog_cancellations=1,
    skipped_slots=12,
    sink_wait_seconds=1.5,
    sink_failures=1,
    observations={"reading": 30, "interval_record": 40},
    interval_gaps=2,
    event_log_overflows=1,
    event_log_rescans=3,
    event_log_invalid_records=4,
    invalid_values=5,
    breaker_transitions={"went_offline": 2, "came_online": 1},
    commands={("set_clock", "ok"): 2},
    commands_running=1,
    commands_queued=3,
    commands_refused={"queue_full": 4},
)

REGISTRY_LIST = RegistryStatistics(
    dialled=12, not_dialled={"duplicate_address": 2}, reloads=30, reload_errors=1
)
OWNERSHIP = OwnershipStatistics(
    name="a",
    owned=10,
    share=11,
    live_daemons=["a", "b"],
    renewals=100,
    acquired=12,
    takeovers=3,
    handed_back=2,
    lost=1,
    fenced_commands={"database": 2, "grpc": 1},
)
COMPONENTS = {"meters": ComponentStatistics(restarts=3), "appender": ComponentStatistics()}
INGEST = IngestStatistics(
    state_changes={"balance_changed": 4},
    incomplete_groups={"piece_missing": 1, "poll_stopped": 2},
    unmapped_readings=3,
    interval_gaps=5,
    meter_log_repeats=6,
    seed_unreadable=7,
    session_rows_written=80,
    session_write_errors=9,
)
MEDIATOR = MediatorStatistics(
    calls={("read_element", "ok"): 5, ("write_element", "permission_denied"): 2},
    refusals={"role": 2},
)

PROJECTORS = [
    ProjectorStatistics(
        name="meter_csq",
        checkpoint=500,
        lag_events=20,
        lag_seconds=2.5,
        healthy=True,
        events=480,
        log_reads=3,
        parked=4,
        conflicts=1,
        errors=2,
    ),
    ProjectorStatistics(
        name="meter_registry",
        checkpoint=0,
        lag_events=0,
        lag_seconds=0.0,
        healthy=False,
        events=0,
        log_reads=0,
        parked=0,
        conflicts=0,
        errors=0,
        role="stopped",
    ),
]


def _families() -> Iterator[Metric]:
    yield from appender_families(APPENDER)
    yield from fleet_families(FLEET)
    yield from registry_families(REGISTRY_LIST)
    yield from ownership_families(OWNERSHIP)
    yield from component_families(COMPONENTS)
    yield from ingest_families(INGEST)
    yield from mediator_families(MEDIATOR)
    yield from projector_families(PROJECTORS)


def test_the_registry_serves_the_attached_snapshots() -> None:
    STATISTICS.attach(_families)
    try:
        expected = {
            ("flowsd_appender_queue_events", ()): 7,
            ("flowsd_appender_memory_events", ()): 8,
            ("flowsd_events_appended_total", ()): 90,
            ("flowsd_events_duplicate_total", ()): 3,
            ("flowsd_events_rejected_total", ()): 2,
            ("flowsd_fenced_writes_total", ()): 1,
            ("flowsd_event_log_head_position", ()): 1234,
            ("flowsd_appender_database_up", ()): 0,
            ("flowsd_appender_errors_total", (("kind", "connection"),)): 4,
            ("flowsd_appender_errors_total", (("kind", "timeout"),)): 2,
            ("flowsd_appender_errors_total", (("kind", "statement"),)): 0,
            ("flowsd_spill_events_written_total", ()): 40,
            ("flowsd_spill_pending_events", ()): 9,
            ("flowsd_spill_bytes", ()): 4096,
            ("flowsd_spill_disk_full", ()): 1,
            ("flowsd_spill_write_errors_total", ()): 5,
            ("flowsd_spill_corrupt_records_total", ()): 1,
            ("flowsd_event_subscriber_dropped_batches_total", ()): 11,
            ("flowsd_meters", (("state", "offline"),)): 2,
            ("flowsd_meters_never_answered", ()): 3,
            ("flowsd_meters_stale", ()): 1,
            ("flowsd_meter_polls_running", ()): 4,
            ("flowsd_meters_waiting_to_start", ()): 13,
            ("flowsd_meter_connections_in_flight", ()): 2,
            ("flowsd_meter_connects_total", ()): 50,
            ("flowsd_meter_connection_grants_total", (("lane", "backfill"),)): 5,
            ("flowsd_meter_backfill_deferred_total", ()): 6,
            ("flowsd_meter_sent_bytes_total", ()): 700,
            ("flowsd_meter_received_bytes_total", ()): 8000,
            (
                "flowsd_meter_requests_total",
                (("kind", "object"), ("outcome", "failed"), ("reason", "read_timeout")),
            ): 4,
            ("flowsd_meter_request_retries_total", ()): 2,
            ("flowsd_meter_polls_total", (("outcome", "ok"),)): 17,
            ("flowsd_meter_polls_total", (("outcome", "failed"),)): 3,
            ("flowsd_meter_breaker_probes_total", (("outcome", "ok"),)): 1,
            ("flowsd_meter_watchdog_cancellations_total", ()): 1,
            ("flowsd_meter_skipped_slots_total", ()): 12,
            ("flowsd_meter_sink_wait_seconds_total", ()): 1.5,
            ("flowsd_meter_sink_failures_total", ()): 1,
            ("flowsd_meter_observations_total", (("type", "interval_record"),)): 40,
            ("flowsd_meter_interval_gaps_total", ()): 2,
            ("flowsd_meter_event_log_overflows_total", ()): 1,
            ("flowsd_meter_event_log_rescans_total", ()): 3,
            ("flowsd_meter_event_log_invalid_records_total", ()): 4,
            ("flowsd_meter_invalid_values_total", ()): 5,
            ("flowsd_meter_breaker_transitions_total", (("transition", "came_online"),)): 1,
            (
                "flowsd_meter_commands_total",
                (("operation", "set_clock"), ("outcome", "ok")),
            ): 2,
            ("flowsd_meter_commands_running", ()): 1,
            ("flowsd_meter_commands_queued", ()): 3,
            ("flowsd_meter_commands_refused_total", (("reason", "queue_full"),)): 4,
            ("flowsd_registry_meters", ()): 12,
            ("flowsd_registry_not_dialled", (("reason", "duplicate_address"),)): 2,
            ("flowsd_registry_reloads_total", ()): 30,
            ("flowsd_registry_reload_errors_total", ()): 1,
            ("flowsd_meters_owned", ()): 10,
            ("flowsd_daemons_live", ()): 2,
            ("flowsd_lease_renewals_total", ()): 100,
            ("flowsd_lease_acquired_total", ()): 12,
            ("flowsd_lease_takeovers_total", ()): 3,
            ("flowsd_lease_handed_back_total", ()): 2,
            ("flowsd_lease_lost_total", ()): 1,
            ("flowsd_fenced_commands_total", (("source", "database"),)): 2,
            ("flowsd_fenced_commands_total", (("source", "grpc"),)): 1,
            ("flowsd_component_restarts_total", (("component", "meters"),)): 3,
            ("flowsd_component_give_ups_total", (("component", "appender"),)): 0,
            ("flowsd_ingest_state_changes_total", (("kind", "balance_changed"),)): 4,
            ("flowsd_ingest_incomplete_groups_total", (("cause", "poll_stopped"),)): 2,
            ("flowsd_ingest_unmapped_readings_total", ()): 3,
            ("flowsd_ingest_interval_gaps_total", ()): 5,
            ("flowsd_ingest_meter_log_repeats_total", ()): 6,
            ("flowsd_ingest_seed_unreadable_events_total", ()): 7,
            ("flowsd_session_state_rows_written_total", ()): 80,
            ("flowsd_session_state_write_errors_total", ()): 9,
            ("flowsd_mediator_requests_total", (("method", "read_element"), ("code", "ok"))): 5,
            ("flowsd_mediator_refusals_total", (("reason", "role"),)): 2,
            ("flowsd_projector_checkpoint_position", (("projection", "meter_csq"),)): 500,
            ("flowsd_projector_lag_events", (("projection", "meter_csq"),)): 20,
            ("flowsd_projector_lag_seconds", (("projection", "meter_csq"),)): 2.5,
            ("flowsd_projector_events_total", (("projection", "meter_csq"),)): 480,
            ("flowsd_projector_log_reads_total", (("projection", "meter_csq"),)): 3,
            ("flowsd_projector_parked_events_total", (("projection", "meter_csq"),)): 4,
            ("flowsd_projector_checkpoint_conflicts_total", (("projection", "meter_csq"),)): 1,
            ("flowsd_projector_errors_total", (("projection", "meter_csq"),)): 2,
            ("flowsd_projector_healthy", (("projection", "meter_csq"),)): 1,
            ("flowsd_projector_active", (("projection", "meter_csq"),)): 1,
        }
        for (name, labels), value in expected.items():
            assert sample_value(name, dict(labels)) == value, name
        # A projection's series exist from the start, at 0 (and 0 while it is not running).
        for family in projector_families(PROJECTORS[1:]):
            name = family.samples[0].name
            served = REGISTRY.get_sample_value(name, {"projection": "meter_registry"})
            assert served == 0, name
    finally:
        STATISTICS.detach(_families)
    assert REGISTRY.get_sample_value("flowsd_appender_queue_events") is None
