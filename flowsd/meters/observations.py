"""What the polling engine hands to its sink: a small family of frozen msgspec Structs.

Every observation names the meter (``meter_id``, ``serial`` as the registry knows it) and
when flowsd received it (``read_at``, UTC). Times that come *from the meter* (its clock,
profile-record and event timestamps) are kept exactly as the meter reported them; clock
drift is measured and reported separately (:class:`ClockDrift`), never applied to them.

The daemon maps these onto its event catalogue; this module depends only on the codec's
record types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from flowsd.emop.records import (
    IntervalStatus,
    ProfileLog1Record,
    ProfileLog2Record,
    ProfileStatus,
    Record,
)
from flowsd.meters.breaker import BreakerState, HasBreakerState

# Why a request or a poll failed. Connection-level reasons are retried within a request;
# frame-level reasons (the meter answered, but not acceptably) are final for that request.
FailureReason = Literal[
    "refused",  # TCP connection refused (meter busy, too soon after the last one, or down)
    "connect_timeout",  # no TCP connection within connect_timeout_seconds
    "unreachable",  # other connect errors (no route, network down)
    "reset",  # connection reset during the exchange
    "closed",  # the meter closed the connection without sending a byte
    "read_timeout",  # the whole frame did not arrive within read_timeout_seconds
    "truncated",  # the connection closed in the middle of a frame
    "bad_delimiter",  # first byte is not 0x7e (garbage)
    "bad_length",  # frame-length byte impossible
    "crc",  # CRC mismatch
    "nak",  # the meter refused the request (control-byte NAK code, see detail)
    "mismatch",  # a valid frame that does not answer the request (format, object id, address)
    "payload",  # the payload does not fit the object's record
    "watchdog",  # the poll made no progress within watchdog_seconds and was cancelled
    "stopped",  # the engine was stopped while the poll was running
    "internal",  # a bug in flowsd: logged with a traceback, never raised out of the session
]


class Observation(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of everything the engine emits."""

    meter_id: UUID
    serial: str | None
    read_at: datetime


class Reading(Observation, frozen=True, kw_only=True):
    """One object read from a meter, decoded by the codec.

    ``meter_time`` is set only where the object itself is a time stamped by the meter (its
    clock); ``latency_seconds`` is connect-to-last-byte of the successful attempt.
    """

    object_name: str
    object_id: int
    record: Record
    meter_time: datetime | None = None
    latency_seconds: float
    # Whose read it is: None for the run's own (poll) reads, a command's id for the reads
    # of that command, CLIENT_READS for single reads served to clients. Reads of objects
    # that only make an event together (a tariff) are assembled per lane.
    lane: UUID | None = None


class ClockDrift(Observation, frozen=True, kw_only=True):
    """The meter clock compared with local UTC when the clock was read.

    The meter's answer is assumed to be taken half way through the exchange, so
    ``local_time`` is the request midpoint; ``uncertainty_seconds`` covers half the
    round trip plus the clock's one-second resolution. Positive drift: the meter is ahead.
    """

    meter_time: datetime
    local_time: datetime
    drift_seconds: float
    uncertainty_seconds: float


class IntervalRecord(Observation, frozen=True, kw_only=True):
    """One half-hour record of profile log 1 (imports) or 2 (exports, reactive, voltage).

    ``interval_at`` is the record's own timestamp (meter time, UTC as the meter reports it).
    """

    log: Literal[1, 2]
    interval_at: datetime
    status: ProfileStatus
    record: ProfileLog1Record | ProfileLog2Record


class ThreePhaseInterval(Observation, frozen=True, kw_only=True):
    """One record of a three-phase meter's interval profile (format 0x14, SPEC §10).

    ``interval_at`` is the start of the interval: the block's start time plus the record's
    place in the block times ``interval_minutes``. ``channels`` maps each channel's object id
    to its raw value (average demand in W on P1.ax, 0.1 W on P1.cx, for the demand channels).
    """

    profile: int
    interval_at: datetime
    interval_minutes: int
    status: IntervalStatus
    channels: dict[int, int]


class IntervalGap(Observation, frozen=True, kw_only=True):
    """Half hours the meter skipped: asked for ``start``, it answered from ``end``.

    Covers ``start`` inclusive to ``end`` exclusive; the meter holds no data for them.
    ``log`` 3 is a three-phase meter's interval profile.
    """

    log: Literal[1, 2, 3]
    start: datetime
    end: datetime


class MeterLogEntry(Observation, frozen=True, kw_only=True):
    """One entry of the meter's own event log.

    Several entries can share a second, an event id and an event set; ``ordinal`` numbers
    them in the order the meter logged them (0 = first), so (meter, occurred_at, event_id,
    event_set, ordinal) identifies an entry. The event log keys entries without the ordinal,
    so it stores one of them: ordinal > 0 marks a repeat it keeps once.
    """

    occurred_at: datetime
    event_id: int
    event_set: int
    ordinal: int


class EventLogCursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where event-log reading resumes: the newest entry time already stored and the
    (event_id, event_set) of every entry stored at exactly that second (with repeats).

    Build it from stored entries with :func:`flowsd.meters.eventlog.cursor_from_entries`.
    """

    newest: datetime
    seen_at_newest: tuple[tuple[int, int], ...] = ()


class EventLogScanned(Observation, frozen=True, kw_only=True):
    """Summary of one event-log scan, emitted after its entries.

    ``cursor`` is where the next scan resumes. ``possibly_lost_before`` is set when the
    meter's 100-event window was exhausted before reaching the previous cursor: entries
    between the old cursor and that time may be gone. ``invalid_records`` counts records
    with event id 0 (invalid on real meters), which are reported here and not emitted.
    """

    pages_read: int
    new_entries: int
    cursor: EventLogCursor | None
    possibly_lost_before: datetime | None = None
    invalid_records: int = 0


class ReadFailure(Observation, frozen=True, kw_only=True):
    """One request that failed (after its retries), e.g. a NAK for an unsupported object."""

    object_name: str
    reason: FailureReason
    detail: str
    attempts: int


class SessionOutcome(Observation, HasBreakerState, frozen=True, kw_only=True):
    """The end of one poll (or breaker probe, or run of commands only) of one meter.

    ``state`` and ``transition`` are the breaker's view after the poll
    (:mod:`flowsd.meters.breaker`): ``went_offline`` when this poll made the meter cross the
    failure threshold, ``came_online`` when an offline or never-answered meter answered.
    """

    kind: Literal["poll", "probe", "commands"]
    cadences: tuple[str, ...]
    ok: bool
    reason: FailureReason | None = None
    detail: str = ""
    requests: int
    failed_requests: int
    consecutive_failures: int
    state: BreakerState
    transition: Literal["went_offline", "came_online"] | None = None
    duration_seconds: float


CommandSource = Literal["grpc", "database"]


class CommandRequested(Observation, frozen=True, kw_only=True):
    """A command that changes a meter was accepted into the meter's queue.

    ``client`` names who asked (a certificate's CN/OU, a database role and idempotency key);
    ``payload_sha256`` is a salted digest of what will be written (see
    :func:`flowsd.meters.command.payload_digest`): a top-up token never appears in clear.
    ``arguments`` holds the caller's parameters that are not secret.
    """

    command_id: UUID
    source: CommandSource
    client: str
    operation: str
    objects: tuple[str, ...]
    payload_sha256: str | None = None
    arguments: dict[str, str] = {}


class CommandOutcome(Observation, frozen=True, kw_only=True):
    """The end of one command, and of its lane of reads.

    ``recorded`` is True for commands that change the meter (they have a
    :class:`CommandRequested`); reads served to clients finish their lane with
    ``recorded`` False. ``writes_acknowledged`` of ``writes_total`` tells how far a
    multi-write sequence got (a sequence cut short is ``interrupted``); ``nak`` names the
    meter's refusal; ``reason`` is a :data:`FailureReason` or one of ``deadline``,
    ``unavailable``, ``stopped``, ``precondition``.
    """

    command_id: UUID
    lane: UUID
    operation: str
    recorded: bool
    ok: bool
    reason: str | None = None
    detail: str = ""
    nak: str | None = None
    writes_acknowledged: int = 0
    writes_total: int = 0
    readback: dict[str, str] = {}
    duration_seconds: float = 0.0

    @property
    def interrupted(self) -> bool:
        return 0 < self.writes_acknowledged < self.writes_total


ObservationT = (
    Reading
    | ClockDrift
    | IntervalRecord
    | ThreePhaseInterval
    | IntervalGap
    | MeterLogEntry
    | EventLogScanned
    | ReadFailure
    | SessionOutcome
    | CommandRequested
    | CommandOutcome
)

# The engine awaits the sink with the observations of one exchange (or one outcome); while
# the sink is blocked the session waits, so nothing read is dropped.
ObservationSink = Callable[[Sequence[Observation]], Awaitable[None]]
