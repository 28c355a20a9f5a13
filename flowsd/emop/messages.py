"""Requests and responses: building them and reading them, for clients and for meters.

Client side: build a request (:func:`encode_request`), then read the answer with
:func:`decode_response` (or :class:`flowsd.emop.parser.ResponseReader` on a byte stream),
which checks NAK, format, echoed object id and, when given the client's address, the
destination before decoding the record.

Meter side: :func:`parse_request` turns a request frame into a typed request;
:func:`encode_response` answers it (addressed back to the requester, sequence echoed) and
:func:`encode_nak` refuses it with a NAK code.
"""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

from flowsd.emop.codec import decode_body, decode_payload
from flowsd.emop.errors import (
    EncodeError,
    FrameTooLargeError,
    NakError,
    PayloadError,
    ResponseAddressError,
    ResponseMismatchError,
)
from flowsd.emop.frame import (
    ANY_METER,
    MAX_DATA_LENGTH,
    REFERENCE_CLIENT,
    REFERENCE_SEQUENCE,
    Address,
    Format,
    Frame,
    ReadWrite,
    control_byte,
    decode_frame,
    encode_frame,
)
from flowsd.emop.objects import EVENT_LOG_OBJECT_ID
from flowsd.emop.records import Record
from flowsd.emop.units import U32_MAX

MAX_PAYLOAD_LENGTH = MAX_DATA_LENGTH - 5  # format, object id and flag come first
EVENT_LOG_MAX_INDEX = 9
INTERVALS_TRAILER = b"\xff\xff\xff\xff"
_INTERVALS_REQUEST = struct.Struct(">BII4s")


class ReadRequest(msgspec.Struct, frozen=True):
    """Read one object (default format, flag 00, no payload)."""

    object_id: int


class WriteRequest(msgspec.Struct, frozen=True):
    """Write one object (default format, flag 01, the new value as payload)."""

    object_id: int
    payload: bytes

    @classmethod
    def of(cls, object_id: int, record: Record) -> WriteRequest:
        return cls(object_id, record.encode())


class ProfileLogRequest(msgspec.Struct, frozen=True):
    """Profile log 1 or 2 from ``timestamp`` (seconds since 2000, sent big-endian)."""

    log: Literal[1, 2]
    timestamp: int


class EventLogRequest(msgspec.Struct, frozen=True):
    """Event-log block ``index`` (0 = newest ten events ... 9 = oldest)."""

    index: int


class ThreePhaseIntervalsRequest(msgspec.Struct, frozen=True):
    """Three-phase interval data between two times (seconds since 2000, big-endian)."""

    start: int
    end: int
    profile: int = 0


Request = (
    ReadRequest | WriteRequest | ProfileLogRequest | EventLogRequest | ThreePhaseIntervalsRequest
)


class Response(msgspec.Struct, frozen=True):
    """A checked response: the frame and its decoded record (None for a write acknowledgement)."""

    frame: Frame
    record: Record | None


def _u24(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFF:
        raise EncodeError(f"object id out of range: {value}")
    return value.to_bytes(3, "big")


def _u32(value: int, what: str) -> int:
    if not 0 <= value <= U32_MAX:
        raise EncodeError(f"{what} out of range: {value}")
    return value


def request_data(request: Request) -> bytes:
    """The data field of a request."""
    match request:
        case ReadRequest(object_id=oid):
            return bytes((Format.DEFAULT,)) + _u24(oid) + bytes((ReadWrite.READ,))
        case WriteRequest(object_id=oid, payload=payload):
            if len(payload) > MAX_PAYLOAD_LENGTH:
                raise FrameTooLargeError(f"write payload of {len(payload)} bytes exceeds 238")
            return bytes((Format.DEFAULT,)) + _u24(oid) + bytes((ReadWrite.WRITE,)) + payload
        case ProfileLogRequest(log=log, timestamp=ts):
            if log not in (1, 2):
                raise EncodeError(f"profile log is 1 or 2, not {log}")
            fmt = Format.PROFILE_LOG_1 if log == 1 else Format.PROFILE_LOG_2
            return bytes((fmt,)) + _u32(ts, "profile log timestamp").to_bytes(4, "big")
        case EventLogRequest(index=index):
            if not 0 <= index <= EVENT_LOG_MAX_INDEX:
                raise EncodeError(f"event log index is 0..9, not {index}")
            return bytes((Format.EVENT_LOG,)) + _u24(EVENT_LOG_OBJECT_ID) + bytes((index,))
        case ThreePhaseIntervalsRequest(start=start, end=end, profile=profile):
            if not 0 <= profile <= 0xFF:
                raise EncodeError(f"profile number out of range: {profile}")
            body = _INTERVALS_REQUEST.pack(
                profile, _u32(start, "start"), _u32(end, "end"), INTERVALS_TRAILER
            )
            return bytes((Format.THREE_PHASE_INTERVALS,)) + body
    raise EncodeError(f"not a request: {request!r}")


def build_request(
    request: Request,
    *,
    source: Address = REFERENCE_CLIENT,
    destination: Address = ANY_METER,
    sequence: int = REFERENCE_SEQUENCE,
) -> Frame:
    """The request frame; the defaults are exactly what the reference client sends."""
    return Frame(destination, source, control_byte(sequence), request_data(request))


def encode_request(
    request: Request,
    *,
    source: Address = REFERENCE_CLIENT,
    destination: Address = ANY_METER,
    sequence: int = REFERENCE_SEQUENCE,
) -> bytes:
    """The request as bytes on the wire."""
    frame = build_request(request, source=source, destination=destination, sequence=sequence)
    return encode_frame(frame)


def split_default(data: bytes) -> tuple[int, int, bytes]:
    """Object id, read/write flag and payload of a default-format data field."""
    if len(data) < 5:
        raise PayloadError(f"default-format data field of {len(data)} bytes (needs 5)")
    return int.from_bytes(data[1:4], "big"), data[4], bytes(data[5:])


def parse_request(frame: Frame | bytes) -> Request:
    """The typed request a frame carries (meter side)."""
    if not isinstance(frame, Frame):
        frame = decode_frame(frame)
    data = frame.data
    if not data:
        raise PayloadError("empty data field")
    fmt = data[0]
    if fmt == Format.DEFAULT:
        oid, flag, payload = split_default(data)
        if flag == ReadWrite.READ:
            return ReadRequest(oid)
        if flag == ReadWrite.WRITE:
            return WriteRequest(oid, payload)
        raise PayloadError(f"read/write flag {flag:#04x} is neither read nor write")
    if fmt in (Format.PROFILE_LOG_1, Format.PROFILE_LOG_2):
        if len(data) < 5:
            raise PayloadError("profile log request without a 4-byte timestamp")
        log: Literal[1, 2] = 1 if fmt == Format.PROFILE_LOG_1 else 2
        return ProfileLogRequest(log, int.from_bytes(data[1:5], "big"))
    if fmt == Format.EVENT_LOG:
        oid, index, _ = split_default(data)
        if oid != EVENT_LOG_OBJECT_ID:
            raise PayloadError(f"event log request for object {oid:06x}")
        return EventLogRequest(index)
    if fmt == Format.THREE_PHASE_INTERVALS:
        if len(data) < 1 + _INTERVALS_REQUEST.size:
            raise PayloadError("three-phase interval request shorter than 14 bytes")
        profile, start, end, _trailer = _INTERVALS_REQUEST.unpack_from(data, 1)
        return ThreePhaseIntervalsRequest(start, end, profile)
    raise PayloadError(f"unknown data-field format {fmt:#04x}")


def response_data(request: Request, body: Record | bytes = b"") -> bytes:
    """The data field answering ``request``: a read's value, a write's echo, a log's body."""
    raw = body.encode() if isinstance(body, Record) else bytes(body)
    match request:
        case ReadRequest():
            return request_data(request) + raw
        case WriteRequest():
            return request_data(request)[:5] + raw
        case ProfileLogRequest() | EventLogRequest() | ThreePhaseIntervalsRequest():
            return request_data(request)[:1] + raw
    raise EncodeError(f"not a request: {request!r}")


def _reply(request: Frame, meter: Address, nak_code: int, data: bytes) -> bytes:
    if len(data) > MAX_DATA_LENGTH:
        raise FrameTooLargeError(f"response data field of {len(data)} bytes exceeds 243")
    frame = Frame(request.source, meter, control_byte(request.sequence, nak_code), data)
    return encode_frame(frame)


def encode_response(
    request: Frame,
    body: Record | bytes = b"",
    *,
    meter: Address,
    parsed: Request | None = None,
) -> bytes:
    """A meter's answer to ``request``: destination = the requester, sequence echoed.

    ``body`` is the record (or raw bytes) after the data-field header: a read's value; the
    whole body for profile logs, event log and intervals; nothing for a write acknowledgement.
    ``parsed`` is ``parse_request(request)`` when the caller has it already.
    """
    typed = parse_request(request) if parsed is None else parsed
    return _reply(request, meter, 0, response_data(typed, body))


def encode_nak(request: Frame, code: int, *, meter: Address) -> bytes:
    """A NAK for ``request`` carrying the request's data-field header and no payload."""
    if not 1 <= code <= 31:
        raise EncodeError(f"NAK code is 1..31, not {code}")
    header = (
        request.data[:1] if request.format == Format.THREE_PHASE_INTERVALS else request.data[:5]
    )
    return _reply(request, meter, code, bytes(header))


def _request_format(request: Request) -> int:
    match request:
        case ReadRequest() | WriteRequest():
            return Format.DEFAULT
        case ProfileLogRequest(log=1):
            return Format.PROFILE_LOG_1
        case ProfileLogRequest(log=2):
            return Format.PROFILE_LOG_2
        case EventLogRequest():
            return Format.EVENT_LOG
        case ThreePhaseIntervalsRequest():
            return Format.THREE_PHASE_INTERVALS
    raise EncodeError(f"not a request: {request!r}")


def check_response(frame: Frame, request: Request, *, client: Address | None = None) -> None:
    """Raise unless ``frame`` is a positive answer to ``request``.

    With ``client`` (the request's source address), a frame addressed elsewhere is a
    :class:`ResponseAddressError`; the reference client never looks at addresses.
    """
    if client is not None and frame.destination != client:
        raise ResponseAddressError(f"response addressed to {frame.destination}, not to {client}")
    expected_format = _request_format(request)
    if not frame.data:
        raise PayloadError("empty data field")
    oid = None
    if frame.format in (Format.DEFAULT, Format.EVENT_LOG) and len(frame.data) >= 4:
        oid = int.from_bytes(frame.data[1:4], "big")
    if frame.nak_code:
        raise NakError(frame.nak_code, oid)
    if frame.format != expected_format:
        raise ResponseMismatchError(
            f"response format {frame.format:#04x} does not answer a "
            f"format {expected_format:#04x} request"
        )
    if isinstance(request, ReadRequest | WriteRequest):
        got, flag, _ = split_default(frame.data)
        if got != request.object_id:
            raise ResponseMismatchError(
                f"response echoes object {got:06x}, requested {request.object_id:06x}"
            )
        wanted = ReadWrite.READ if isinstance(request, ReadRequest) else ReadWrite.WRITE
        if flag != wanted:
            raise ResponseMismatchError(
                f"response read/write flag {flag} does not match the request"
            )
    elif isinstance(request, EventLogRequest) and oid != EVENT_LOG_OBJECT_ID:
        raise ResponseMismatchError(f"event log response echoes object {oid}")


def decode_response(
    frame: Frame | bytes,
    request: Request,
    *,
    twin: bool = False,
    client: Address | None = None,
) -> Response:
    """Validate ``frame`` (bytes or decoded) as the answer to ``request`` and decode it.

    ``twin`` selects the twin-element layout for profile log 2; ``client`` makes the
    destination address part of the check (see :func:`check_response`).
    """
    if not isinstance(frame, Frame):
        frame = decode_frame(frame)
    check_response(frame, request, client=client)
    if isinstance(request, WriteRequest):
        return Response(frame, None)
    if isinstance(request, ReadRequest):
        return Response(frame, decode_payload(request.object_id, split_default(frame.data)[2]))
    return Response(frame, decode_body(frame.format, frame.data[1:], twin=twin))
