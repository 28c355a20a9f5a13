"""What a meter answers to one request frame: a NAK code, or the codec record to send.

Single-phase kinds answer the single-phase objects, profile logs and the event log;
three-phase kinds answer their totals, phase voltages and interval profile, return an
empty (or NAK'd) hardware string, and NAK everything prepay. Unknown objects get NAK 5,
writes to objects that cannot be written NAK 6, malformed requests NAK 2/3, requests
addressed to another meter NAK 7. Requests are parsed by the codec; reads are answered by
:mod:`flowsd.sim.readers`, writes applied by :mod:`flowsd.sim.writes`; the logs and
intervals are built here as codec records.
"""

from __future__ import annotations

from typing import NamedTuple

from flowsd.emop import (
    EventLogRequest,
    Format,
    Frame,
    NakCode,
    PayloadError,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ThreePhaseIntervalsRequest,
    WriteRequest,
    object_id,
    parse_request,
)
from flowsd.emop.records import (
    IntervalRecord,
    IntervalStatus,
    ProfileLog1,
    ProfileLog1Record,
    ProfileLog2,
    ProfileLog2Record,
    ProfileLog2SingleRecord,
    ProfileLog2TwinRecord,
    ProfileStatus,
    Record,
    ThreePhaseIntervals,
)
from flowsd.emop.records.eventlog import EVENT_LOG_BLOCKS
from flowsd.sim.model import MeterModel, ProfileRecord, RecordStatus
from flowsd.sim.readers import SINGLE_PHASE_READERS, THREE_PHASE_READERS, event_block
from flowsd.sim.state import FleetState
from flowsd.sim.writes import WriteTarget, apply_write

_INTERVAL_CHANNELS = tuple(object_id(n) for n in (
    "active_import_demand", "active_export_demand", "reactive_import_demand",
    "reactive_export_demand",
))  # fmt: skip
_MAX_INTERVALS = 12  # what fits in one frame with four channels
_INTERVAL_MINUTES = 30
_RESET_PROFILE = 0xFF
BROADCAST = 0xFFFFFF
# Records per profile-log response: log 1 sends 5 (the reference decodes 4), log 2 sends
# 3 single-element or 2 twin-element records, as the SPEC's captures and vectors show.
LOG1_RECORDS = 5
LOG2_RECORDS = {False: 3, True: 2}
# Shortest data field a request of each format can be; shorter ones are NAK'd.
_MIN_DATA: dict[int, int] = {
    Format.DEFAULT: 5,
    Format.PROFILE_LOG_1: 5,
    Format.PROFILE_LOG_2: 5,
    Format.EVENT_LOG: 5,
    Format.THREE_PHASE_INTERVALS: 14,
}
_SINGLE_PHASE_FORMATS = (Format.PROFILE_LOG_1, Format.PROFILE_LOG_2, Format.EVENT_LOG)
_U32 = 0xFFFFFFFF


class Answer(NamedTuple):
    """A NAK code (0 = OK) and, for OK, the typed request and the body answering it."""

    nak: int
    request: Request | None = None
    body: Record | bytes = b""


def respond(state: FleetState, index: int, frame: Frame, now: float) -> Answer:
    """The answer of meter ``index`` at ``now`` to the request ``frame``."""
    identity = state.identity(index)
    if frame.destination.address not in (0, identity.meter_address, BROADCAST):
        return Answer(NakCode.FRAME_ADDRESS_INCORRECT)
    fmt = frame.format
    three_phase = identity.hardware.three_phase
    if (fmt in _SINGLE_PHASE_FORMATS and three_phase) or (
        fmt == Format.THREE_PHASE_INTERVALS and not three_phase
    ):
        return Answer(NakCode.OBJECT_NOT_RECOGNISED)
    shortest = _MIN_DATA.get(fmt)
    if shortest is None:
        return Answer(NakCode.FORMAT_ERROR)
    if len(frame.data) < shortest:
        short = NakCode.FORMAT_ERROR if fmt == Format.EVENT_LOG else NakCode.FRAME_LENGTH_INCORRECT
        return Answer(short)
    try:
        request = parse_request(frame)
    except PayloadError:  # a read/write flag that is neither, a wrong event-log object
        return Answer(NakCode.FORMAT_ERROR)
    model = state.model(index)
    match request:
        case ReadRequest(object_id=oid):
            reader = (THREE_PHASE_READERS if three_phase else SINGLE_PHASE_READERS).get(oid)
            if reader is None:
                return Answer(NakCode.OBJECT_NOT_RECOGNISED)
            value = reader(model, now)
            return Answer(value) if isinstance(value, int) else Answer(NakCode.OK, request, value)
        case WriteRequest(object_id=oid, payload=payload):
            code = apply_write(WriteTarget(state, index, model), oid, payload, now)
            return Answer(code) if code else Answer(NakCode.OK, request)
        case ProfileLogRequest(log=log, timestamp=requested):
            return Answer(NakCode.OK, request, _profile_log(model, log, requested, now))
        case EventLogRequest(index=page):
            if page >= EVENT_LOG_BLOCKS:
                return Answer(NakCode.FORMAT_ERROR)
            return Answer(NakCode.OK, request, event_block(model.event_page(now, page), page))
        case ThreePhaseIntervalsRequest(start=start, end=end, profile=profile):
            if profile == _RESET_PROFILE:
                return Answer(NakCode.SECURITY_NOT_GRANTED)
            return Answer(NakCode.OK, request, _intervals(model, start, end, now))
    return Answer(NakCode.FORMAT_ERROR)


def _status(status: RecordStatus) -> ProfileStatus:
    return ProfileStatus(
        reset=status.reset, valid_data=status.valid_data, power_fail=status.power_fail
    )


def _profile_log(model: MeterModel, log: int, requested: int, now: float) -> Record:
    if log == 1:
        found = model.profile_records(requested, LOG1_RECORDS, now)
        return ProfileLog1.padded(requested, tuple(_log1(r) for r in found))
    twin = model.identity.hardware.twin_element
    found = model.profile_records(requested, LOG2_RECORDS[twin], now)
    return ProfileLog2.padded(requested, tuple(_log2(r, twin) for r in found), twin=twin)


def _log1(r: ProfileRecord) -> ProfileLog1Record:
    return ProfileLog1Record(r.timestamp, _status(r.status), r.import_a & _U32, r.import_b & _U32)


def _log2(r: ProfileRecord, twin: bool) -> ProfileLog2Record:
    single = (r.export_a, r.reactive_import_a, r.reactive_export_a, r.voltage)
    if twin:
        element_b = (r.export_b, r.reactive_import_b, r.reactive_export_b)
        values = (v & _U32 for v in single + element_b)
        return ProfileLog2TwinRecord(r.timestamp, _status(r.status), *values)
    return ProfileLog2SingleRecord(r.timestamp, _status(r.status), *(v & _U32 for v in single))


def _intervals(model: MeterModel, start: int, end: int, now: float) -> ThreePhaseIntervals:
    first, found = model.three_phase_intervals(start, end, now, _MAX_INTERVALS)
    intervals = tuple(
        IntervalRecord(
            IntervalStatus(valid_data=d.valid_data, power_fail=d.power_fail),
            tuple(
                v & _U32
                for v in (d.active_import, d.active_export, d.reactive_import, d.reactive_export)
            ),
        )
        for d in found
    )
    return ThreePhaseIntervals(
        block_is_last=True,
        block_number=1,
        frame_is_last=True,
        frame_number=1,
        block_start_time=first,
        interval_duration=model.interval_minutes(_INTERVAL_MINUTES),
        channel_ids=_INTERVAL_CHANNELS,
        intervals=intervals,
    )
