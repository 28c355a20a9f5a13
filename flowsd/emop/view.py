"""JSON-ready rendering of frames and records, as printed by ``flowsd emop decode``.

Field names and value encodings follow the ``decoded`` objects of the SPEC's vector file:
enums as ``{"name", "value"}`` (an unknown value stays a plain integer), raw bytes as
``{"hex"}``, raw integers unscaled. ``value``/``unit`` add the figure an operator reads
(GBP, volts, kW, kWh, UTC time).
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from flowsd.emop.codec import decode_body, decode_payload
from flowsd.emop.errors import PayloadError
from flowsd.emop.frame import Format, Frame, ReadWrite
from flowsd.emop.messages import INTERVALS_TRAILER, split_default
from flowsd.emop.objects import ObjectInfo, Quantity, by_id
from flowsd.emop.records import (
    ActivePower,
    Backlight,
    ClockTime,
    CsqNetOp,
    EventLog,
    FirmwareVersion,
    Flag,
    HardwareVersion,
    LoadSwitch,
    PrepayBalance,
    ProfileLog2,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThreePhaseIntervals,
    U32Value,
    Voltage,
)
from flowsd.emop.records.base import enum_or_int
from flowsd.emop.units import from_emop_seconds

FORMAT_NAMES = {
    Format.DEFAULT: "default",
    Format.PROFILE_LOG_1: "profile_log_1",
    Format.PROFILE_LOG_2: "profile_log_2",
    Format.EVENT_LOG: "event_log",
    Format.THREE_PHASE_INTERVALS: "three_phase_profile_intervals",
}
OBJECT_NAMES = {
    Format.PROFILE_LOG_1: "profile_log_1",
    Format.PROFILE_LOG_2: "profile_log_2",
    Format.EVENT_LOG: "event_log",
    Format.THREE_PHASE_INTERVALS: "three_phase_intervals",
}
_OMITTED_FIELDS = frozenset({"extra"})  # profile-log bytes past the decoded records


def to_json(value: Any) -> Any:
    """A record (or part of one) as JSON-ready builtins, in the vector file's encoding."""
    if isinstance(value, bool | int | str | float) or value is None:
        if isinstance(value, enum.Enum):
            return {"name": value.name.lower(), "value": value.value}
        return value
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ProfileLog2):
        return _profile_log_2(value)
    if isinstance(value, EventLog):
        return _event_log(value)
    if isinstance(value, ThreePhaseIntervals):
        return _three_phase_intervals(value)
    if isinstance(value, msgspec.Struct):
        return {
            name: to_json(getattr(value, name))
            for name in value.__struct_fields__
            if name not in _OMITTED_FIELDS
        }
    raise TypeError(f"cannot render {type(value).__name__}")


def _profile_log_2(log: ProfileLog2) -> dict[str, Any]:
    records = [{"is_twin_element": log.is_twin_element, **to_json_struct(r)} for r in log.records]
    return {
        "is_twin_element": log.is_twin_element,
        "request_timestamp": log.request_timestamp,
        "records": records,
    }


def to_json_struct(value: msgspec.Struct) -> dict[str, Any]:
    rendered = to_json(value)
    assert isinstance(rendered, dict)
    return rendered


def _event_log(log: EventLog) -> dict[str, Any]:
    return {
        "object_id": {"hex": log.object_id.hex()},
        "read_write": to_json(enum_or_int(ReadWrite, log.read_write)),
        "events": to_json(log.events),
    }


def _three_phase_intervals(block: ThreePhaseIntervals) -> dict[str, Any]:
    channels = len(block.channel_ids)
    header_length = 6 + 3 * channels
    block_length = header_length + len(block.intervals) * (2 + 4 * channels)
    return {
        "frame": {
            "len_data": block_length + 2,
            "block_is_last_flag": block.block_is_last,
            "block_number": block.block_number,
            "frame_is_last_flag": block.frame_is_last,
            "frame_number": block.frame_number,
        },
        "block": {
            "len_data": block_length,
            "block_header": {
                "block_start_time": block.block_start_time,
                "interval_duration": block.interval_duration,
                "num_channel_ids": channels,
                "channel_ids": [{"hex": f"{c:06x}"} for c in block.channel_ids],
            },
            "intervals": [
                {
                    "num_channel_data": len(i.channel_data),
                    "status": to_json(i.status),
                    "channel_data": list(i.channel_data),
                }
                for i in block.intervals
            ],
        },
    }


def operator_value(info: ObjectInfo | None, record: Record) -> tuple[Any, str | None]:
    """The value an operator reads, and its unit (None when the record is the value)."""
    match record:
        case Serial():
            return record.value, None
        case HardwareVersion():
            return record.model, None
        case FirmwareVersion():
            return record.text, None
        case ThreePhaseHardwareConfiguration():
            return record.model, None
        case ClockTime():
            try:
                return record.to_datetime().isoformat(), "UTC"
            except PayloadError:
                return None, None
        case CsqNetOp():
            return record.csq, "CSQ"
        case Voltage():
            return record.volts, "V"
        case ActivePower():
            return record.kw, "kW"
        case PrepayBalance():
            return str(record.gbp), "GBP"
        case Flag():
            return record.enabled, None
        case Backlight() | LoadSwitch():
            return to_json(record.setting), None
        case Registers():
            return record.kwh(), "kWh"
        case U32Value() if info is not None and info.quantity is Quantity.MONEY:
            return str(record.gbp), "GBP"
        case U32Value() if info is not None and info.quantity is Quantity.TIMESTAMP:
            return record.datetime.isoformat(), "UTC"
        case U32Value() if info is not None and info.quantity is Quantity.ENERGY:
            return record.value / 1000, "kWh (P1.ax; divide by 10 again for P1.cx)"
    return None, None


def frame_header(frame: Frame) -> dict[str, Any]:
    dst, src = frame.destination, frame.source
    return {
        "frame_length": frame.frame_length,
        "destination_device_type": f"{dst.device_type:02x}",
        "destination_address": f"{dst.address:06x}",
        "source_device_type": f"{src.device_type:02x}",
        "source_address": f"{src.address:06x}",
        "control": frame.control,
        "sequence": frame.sequence,
        "nak_code": frame.nak_code,
        "data_field_hex": frame.data.hex(),
    }


def _is_log_request(frame: Frame) -> bool:
    data = frame.data
    if frame.format == Format.THREE_PHASE_INTERVALS:
        return len(data) == 14 and data[10:14] == INTERVALS_TRAILER
    return len(data) == 5


def describe_frame(frame: Frame, *, twin: bool = False) -> dict[str, Any]:
    """The JSON object ``flowsd emop decode`` prints for a frame that is not a NAK.

    Raises :class:`PayloadError` when a payload does not fit its object's record.
    """
    if not frame.data:
        raise PayloadError("empty data field")
    fmt = frame.format
    out: dict[str, Any] = {}
    if fmt == Format.DEFAULT:
        oid, flag, payload = split_default(frame.data)
        info = by_id(oid)
        out["object"] = info.name if info else f"{oid:06x}"
        out["object_id"] = f"{oid:06x}"
        out["format"] = FORMAT_NAMES[Format.DEFAULT]
        out["read_write"] = to_json(enum_or_int(ReadWrite, flag))
        out["frame"] = frame_header(frame)
        if not payload:
            # A read request, a write acknowledgement, or an empty answer (e.g. the hardware
            # version of a three-phase meter): decode when the record accepts no bytes.
            out["message"] = "request or empty answer" if flag == 0 else "write acknowledgement"
            try:
                record: Record | None = decode_payload(oid, payload)
            except PayloadError:
                record = None
        else:
            out["message"] = "response" if flag == ReadWrite.READ else "write request"
            record = decode_payload(oid, payload)
        out["fields"] = None if record is None else to_json(record)
        value, unit = (None, None) if record is None else operator_value(info, record)
        out["value"] = value
        out["unit"] = unit
        return out
    if fmt not in OBJECT_NAMES:
        raise PayloadError(f"unknown data-field format {fmt:#04x}")
    out["object"] = OBJECT_NAMES[Format(fmt)]
    out["format"] = FORMAT_NAMES[Format(fmt)]
    out["read_write"] = to_json(ReadWrite.READ)
    out["frame"] = frame_header(frame)
    if _is_log_request(frame):
        out["message"] = "request"
        out["fields"] = _log_request_fields(frame)
    else:
        out["message"] = "response"
        out["fields"] = to_json(decode_body(fmt, frame.data[1:], twin=twin))
    return out


def _log_request_fields(frame: Frame) -> dict[str, Any]:
    data = frame.data
    if frame.format in (Format.PROFILE_LOG_1, Format.PROFILE_LOG_2):
        stamp = int.from_bytes(data[1:5], "big")
        return {"timestamp": stamp, "datetime": from_emop_seconds(stamp).isoformat()}
    if frame.format == Format.EVENT_LOG:
        return {"object_id": {"hex": data[1:4].hex()}, "index": data[4]}
    start, end = int.from_bytes(data[2:6], "big"), int.from_bytes(data[6:10], "big")
    return {
        "profile": data[1],
        "start": start,
        "end": end,
        "start_datetime": from_emop_seconds(start).isoformat(),
        "end_datetime": from_emop_seconds(end).isoformat(),
    }
