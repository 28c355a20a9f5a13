"""What a meter answers to one request frame: a NAK code and the response's data field.

Single-phase kinds answer the single-phase objects, profile logs and the event log;
three-phase kinds answer their totals, phase voltages and interval profile, return an
empty (or NAK'd) hardware string, and NAK everything prepay. Unknown objects get NAK 5,
writes to objects that cannot be written NAK 6, malformed requests NAK 2/3, requests
addressed to another meter NAK 7. Reads are answered by :mod:`flowsd.sim.readers`, writes
applied by :mod:`flowsd.sim.writes`; the logs and intervals are packed here.
"""

from __future__ import annotations

import struct

from flowsd.emop import Format, Frame, NakCode, object_id
from flowsd.sim.model import MeterModel, ProfileRecord
from flowsd.sim.readers import (
    SINGLE_PHASE_READERS,
    THREE_PHASE_READERS,
    events_payload,
    u32,
)
from flowsd.sim.state import FleetState
from flowsd.sim.writes import WriteTarget, apply_write

PROFILE_AREA = 80
_LOG1 = struct.Struct("<I2sII")
_LOG2_SINGLE = struct.Struct("<I2sIIII")
_LOG2_TWIN = struct.Struct("<I2sIIIIIII")
_INTERVAL_CHANNELS = tuple(object_id(n) for n in (
    "active_import_demand", "active_export_demand", "reactive_import_demand",
    "reactive_export_demand",
))  # fmt: skip
_MAX_INTERVALS = 12  # what fits in one frame with four channels
BROADCAST = 0xFFFFFF


def _log1(records: list[ProfileRecord]) -> bytes:
    body = b"".join(
        _LOG1.pack(r.timestamp, r.status.wire(), r.import_a & 0xFFFFFFFF, r.import_b & 0xFFFFFFFF)
        for r in records
    )
    return body.ljust(PROFILE_AREA, b"\x00")


def _log2(records: list[ProfileRecord], twin: bool) -> bytes:
    out = bytearray()
    for r in records:
        values = [r.export_a, r.reactive_import_a, r.reactive_export_a, r.voltage]
        if twin:
            out += _LOG2_TWIN.pack(
                r.timestamp,
                r.status.wire(),
                *[v & 0xFFFFFFFF for v in values],
                r.export_b & 0xFFFFFFFF,
                r.reactive_import_b & 0xFFFFFFFF,
                r.reactive_export_b & 0xFFFFFFFF,
            )
        else:
            out += _LOG2_SINGLE.pack(
                r.timestamp, r.status.wire(), *[v & 0xFFFFFFFF for v in values]
            )
    return bytes(out).ljust(PROFILE_AREA, b"\x00")


# Records per profile-log response: log 1 sends 5 (the reference decodes 4), log 2 sends
# 3 single-element or 2 twin-element records, as the SPEC's captures and vectors show.
LOG1_RECORDS = 5


def respond(state: FleetState, index: int, request: Frame, now: float) -> tuple[int, bytes]:
    """(NAK code, data field) answering ``request`` to meter ``index`` at ``now``."""
    data = request.data
    identity = state.identity(index)
    if request.destination.address not in (0, identity.meter_address, BROADCAST):
        return NakCode.FRAME_ADDRESS_INCORRECT, data[:5]
    fmt = data[0]
    three_phase = identity.hardware.three_phase
    model = state.model(index)
    if fmt == Format.DEFAULT:
        if len(data) < 5:
            return NakCode.FRAME_LENGTH_INCORRECT, data[:5]
        oid, flag = int.from_bytes(data[1:4], "big"), data[4]
        if flag == 0:
            readers = THREE_PHASE_READERS if three_phase else SINGLE_PHASE_READERS
            reader = readers.get(oid)
            if reader is None:
                return NakCode.OBJECT_NOT_RECOGNISED, data[:5]
            payload = reader(model, now)
            if isinstance(payload, int):
                return payload, data[:5]
            return NakCode.OK, data[:5] + payload
        if flag == 1:
            return apply_write(WriteTarget(state, index, model), oid, bytes(data[5:]), now), data[
                :5
            ]
        return NakCode.FORMAT_ERROR, data[:5]
    if fmt in (Format.PROFILE_LOG_1, Format.PROFILE_LOG_2):
        if three_phase:
            return NakCode.OBJECT_NOT_RECOGNISED, data[:5]
        if len(data) < 5:
            return NakCode.FRAME_LENGTH_INCORRECT, data[:5]
        requested = int.from_bytes(data[1:5], "big")
        twin = identity.hardware.twin_element
        if fmt == Format.PROFILE_LOG_1:
            return NakCode.OK, data[:5] + _log1(model.profile_records(requested, LOG1_RECORDS, now))
        count = 2 if twin else 3
        return NakCode.OK, data[:5] + _log2(model.profile_records(requested, count, now), twin)
    if fmt == Format.EVENT_LOG:
        if three_phase:
            return NakCode.OBJECT_NOT_RECOGNISED, data[:5]
        if len(data) < 5 or int.from_bytes(data[1:4], "big") != 0xFFFF49:
            return NakCode.FORMAT_ERROR, data[:5]
        page = data[4]
        if page > 9:
            return NakCode.FORMAT_ERROR, data[:5]
        return NakCode.OK, data[:5] + events_payload(model.event_page(now, page))
    if fmt == Format.THREE_PHASE_INTERVALS:
        if not three_phase:
            return NakCode.OBJECT_NOT_RECOGNISED, data[:1]
        if len(data) < 14:
            return NakCode.FRAME_LENGTH_INCORRECT, data[:1]
        profile = data[1]
        if profile == 0xFF:
            return NakCode.SECURITY_NOT_GRANTED, data[:1]
        start, end = int.from_bytes(data[2:6], "big"), int.from_bytes(data[6:10], "big")
        return NakCode.OK, data[:1] + _intervals(model, start, end, now)
    return NakCode.FORMAT_ERROR, data[:1]


def _intervals(model: MeterModel, start: int, end: int, now: float) -> bytes:
    first, found = model.three_phase_intervals(start, end, now, _MAX_INTERVALS)
    out = bytearray((0x81, 0x81))
    out += struct.pack("<IBB", first, 30, len(_INTERVAL_CHANNELS))
    for channel in _INTERVAL_CHANNELS:
        out += channel.to_bytes(3, "big")
    for d in found:
        status = bytes((0, (0x80 if d.valid_data else 0) | (0x40 if d.power_fail else 0)))
        out += status + b"".join(
            u32(v) for v in (d.active_import, d.active_export, d.reactive_import, d.reactive_export)
        )
    return bytes(out)
