"""The event catalogue: every event flowsd appends to ``flows.meter_event_log``.

An :class:`Event` is an envelope (which meter, when it was observed, when flowsd read it) around
a *body*, one of the tagged :class:`EventBody` structs below. The body is what goes into the
``payload`` JSONB column; the envelope fills the table's own columns:

=====================  ========================================================================
column                 source
=====================  ========================================================================
``position``           assigned by the database at commit (global, gap-safe order)
``meter_id``           :attr:`Event.meter_id` (FK to ``meter_registry``)
``timestamp``          :attr:`Event.observed_at`: meter time where the meter gives one (profile
                       records, meter-native log entries), else the time of the read
``event_type``         ``body.TYPE_ID`` (Emlite id for meter-native entries, 1000+ for flowsd's)
``event_set``          the meter's ``event_set`` for meter-native entries, NULL otherwise
``read_at``            :attr:`Event.read_at`: when flowsd received the answer
``recorded_at``        set by the database: the start of the append transaction
``payload``            ``msgspec.json`` of the body (NULL for meter-native entries: the columns
                       hold everything)
``idempotency_key``    :meth:`Event.idempotency_key`, unique in the table
=====================  ========================================================================

Units (one rule, visible in every field name): exact values, never floats.
Money is ``Decimal`` GBP (``*_gbp``; encoded as JSON strings such as ``"0.51082"``), energy is
integer Wh / varh (``*_wh``, ``*_varh``) as the meter counts it, voltage is ``Decimal`` volts
(``*_v``), durations are seconds, times are timezone-aware UTC (a meter's naive clock is
interpreted as UTC, as the reference client does), except ``activation_datetime`` which is the
meter's own naive local setting. Three-phase energy totals keep the meter's raw counts plus
``counts_per_kwh`` because the scale depends on the hardware (1000 for P1.ax, 10000 for P1.cx).

Type ids (``meter_event_log_type`` names in brackets):

* 1–255: meter-native event-log entries, Emlite's own ids (``BM_OVER_CURRENT`` …), one body
  class :class:`MeterLogEntry`.
* 1001–1099 readings: 1001 :class:`BalanceRead` (``BALANCE_READ``), 1002
  :class:`SignalQualityRead` (``SIGNAL_QUALITY_READ``), 1003 :class:`VoltageRead`, 1004
  :class:`ThreePhaseVoltageRead`, 1005 :class:`ClockRead`, 1006 :class:`RegisterRead`, 1007
  :class:`ThreePhaseRegisterRead`, 1008 :class:`ActiveTariffRead`, 1009 :class:`FutureTariffRead`,
  1010 :class:`IdentityRead`, 1011 :class:`FlagsRead`, 1012 :class:`BacklightRead`, 1013
  :class:`LoadSwitchRead`, 1014 :class:`ProfileLog1Record`, 1015 :class:`ProfileLog2Record`,
  1016 :class:`ThreePhaseIntervalRecord`.
* 1101–1199 state changes: 1101 :class:`BalanceChanged`, 1102 :class:`FutureTariffChanged`,
  1103 :class:`TariffActivated`, 1104 :class:`MeterWentOffline`, 1105 :class:`MeterCameOnline`,
  1106 :class:`HealthChanged`, 1107 :class:`FirmwareChanged`, 1108 :class:`HardwareChanged`,
  1109 :class:`SerialChanged`, 1110 :class:`PrepayModeChanged`, 1111
  :class:`ClockDriftThresholdCrossed`, 1112 :class:`DaylightSavingsCorrectionChanged`.
* 1201–1299 commands: 1201 :class:`CommandRequested`, 1202 :class:`CommandSucceeded`, 1203
  :class:`CommandFailed` (a write, a top-up, a clock set, a future tariff, prepay mode, ...;
  what a command changed shows in the reading events of its read-back).

The SQL name of each type is the tag in upper case (``balance_read`` -> ``BALANCE_READ``).

Versioning rules (the log is never rewritten, so old payloads must decode forever):

* a tag and a type id, once published, never change meaning;
* a field may be added only with a default, so payloads written before it still decode;
  readers ignore fields they do not know, so payloads written by newer code decode too;
* a field is never removed, renamed or retyped; an incompatible change is a new type (new tag,
  new id) and the old one keeps decoding.

Idempotency: :meth:`Event.idempotency_key` is a UUID derived only from meter facts: meter id,
type id, observed time (microseconds since the Unix epoch) and the body's
:meth:`EventBody.discriminator` (an md5 of them, led by the observed time in milliseconds so
the unique index grows at its end). The same observation read twice gives the same key, so the
database ignores the second append. For meter-native entries the formula is reproduced in SQL
(``flowsd.event_idempotency_key``, used by the migration that widens production rows), so
re-reading a meter after an upgrade does not duplicate its old log entries.
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, get_args

import msgspec
from asyncpg.pgproto.pgproto import UUID as FastUUID  # noqa: N811 (a class)

HealthStatus = Literal["healthy", "unhealthy"]
Element = Literal["A", "B", "SINGLE"]

# The first id of each reserved range, for SQL and documentation.
NATIVE_TYPE_ID_MAX = 999
READING_TYPE_IDS = range(1001, 1100)
STATE_CHANGE_TYPE_IDS = range(1101, 1200)
COMMAND_TYPE_IDS = range(1201, 1300)

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECONDS_MASK = 0xFFFF_FFFF_FFFF


def _fastest_md5() -> Callable[[bytes], Any]:
    # CPython's own md5 costs about 60 % of OpenSSL's per call on inputs this short (no
    # EVP context to set up); interpreters built without it fall back to OpenSSL's.
    try:
        md5: Callable[[bytes], Any] = importlib.import_module("_md5").md5
    except ImportError:
        return lambda data: hashlib.md5(data, usedforsecurity=False)
    return md5


_md5 = _fastest_md5()


class EventBody(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event body. Subclasses set a tag and ``TYPE_ID``; ``NAME`` (the
    catalogue's name) is the tag in capitals, set below once every body class exists."""

    TYPE_ID: ClassVar[int]
    NAME: ClassVar[str]

    def discriminator(self) -> str:
        """What, besides meter, type and observed time, tells two observations apart."""
        return ""

    def type_id(self) -> int:
        return self.TYPE_ID


# --- shared value structs (untagged, nested inside bodies) ---------------------------------


class ActiveTariff(msgspec.Struct, frozen=True, kw_only=True):
    """The tariff in force on a meter (``meter_shadows.tariffs_active``), money in GBP."""

    standing_charge_gbp: Decimal  # per day
    unit_rate_a_gbp: Decimal  # per kWh, element A (the active price)
    unit_rate_b_gbp: Decimal  # per kWh, element B
    emergency_credit_gbp: Decimal
    ecredit_availability_gbp: Decimal
    debt_recovery_rate_gbp: Decimal  # per day
    # threshold_mask[i] is rate (i + 1); threshold_values[i] is th(i + 1).
    threshold_mask: tuple[bool, ...] = ()
    threshold_values: tuple[int, ...] = ()
    block_rate: int | None = None
    tou_rate: int | None = None
    element_b_tou_rate: int | None = None
    block_8_rate_1_gbp: Decimal | None = None


class FutureTariff(msgspec.Struct, frozen=True, kw_only=True):
    """The tariff programmed to activate later (``meter_shadows.tariffs_future``)."""

    standing_charge_gbp: Decimal
    unit_rate_a_gbp: Decimal  # block 8 rate 1
    unit_rate_b_gbp: Decimal  # element B TOU rate 1
    emergency_credit_gbp: Decimal
    ecredit_availability_gbp: Decimal
    debt_recovery_rate_gbp: Decimal
    # The meter's own setting, naive: UTC, or UK local time with DST correction enabled.
    activation_datetime: datetime | None = None
    threshold_mask: tuple[bool, ...] = ()
    threshold_values: tuple[int, ...] = ()


# --- meter-native event-log entries ---------------------------------------------------------


class MeterLogEntry(EventBody, frozen=True, tag="meter_log_entry"):
    """One record of the meter's own event log; ``observed_at`` is its meter timestamp.

    Its type id is Emlite's ``event_id`` (``emlite_type_id``), not a fixed class id.
    """

    TYPE_ID: ClassVar[int] = 0

    emlite_type_id: int
    event_set: int

    def type_id(self) -> int:
        return self.emlite_type_id

    def discriminator(self) -> str:
        return str(self.event_set)


# --- readings (1001-1099) -------------------------------------------------------------------


class BalanceRead(EventBody, frozen=True, tag="balance_read"):
    """Prepay balance (negative = debt); emergency credit in use when the meter reports it."""

    TYPE_ID: ClassVar[int] = 1001

    balance_gbp: Decimal
    emergency_credit_gbp: Decimal | None = None


class SignalQualityRead(EventBody, frozen=True, tag="signal_quality_read"):
    """Cellular CSQ (0-31) and network operator code from ``csq_net_op``."""

    TYPE_ID: ClassVar[int] = 1002

    csq: int
    network_operator: int | None = None


class VoltageRead(EventBody, frozen=True, tag="voltage_read"):
    """Single-phase instantaneous voltage."""

    TYPE_ID: ClassVar[int] = 1003

    voltage_v: Decimal


class ThreePhaseVoltageRead(EventBody, frozen=True, tag="three_phase_voltage_read"):
    """Three-phase instantaneous voltages; a phase whose read failed is None."""

    TYPE_ID: ClassVar[int] = 1004

    l1_v: Decimal | None
    l2_v: Decimal | None
    l3_v: Decimal | None


class ClockRead(EventBody, frozen=True, tag="clock_read"):
    """The meter's clock. ``observed_at`` is the read time (a drifting clock must not move the
    observation in time); ``drift_seconds`` = meter_time - read time, signed."""

    TYPE_ID: ClassVar[int] = 1005

    meter_time: datetime
    drift_seconds: float


class RegisterRead(EventBody, frozen=True, tag="register_read"):
    """Cumulative register values of one element (``read_element_a``/``_b``)."""

    TYPE_ID: ClassVar[int] = 1006

    element: Element
    import_active_wh: int
    export_active_wh: int
    import_reactive_varh: int | None = None
    export_reactive_varh: int | None = None

    def discriminator(self) -> str:
        return self.element


class ThreePhaseRegisterRead(EventBody, frozen=True, tag="three_phase_register_read"):
    """Three-phase total registers as raw meter counts; kWh = count / ``counts_per_kwh``."""

    TYPE_ID: ClassVar[int] = 1007

    counts_per_kwh: int
    active_import: int | None
    active_export: int | None
    reactive_import: int | None = None
    reactive_export: int | None = None
    apparent_import: int | None = None
    apparent_export: int | None = None


class ActiveTariffRead(EventBody, frozen=True, tag="active_tariff_read"):
    TYPE_ID: ClassVar[int] = 1008

    tariff: ActiveTariff


class FutureTariffRead(EventBody, frozen=True, tag="future_tariff_read"):
    TYPE_ID: ClassVar[int] = 1009

    tariff: FutureTariff


class IdentityRead(EventBody, frozen=True, tag="identity_read"):
    """Serial, hardware and firmware; a field not read in this poll is None.

    ``hardware`` is the production code (``C1.w``, ``P1.ax`` ...), ``hardware_raw`` the
    meter's string; ``firmware_version`` is formatted as production does (``3_03_2``).
    """

    TYPE_ID: ClassVar[int] = 1010

    serial: str | None = None
    hardware: str | None = None
    hardware_raw: str | None = None
    firmware_version: str | None = None


class FlagsRead(EventBody, frozen=True, tag="flags_read"):
    """The meter's boolean settings; a flag not read in this poll is None."""

    TYPE_ID: ClassVar[int] = 1011

    prepay_enabled: bool | None = None
    daylight_savings_correction_enabled: bool | None = None
    no_debt_recovery_in_emergency_credit: bool | None = None
    no_standing_charge_in_power_fail: bool | None = None


class BacklightRead(EventBody, frozen=True, tag="backlight_read"):
    """``setting`` as production stores it (``normal_sp``, ``always_off_3p`` ...), None when
    the raw value is unknown."""

    TYPE_ID: ClassVar[int] = 1012

    raw: int
    setting: str | None


class LoadSwitchRead(EventBody, frozen=True, tag="load_switch_read"):
    TYPE_ID: ClassVar[int] = 1013

    raw: int
    setting: str | None


class _ProfileStatus(EventBody, frozen=True):
    """Status word of a profile record, kept raw (wire bytes 0 and 1 as ``byte0 << 8 | byte1``)."""

    TYPE_ID: ClassVar[int] = -1

    status: int

    @property
    def valid(self) -> bool:
        return bool(self.status & 0x0080)

    @property
    def power_fail(self) -> bool:
        return bool(self.status & 0x0040)

    @property
    def time_error(self) -> bool:
        return bool(self.status & 0x0030)

    @property
    def reset(self) -> bool:
        return bool(self.status & 0x0100)


class ProfileLog1Record(_ProfileStatus, frozen=True, tag="profile_log_1_record"):
    """Half-hourly profile log 1: cumulative import Wh at ``observed_at`` (the record's time)."""

    TYPE_ID: ClassVar[int] = 1014

    import_a_wh: int
    import_b_wh: int | None = None


class ProfileLog2Record(_ProfileStatus, frozen=True, tag="profile_log_2_record"):
    """Half-hourly profile log 2: export and reactive registers (element B on twin meters)."""

    TYPE_ID: ClassVar[int] = 1015

    export_a_wh: int
    reactive_import_a_varh: int
    reactive_export_a_varh: int
    voltage_raw: int | None = None
    export_b_wh: int | None = None
    reactive_import_b_varh: int | None = None
    reactive_export_b_varh: int | None = None


class ThreePhaseIntervalRecord(EventBody, frozen=True, tag="three_phase_interval_record"):
    """One record of the three-phase interval profile, ``observed_at`` the start of its
    interval; ``values`` maps the channel's object id (hex, e.g. ``"d79600"``) to its raw
    value, in the meter's scale: ``counts_per_kwh`` 1000 means W for the demand channels
    (Wh for the energy registers), 10000 means 0.1 W (0.1 Wh) on CT-operated meters."""

    TYPE_ID: ClassVar[int] = 1016

    profile: int
    interval_minutes: int
    status: int
    counts_per_kwh: int
    values: dict[str, int]

    def discriminator(self) -> str:
        return str(self.profile)


# --- state changes (1101-1199) ---------------------------------------------------------------


class BalanceChanged(EventBody, frozen=True, tag="balance_changed"):
    TYPE_ID: ClassVar[int] = 1101

    previous_gbp: Decimal | None
    balance_gbp: Decimal


class FutureTariffChanged(EventBody, frozen=True, tag="future_tariff_changed"):
    TYPE_ID: ClassVar[int] = 1102

    previous: FutureTariff | None
    tariff: FutureTariff


class TariffActivated(EventBody, frozen=True, tag="tariff_activated"):
    """The active tariff differs from the last one seen (typically a future tariff swapped in)."""

    TYPE_ID: ClassVar[int] = 1103

    previous: ActiveTariff | None
    tariff: ActiveTariff


class MeterWentOffline(EventBody, frozen=True, tag="meter_went_offline"):
    TYPE_ID: ClassVar[int] = 1104

    consecutive_failures: int
    last_error: str
    last_answer_at: datetime | None = None


class MeterCameOnline(EventBody, frozen=True, tag="meter_came_online"):
    TYPE_ID: ClassVar[int] = 1105

    offline_since: datetime | None = None


class HealthChanged(EventBody, frozen=True, tag="health_changed"):
    TYPE_ID: ClassVar[int] = 1106

    previous: HealthStatus | None
    health: HealthStatus
    details: str = ""


class FirmwareChanged(EventBody, frozen=True, tag="firmware_changed"):
    TYPE_ID: ClassVar[int] = 1107

    previous: str | None
    firmware_version: str


class HardwareChanged(EventBody, frozen=True, tag="hardware_changed"):
    TYPE_ID: ClassVar[int] = 1108

    previous: str | None
    hardware: str


class SerialChanged(EventBody, frozen=True, tag="serial_changed"):
    TYPE_ID: ClassVar[int] = 1109

    previous: str | None
    serial: str


class PrepayModeChanged(EventBody, frozen=True, tag="prepay_mode_changed"):
    TYPE_ID: ClassVar[int] = 1110

    previous: bool | None
    prepay_enabled: bool


class ClockDriftThresholdCrossed(EventBody, frozen=True, tag="clock_drift_threshold_crossed"):
    """``above`` is True when |drift| rose to the threshold or beyond, False when it fell back."""

    TYPE_ID: ClassVar[int] = 1111

    drift_seconds: float
    threshold_seconds: float
    above: bool


class DaylightSavingsCorrectionChanged(
    EventBody, frozen=True, tag="daylight_savings_correction_changed"
):
    TYPE_ID: ClassVar[int] = 1112

    previous: bool | None
    enabled: bool


# --- commands (1201-1299) --------------------------------------------------------------------


class CommandRequested(EventBody, frozen=True, tag="command_requested"):
    """A command that changes a meter was accepted for it (gRPC, command table, CLI).

    ``client``: who asked (certificate CN/OU, or database role and idempotency key);
    ``payload_sha256``: ``sha256(meter id | payload ...)`` of the writes, so a token is never
    stored in clear yet the same token sent twice is recognisable; ``arguments``: the
    caller's parameters that are not secret (a tariff's prices, a flag's value).
    """

    TYPE_ID: ClassVar[int] = 1201

    command_id: uuid.UUID
    source: str
    client: str
    operation: str
    objects: tuple[str, ...]
    payload_sha256: str | None = None
    arguments: dict[str, str] = {}

    def discriminator(self) -> str:
        return str(self.command_id)


class CommandSucceeded(EventBody, frozen=True, tag="command_succeeded"):
    """The meter acknowledged every write; ``readback`` holds what was read back (and read
    before, prefixed ``before:``) as operators read it, e.g. the balance after a top-up."""

    TYPE_ID: ClassVar[int] = 1202

    command_id: uuid.UUID
    operation: str
    writes: int
    readback: dict[str, str] = {}
    duration_seconds: float = 0.0

    def discriminator(self) -> str:
        return str(self.command_id)


class CommandFailed(EventBody, frozen=True, tag="command_failed"):
    """The command did not complete. ``nak`` names the meter's refusal (a spent token:
    ``SECURITY_NOT_GRANTED``); ``reason`` is the failure reason (``nak``, a transport
    reason, ``deadline``, ``unavailable``, ``stopped``, ``precondition``, ``interrupted``).
    ``writes_acknowledged`` of ``writes_total`` shows how far a sequence got: an
    ``interrupted`` sequence left the meter part-written, and its read-back follows."""

    TYPE_ID: ClassVar[int] = 1203

    command_id: uuid.UUID
    operation: str
    reason: str
    detail: str = ""
    nak: str | None = None
    writes_acknowledged: int = 0
    writes_total: int = 0
    interrupted: bool = False
    readback: dict[str, str] = {}
    duration_seconds: float = 0.0

    def discriminator(self) -> str:
        return str(self.command_id)


# Every body this version of flowsd writes. The order is irrelevant; ids and tags are unique.
AnyBody: TypeAlias = (
    MeterLogEntry
    | BalanceRead
    | SignalQualityRead
    | VoltageRead
    | ThreePhaseVoltageRead
    | ClockRead
    | RegisterRead
    | ThreePhaseRegisterRead
    | ActiveTariffRead
    | FutureTariffRead
    | IdentityRead
    | FlagsRead
    | BacklightRead
    | LoadSwitchRead
    | ProfileLog1Record
    | ProfileLog2Record
    | ThreePhaseIntervalRecord
    | BalanceChanged
    | FutureTariffChanged
    | TariffActivated
    | MeterWentOffline
    | MeterCameOnline
    | HealthChanged
    | FirmwareChanged
    | HardwareChanged
    | SerialChanged
    | PrepayModeChanged
    | ClockDriftThresholdCrossed
    | DaylightSavingsCorrectionChanged
    | CommandRequested
    | CommandSucceeded
    | CommandFailed
)

BODY_CLASSES: tuple[type[EventBody], ...] = get_args(AnyBody)
for _cls in BODY_CLASSES:
    # msgspec fixes the tag only after the class body ran, so it cannot be read there.
    _cls.NAME = str(_cls.__struct_config__.tag).upper()
# flowsd's own types by id (meter-native entries are all MeterLogEntry, see body_class_for).
BODY_CLASS_BY_TYPE_ID: dict[int, type[EventBody]] = {
    cls.TYPE_ID: cls for cls in BODY_CLASSES if cls is not MeterLogEntry
}


def body_class_for(type_id: int) -> type[EventBody] | None:
    """The body class of a stored ``event_type``; None for an id this version does not know."""
    if 0 < type_id <= NATIVE_TYPE_ID_MAX:
        return MeterLogEntry
    return BODY_CLASS_BY_TYPE_ID.get(type_id)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event: envelope plus body. Construct it where the observation is made."""

    meter_id: uuid.UUID
    observed_at: datetime
    read_at: datetime | None
    body: AnyBody

    @property
    def type_id(self) -> int:
        return self.body.type_id()

    def idempotency_key(self) -> uuid.UUID:
        return idempotency_key(
            self.meter_id, self.type_id, self.observed_at, self.body.discriminator()
        )


class UnknownBody(msgspec.Struct, frozen=True, kw_only=True):
    """A stored event whose type this version of flowsd does not know (written by a newer one)."""

    type_id: int
    payload: bytes | None


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event as committed: its global ``position`` and the database's ``recorded_at``.

    Not tracked by the garbage collector (``gc=False``): an append returns thousands at once,
    and tracking them made the collector traverse every batch several times. Safe because a
    recorded event cannot be part of a reference cycle: it is frozen, and its fields (numbers,
    datetimes, uuids, a frozen body whose only containers hold strings and numbers) cannot
    refer back to it.
    """

    position: int
    recorded_at: datetime
    meter_id: uuid.UUID
    observed_at: datetime
    read_at: datetime | None
    body: AnyBody | UnknownBody
    idempotency_key: uuid.UUID


def epoch_microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _UNIX_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_Derived = TypeVar("_Derived")


class MeterCache(dict[uuid.UUID, _Derived]):
    """``cache[meter_id]``: a value derived from a meter id, computed once per id.

    A plain dict (an ``lru_cache`` entry costs a link, an argument tuple and a dict entry,
    about 100 bytes a meter more), emptied when it holds ``limit`` ids: a fleet is a bounded
    set of meters, and the ones that left drop out then."""

    __slots__ = ("derive", "limit")

    def __init__(self, derive: Callable[[uuid.UUID], _Derived], limit: int = 1 << 16) -> None:
        super().__init__()
        self.derive = derive
        self.limit = limit

    def __missing__(self, meter_id: uuid.UUID) -> _Derived:
        if len(self) >= self.limit:
            self.clear()
        value = self[meter_id] = self.derive(meter_id)
        return value


# ``str(meter_id)``, cached: a noticeable share of key derivation.
meter_text: Callable[[uuid.UUID], str] = MeterCache(str).__getitem__


# What identifies an observation: meter, type id, observed time, the body's discriminator.
KeyParts: TypeAlias = tuple[uuid.UUID, int, datetime, str]


def idempotency_key(
    meter_id: uuid.UUID, type_id: int, observed_at: datetime, discriminator: str = ""
) -> uuid.UUID:
    """The observation's key: 48 bits of observed time (ms), then 80 bits of an md5.

    ``md5("<meter uuid>|<type id>|<epoch µs>|<discriminator>")`` identifies the observation;
    its first 6 bytes are replaced by the observed time in milliseconds (big-endian, as in a
    UUIDv7), so keys of recent events sit together at the end of the unique index instead of
    landing on random index pages. The SQL twin is ``flowsd.event_idempotency_key`` (migration
    0002). md5 is used for its availability in SQL, not for security: keys are not adversarial.
    Computed by :func:`idempotency_key_bytes`, which keys a whole batch at once.

    The result is asyncpg's ``UUID`` (a :class:`uuid.UUID` subclass, equal and hashing alike),
    about ten times cheaper to build and sent to PostgreSQL without conversion.
    """
    keys: list[bytes] = []
    idempotency_key_bytes(((meter_id, type_id, observed_at, discriminator),), keys, [])
    key: uuid.UUID = FastUUID(keys[0])
    return key


def idempotency_key_bytes(
    observations: Iterable[KeyParts], keys: list[bytes], observed_us: list[int]
) -> None:
    """Append the 16 bytes of each observation's :func:`idempotency_key` to ``keys`` and its
    observed time in microseconds since 1970 (as :func:`epoch_microseconds`) to
    ``observed_us``.

    The one implementation of the key, written as one loop over a batch (an append keys
    thousands of events, and function calls per event were a third of its cost).
    """
    md5 = _md5
    text = meter_text
    microseconds = epoch_microseconds
    add_key = keys.append
    add_observed = observed_us.append
    for meter_id, type_id, moment, discriminator in observations:
        epoch_us = microseconds(moment)
        digest = md5(f"{text(meter_id)}|{type_id}|{epoch_us}|{discriminator}".encode()).digest()
        add_key(((epoch_us // 1000) & _MILLISECONDS_MASK).to_bytes(6, "big") + digest[6:])
        add_observed(epoch_us)


def catalogue() -> list[tuple[int, str]]:
    """(type id, name) of flowsd's own types, as seeded into ``meter_event_log_type``."""
    return sorted((cls.TYPE_ID, cls.NAME) for cls in BODY_CLASS_BY_TYPE_ID.values())
