"""EMOP codec: bytes <-> frames <-> typed records, with no sockets and no asyncio.

The stable API is what this module exports. Everything raised derives from
:class:`EmopError` (framing: :class:`FrameError` and subclasses; a meter's refusal:
:class:`NakError`; a frame answering something else: :class:`ResponseMismatchError`, or one
addressed to another client: :class:`ResponseAddressError`; a payload
that does not fit: :class:`PayloadError`; a value that cannot be sent: :class:`EncodeError`).

Client side (the daemon)::

    request = ReadRequest(object_id("prepay_balance"))         # or ProfileLogRequest(1, ts) ...
    wire = encode_request(request)                             # the reference client's bytes
    reader = ResponseReader(request, client=REFERENCE_CLIENT)  # per connection
    response = reader.feed(chunk)                              # None until a frame is complete
    response = reader.eof()                                    # at EOF: the response or raise
    balance = response.record                                  # PrepayBalance(balance=1523456)
    balance.gbp                                                # Decimal('15.23456')

or, with the whole reply in hand, ``decode_response(raw_bytes, request, twin=False)``.
Writes: ``WriteRequest(object_id(name), record.encode())`` or the helpers in
:mod:`flowsd.emop.writes` (``future_tariff_writes``, ``top_up``, ``set_clock``, ...).

Meter side (the simulator)::

    parser = FrameParser()                                   # per connection
    for item in parser.feed(chunk):                          # Frames and FrameErrors
        if isinstance(item, FrameError): ...                 # e.g. answer NakCode.FCS_ERROR
        request = parse_request(item)                        # ReadRequest, WriteRequest, ...
        reply = encode_response(item, PrepayBalance(1523456), meter=Address(0, 0x002F41))
        reply = encode_nak(item, NakCode.OBJECT_NOT_RECOGNISED, meter=...)

With one request per connection, ``decode_frame(raw)`` and, on :class:`CrcMismatchError`,
``encode_nak(decode_frame_unverified(raw), NakCode.FCS_ERROR, meter=...)`` answers a damaged
request the way a meter does.

Records (``PrepayBalance``, ``ProfileLog1``, ...) live in :mod:`flowsd.emop.records`, unit
conversions in :mod:`flowsd.emop.units`, the JSON rendering of ``flowsd emop decode`` in
:mod:`flowsd.emop.view`. For a read, the body is the object's record
(``record_type(object_id)`` says which); for profile logs, event log and intervals it is the
whole record after the format byte (``ProfileLog1``, ``ProfileLog2``, ``EventLog``,
``ThreePhaseIntervals``); for a write acknowledgement nothing.
The catalogue: ``by_name``, ``by_id``, ``object_id``, ``OBJECTS``.
"""

from flowsd.emop.codec import decode_body, decode_payload, record_type
from flowsd.emop.crc import crc16
from flowsd.emop.errors import (
    BadDelimiterError,
    BadFrameLengthError,
    CrcMismatchError,
    EmopError,
    EncodeError,
    FrameError,
    FrameTooLargeError,
    NakError,
    PayloadError,
    ResponseAddressError,
    ResponseMismatchError,
    TruncatedFrameError,
    UnknownObjectError,
)
from flowsd.emop.frame import (
    ANY_METER,
    DELIMITER,
    MAX_FRAME_LENGTH,
    REFERENCE_CLIENT,
    Address,
    Format,
    Frame,
    NakCode,
    ReadWrite,
    decode_frame,
    decode_frame_prefix,
    decode_frame_unverified,
    encode_frame,
    frame_size,
)
from flowsd.emop.messages import (
    EventLogRequest,
    ProfileLogRequest,
    ReadRequest,
    Request,
    Response,
    ThreePhaseIntervalsRequest,
    WriteRequest,
    build_request,
    check_response,
    decode_response,
    encode_nak,
    encode_request,
    encode_response,
    parse_request,
    request_data,
    response_data,
)
from flowsd.emop.objects import OBJECTS, Layout, ObjectInfo, Quantity, by_id, by_name, object_id
from flowsd.emop.parser import FrameParser, ResponseReader
from flowsd.emop.records import Record

__all__ = [
    "ANY_METER",
    "DELIMITER",
    "MAX_FRAME_LENGTH",
    "OBJECTS",
    "REFERENCE_CLIENT",
    "Address",
    "BadDelimiterError",
    "BadFrameLengthError",
    "CrcMismatchError",
    "EmopError",
    "EncodeError",
    "EventLogRequest",
    "Format",
    "Frame",
    "FrameError",
    "FrameParser",
    "FrameTooLargeError",
    "Layout",
    "NakCode",
    "NakError",
    "ObjectInfo",
    "PayloadError",
    "ProfileLogRequest",
    "Quantity",
    "ReadRequest",
    "ReadWrite",
    "Record",
    "Request",
    "Response",
    "ResponseAddressError",
    "ResponseMismatchError",
    "ResponseReader",
    "ThreePhaseIntervalsRequest",
    "TruncatedFrameError",
    "UnknownObjectError",
    "WriteRequest",
    "build_request",
    "by_id",
    "by_name",
    "check_response",
    "crc16",
    "decode_body",
    "decode_frame",
    "decode_frame_prefix",
    "decode_frame_unverified",
    "decode_payload",
    "decode_response",
    "encode_frame",
    "encode_nak",
    "encode_request",
    "encode_response",
    "frame_size",
    "object_id",
    "parse_request",
    "record_type",
    "request_data",
    "response_data",
]
