"""Typed configuration: a TOML file decoded by msgspec into frozen structs.

Every setting has a default, so an empty file (or none at all) is a valid configuration.
Unknown keys and wrong types are rejected with a message naming the key and the file.
``FLOWSD_DATABASE_URL`` overrides ``[database] url`` and ``FLOWSD_INSTANCE`` ``[daemon]
instance`` (the template unit ``flowsd@.service`` sets it); ``STATE_DIRECTORY`` (set by
systemd's ``StateDirectory=``) supplies the state directory when the file does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from flowsd.emop.objects import THREE_PHASE_REGISTER_OBJECTS, THREE_PHASE_VOLTAGE_OBJECTS
from flowsd.errors import ConfigError

DATABASE_URL_ENV = "FLOWSD_DATABASE_URL"
CONFIG_PATH_ENV = "FLOWSD_CONFIG"
INSTANCE_ENV = "FLOWSD_INSTANCE"

Seconds = Annotated[float, msgspec.Meta(ge=0)]
EventLoop = Literal["uvloop", "asyncio"]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: immutable, and unknown keys are errors."""


class DatabaseConfig(_Section, frozen=True):
    # None means "start the embedded PostgreSQL under the state directory".
    url: str | None = None
    pool_min_size: PositiveInt = 2
    pool_max_size: PositiveInt = 8
    connect_timeout_seconds: Seconds = 10.0
    # Delay between reconnect attempts while the database is unavailable (doubles to the max,
    # jittered); a success of any component wakes the others at once.
    reconnect_initial_seconds: Seconds = 0.5
    reconnect_max_seconds: Seconds = 10.0
    # The server ends a daemon session left idle this long inside a transaction (a paused or
    # frozen daemon holding the append lock); 0 leaves the server's own setting.
    idle_in_transaction_timeout_seconds: Seconds = 5.0


class StateConfig(_Section, frozen=True):
    # Where the spill journal and the embedded database live. Empty: $STATE_DIRECTORY, else ./.state
    directory: str = ""


class LoggingConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: JSON when stderr is not a terminal, coloured console lines when it is.
    format: Literal["auto", "json", "console"] = "auto"


class ManagementConfig(_Section, frozen=True):
    # Address of the HTTP endpoint serving /metrics, /healthz and /readyz. Empty disables it.
    listen: str = "127.0.0.1:9469"


class MetersConfig(_Section, frozen=True):
    """How flowsd talks to meters: see config/flowsd.toml [meters] for every key."""

    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    # "per_request": a new TCP connection for every request, as the meters expect.
    # "persistent": keep one connection per meter for a whole poll (simulators, gateways).
    connection_mode: Literal["per_request", "persistent"] = "per_request"
    connect_timeout_seconds: Seconds = 10.0
    read_timeout_seconds: Seconds = 10.0
    min_gap_seconds: Seconds = 2.0
    request_attempts: PositiveInt = 5
    retry_initial_seconds: Seconds = 2.0
    retry_max_seconds: Seconds = 16.0
    max_connections_in_flight: PositiveInt = 256
    max_new_connections_per_second: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    new_connections_burst: PositiveInt = 100
    offline_after_failures: PositiveInt = 3
    probe_initial_seconds: Seconds = 60.0
    probe_max_seconds: Seconds = 3600.0
    probe_object: str = "csq_net_op"
    watchdog_seconds: Annotated[float, msgspec.Meta(gt=0)] = 180.0
    schedule_jitter_seconds: Seconds = 30.0
    schedule_tick_seconds: Annotated[float, msgspec.Meta(gt=0)] = 0.25
    backfill_max_requests_per_poll: PositiveInt = 12
    backfill_horizon_hours: PositiveInt = 168
    profile_settle_seconds: Seconds = 60.0
    event_log_max_pages: Annotated[int, msgspec.Meta(ge=1, le=10)] = 10
    stop_deadline_seconds: Seconds = 10.0


class PollConfig(_Section, frozen=True):
    """The poll plan: which objects at which cadence, per kind of hardware."""

    # Cadence name -> seconds. The lists below refer to these names.
    cadences: dict[str, Annotated[float, msgspec.Meta(gt=0)]] = msgspec.field(
        default_factory=lambda: {"half_hourly": 1800.0, "hourly": 3600.0, "daily": 86400.0}
    )
    # Cadence name -> objects (catalogue names or the groups tariffs_active, tariffs_future,
    # event_log, profile_logs) for single-phase and three-phase meters (profile_logs: logs 1
    # and 2 on single-phase meters, the interval profile on three-phase ones).
    single_phase: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {
            "half_hourly": ["profile_logs"],
            "hourly": ["prepay_balance", "csq_net_op", "instantaneous_voltage", "event_log"],
            "daily": [
                "read_element_a",
                "read_element_b",
                "tariffs_active",
                "tariffs_future",
                "time",
                "firmware_version",
                "hardware_version",
                "serial",
                "prepay_enabled_flag",
                "daylight_savings_correction_flag",
                "backlight",
                "load_switch",
            ],
        }
    )
    three_phase: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {
            "half_hourly": ["profile_logs"],
            "hourly": ["csq_net_op", *THREE_PHASE_VOLTAGE_OBJECTS],
            "daily": [
                *THREE_PHASE_REGISTER_OBJECTS,
                "time",
                "firmware_version",
                "hardware_version",
                "three_phase_hardware_configuration",
                "three_phase_serial",
                "backlight",
            ],
        }
    )


class AppenderConfig(_Section, frozen=True):
    """The event appender: group commit, back-pressure and the spill journal."""

    # Events accepted but not yet taken by the appender; producers wait when it is full.
    queue_size: PositiveInt = 10_000
    # A batch is committed when it holds this many events or flush_interval after its first.
    batch_max: PositiveInt = 2_000
    flush_interval_seconds: Seconds = 0.2
    # While the database is unreachable, events wait in memory up to this many, then go to
    # the spill journal under the state directory (fsync'd per write).
    memory_max_events: PositiveInt = 50_000
    spill_segment_max_bytes: PositiveInt = 16 * 1024 * 1024
    # Committed batches buffered per in-process subscriber before it must catch up by reading.
    subscriber_max_batches: PositiveInt = 256
    # Guards on the appender's session (no append transaction may hold the log for long).
    statement_timeout_seconds: Seconds = 30.0
    lock_timeout_seconds: Seconds = 10.0


class IngestConfig(_Section, frozen=True):
    """How readings become events: see config/flowsd.toml [ingest]."""

    # |meter clock - local clock| at or above this raises a clock-drift state change.
    clock_drift_threshold_seconds: Annotated[float, msgspec.Meta(gt=0)] = 20.0


class DaemonConfig(_Section, frozen=True):
    """The daemon's own housekeeping: see config/flowsd.toml [daemon]."""

    # meter_registry is re-read this often, and soon after a NOTIFY from its trigger.
    registry_reload_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Per-meter session state and the heartbeat row are written in batches this often.
    state_flush_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # On SIGTERM: at most this long to commit (or spill) the queued events.
    drain_seconds: Seconds = 30.0
    # A one-line fleet summary in the log this often; 0 disables it.
    summary_seconds: Seconds = 0.0
    # Name of this daemon's heartbeat row; empty: the host name.
    instance: str = ""
    # The event loop: uvloop (libuv, in C), or asyncio's own (for its debug mode).
    event_loop: EventLoop = "uvloop"
    # A component failing unexpectedly is restarted after a delay doubling from the first
    # value to the second; failing restart_limit times within restart_window_seconds, it
    # makes the daemon stop (queued events committed or spilled) with exit status 1.
    restart_initial_seconds: Seconds = 1.0
    restart_max_seconds: Seconds = 30.0
    restart_limit: PositiveInt = 10
    restart_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 600.0


class ProjectionsConfig(_Section, frozen=True):
    """The projector runner (flowsd.projections): batching, wake-ups, parking."""

    # Projections to run; empty means all of them (names as in `flowsd replay --projection`).
    enabled: list[str] = msgspec.field(default_factory=list)
    # Events per transaction: starts at batch_min near the head, doubles while behind.
    batch_min: PositiveInt = 500
    batch_max: PositiveInt = 20_000
    # Live: batches arriving within this long of the first are applied in one transaction
    # (fewer commits and checkpoint writes; projections lag by up to this much more). 0: off.
    merge_seconds: Seconds = 1.0
    # Fallback poll of the log head when no NOTIFY or in-process batch arrived; the LISTEN
    # connection (and the projections' locks, flowsd.projections.leadership) is checked every
    # max(poll_interval_seconds, 1) seconds.
    poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # A projector whose checkpoint has not moved for this long while behind is not ready.
    stall_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Delay before retrying a batch after a database error (doubles up to the max).
    retry_initial_seconds: Seconds = 0.5
    retry_max_seconds: Seconds = 30.0


Role = Literal["writer", "reader", "info", "none"]


class MediatorConfig(_Section, frozen=True):
    """The mediator gRPC API (flowsd.mediator): see config/flowsd.toml [mediator]."""

    # host:port to serve the API on; empty: off. Without TLS only a loopback address.
    listen: str = ""
    # Mutual TLS: the server's certificate chain and key, and the CA that signs clients'.
    tls_certificate: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # With TLS, a client's role comes from its certificate's OU, or its CN (client_roles).
    writer_units: list[str] = msgspec.field(default_factory=lambda: ["internal"])
    reader_units: list[str] = msgspec.field(default_factory=lambda: ["partner"])
    info_units: list[str] = msgspec.field(default_factory=lambda: ["readonly"])
    default_role: Role = "writer"
    client_roles: dict[str, Role] = msgspec.field(default_factory=dict)
    # CN -> ESCO codes: such a client reaches only the meters of those ESCOs.
    client_escos: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # Longest a request waits for its meter when the client set no deadline.
    max_wait_seconds: Annotated[float, msgspec.Meta(gt=0)] = 75.0


class CommandsConfig(_Section, frozen=True):
    """Commands for meters (gRPC, the command table, the CLI): see config/flowsd.toml."""

    # Commands waiting per meter; a full queue refuses (gRPC RESOURCE_EXHAUSTED).
    queue_size: PositiveInt = 16
    # Raw future-tariff writes arrive one request at a time: the tariff is read back once
    # no such write came for this long.
    readback_settle_seconds: Seconds = 10.0
    # Run the commands of flowsd.meter_command (woken by NOTIFY; this is the fallback poll).
    table: bool = True
    table_poll_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0


class LeasesConfig(_Section, frozen=True):
    """Sharing the fleet between daemons (flowsd.meters.ownership): see config/flowsd.toml."""

    # A meter's lease lasts this long from its last renewal; a daemon silent for this long is
    # no longer counted live, and its meters are taken over by the others.
    lease_seconds: Annotated[float, msgspec.Meta(ge=0.5)] = 30.0
    # Leases are renewed (and shares rebalanced) this often; 0: a third of lease_seconds.
    renew_seconds: Seconds = 0.0


class Config(_Section, frozen=True):
    database: DatabaseConfig = DatabaseConfig()
    state: StateConfig = StateConfig()
    logging: LoggingConfig = LoggingConfig()
    management: ManagementConfig = ManagementConfig()
    meters: MetersConfig = MetersConfig()
    poll: PollConfig = PollConfig()
    appender: AppenderConfig = AppenderConfig()
    projections: ProjectionsConfig = ProjectionsConfig()
    ingest: IngestConfig = IngestConfig()
    daemon: DaemonConfig = DaemonConfig()
    mediator: MediatorConfig = MediatorConfig()
    commands: CommandsConfig = CommandsConfig()
    leases: LeasesConfig = LeasesConfig()

    @property
    def state_directory(self) -> Path:
        if self.state.directory:
            return Path(self.state.directory)
        return Path(os.environ.get("STATE_DIRECTORY") or ".state")


def decode_config(text: str | bytes, *, source: str = "<config>") -> Config:
    """Decode TOML text into a :class:`Config`, naming ``source`` in any error."""
    try:
        return msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.database.pool_max_size`"; operators think in TOML keys.
    message = str(exc)
    head, sep, where = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"key '{where.rstrip('`')}': {head}"


def load_config(path: str | Path | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load the configuration from ``path`` (or ``$FLOWSD_CONFIG``) and apply env overrides.

    With neither, the built-in defaults are used: the embedded database and ./.state.
    """
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_PATH_ENV)
    if chosen:
        file = Path(chosen)
        try:
            text = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read configuration: {exc.strerror}") from None
        config = decode_config(text, source=str(file))
    else:
        config = Config()
    url = env.get(DATABASE_URL_ENV)
    if url:
        config = msgspec.structs.replace(
            config, database=msgspec.structs.replace(config.database, url=url)
        )
    instance = env.get(INSTANCE_ENV)
    if instance:
        config = msgspec.structs.replace(
            config, daemon=msgspec.structs.replace(config.daemon, instance=instance)
        )
    return config


def with_database_url(config: Config, url: str | None) -> Config:
    """Return ``config`` with the database URL replaced when ``url`` is given (CLI flag)."""
    if not url:
        return config
    return msgspec.structs.replace(
        config, database=msgspec.structs.replace(config.database, url=url)
    )
