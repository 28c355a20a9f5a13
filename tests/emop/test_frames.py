"""CRC, frame encoding and decoding, requests and responses in both directions."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsd.emop import (
    Address,
    BadDelimiterError,
    BadFrameLengthError,
    CrcMismatchError,
    EmopError,
    EncodeError,
    EventLogRequest,
    Frame,
    FrameTooLargeError,
    Layout,
    NakCode,
    NakError,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ResponseAddressError,
    ResponseMismatchError,
    ResponseReader,
    ThreePhaseIntervalsRequest,
    TruncatedFrameError,
    WriteRequest,
    build_request,
    crc16,
    decode_frame,
    decode_frame_prefix,
    decode_frame_unverified,
    decode_response,
    encode_frame,
    encode_nak,
    encode_request,
    encode_response,
    frame_size,
    object_id,
    parse_request,
    request_data,
)
from flowsd.emop.codec import RECORD_TYPES
from flowsd.emop.objects import OBJECTS
from flowsd.emop.records import (
    EventLog,
    PrepayBalance,
    ProfileLog1,
    ProfileLog2,
    Record,
    ThreePhaseIntervals,
)
from flowsd.emop.view import describe_frame
from tests.emop.strategies import RECORDS, frames, requests

METER = Address(0x00, 0x002F41)
SERIAL_READ = bytes.fromhex("7e11000000000021ae42050160010000c02f")


def test_crc_check_value_and_worked_example() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16(bytes.fromhex("11000000000021ae42050160010000")) == 0xC02F


def test_serial_read_request_matches_the_spec() -> None:
    assert encode_request(ReadRequest(object_id("serial"))) == SERIAL_READ
    frame = decode_frame(SERIAL_READ)
    assert (frame.sequence, frame.nak_code, frame.frame_length) == (5, 0, 17)


@settings(max_examples=150, deadline=None)
@given(frame=frames)
def test_frame_round_trip(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert len(wire) == len(frame.data) + 13
    assert decode_frame(wire) == frame
    assert decode_frame_prefix(wire + b"\x7e\x00trailing") == (frame, len(wire))


@settings(max_examples=150, deadline=None)
@given(request=requests, sequence=st.integers(0, 7))
def test_request_round_trip(request: Request, sequence: int) -> None:
    wire = encode_request(request, sequence=sequence)
    frame = decode_frame(wire)
    assert parse_request(frame) == request
    assert frame.sequence == sequence


def _request_for(record: Record) -> Request:
    if isinstance(record, ProfileLog1):
        return ProfileLogRequest(1, record.request_timestamp)
    if isinstance(record, ProfileLog2):
        return ProfileLogRequest(2, record.request_timestamp)
    if isinstance(record, EventLog):
        return EventLogRequest(0)
    if isinstance(record, ThreePhaseIntervals):
        return ThreePhaseIntervalsRequest(record.block_start_time, record.block_start_time)
    layout = next(layout for layout, cls in RECORD_TYPES.items() if cls is type(record))
    return ReadRequest(next(o.id for o in OBJECTS if o.layout is layout))


@pytest.mark.parametrize("record_cls", list(RECORDS), ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_response_round_trip_through_frames(record_cls: type[Record], data: st.DataObject) -> None:
    """Meter side encodes a record into a response; client side decodes the same record."""
    record = data.draw(RECORDS[record_cls])
    if isinstance(record, EventLog):
        record = EventLog(b"\xff\xff\x49", record.read_write, record.events)
    request = _request_for(record)
    request_frame = decode_frame(encode_request(request))
    try:
        wire = encode_response(request_frame, record, meter=METER)
    except FrameTooLargeError:
        return  # e.g. an interval block that does not fit one frame
    twin = isinstance(record, ProfileLog2) and record.is_twin_element
    response = decode_response(wire, request, twin=twin)
    assert response.record == record
    assert response.frame.destination == request_frame.source
    assert response.frame.source == METER
    assert response.frame.sequence == request_frame.sequence


def test_write_acknowledgement() -> None:
    request = WriteRequest(object_id("prepay_enabled_flag"), b"\x01")
    frame = build_request(request)
    ack = encode_response(frame, meter=METER)
    assert ack.hex() == "7e110021ae4200002f410501ffff0d013a85"
    assert decode_response(ack, request).record is None


@pytest.mark.parametrize("code", list(NakCode)[1:])
def test_every_nak_code_is_a_typed_error(code: NakCode) -> None:
    request = ReadRequest(object_id("prepay_balance"))
    nak = encode_nak(build_request(request), code, meter=METER)
    with pytest.raises(NakError) as caught:
        decode_response(nak, request)
    assert caught.value.code == code
    assert f"NAK code {int(code)} ({code.name.lower()})" in str(caught.value)


def test_mismatched_echoed_object_is_rejected() -> None:
    balance_read = build_request(ReadRequest(object_id("prepay_balance")))
    answer = encode_response(balance_read, PrepayBalance(100), meter=METER)
    with pytest.raises(ResponseMismatchError, match="echoes object ffc802"):
        decode_response(answer, ReadRequest(object_id("serial")))
    with pytest.raises(ResponseMismatchError, match="format"):
        decode_response(answer, EventLogRequest(0))
    with pytest.raises(ResponseMismatchError, match="flag"):
        decode_response(answer, WriteRequest(object_id("prepay_balance"), b"\0\0\0\0"))


def test_a_response_to_another_client_is_rejected_when_the_client_is_named() -> None:
    request = ReadRequest(object_id("prepay_balance"))
    me = Address(0x80, 0x123456)
    mine = build_request(request, source=me)
    answer = encode_response(mine, PrepayBalance(100), meter=METER)
    assert decode_response(answer, request, client=me).record == PrepayBalance(100)
    assert decode_response(answer, request).record == PrepayBalance(100)  # the reference's view
    with pytest.raises(ResponseAddressError, match="addressed to 80/123456"):
        decode_response(answer, request, client=Address(0x00, 0x21AE42))
    reader = ResponseReader(request, client=Address(0x00, 0x21AE42))
    with pytest.raises(ResponseAddressError):
        reader.feed(answer)
    # An address error is a kind of mismatch: it still answers something else.
    assert issubclass(ResponseAddressError, ResponseMismatchError)


def test_an_unverified_decode_reads_a_damaged_request_for_its_nak() -> None:
    damaged = SERIAL_READ[:-1] + bytes((SERIAL_READ[-1] ^ 0xFF,))
    with pytest.raises(CrcMismatchError):
        decode_frame(damaged)
    frame = decode_frame_unverified(damaged + b"trailing")
    assert frame == decode_frame(SERIAL_READ)
    nak = decode_frame(encode_nak(frame, NakCode.FCS_ERROR, meter=METER))
    assert (nak.destination, nak.sequence, nak.nak_code) == (frame.source, 5, NakCode.FCS_ERROR)
    assert nak.data == frame.data[:5]
    for bad in (b"", b"\x7f" + SERIAL_READ[1:], SERIAL_READ[:-1]):
        with pytest.raises((BadDelimiterError, TruncatedFrameError)):
            decode_frame_unverified(bad)


@pytest.mark.parametrize(
    ("hex_frame", "error"),
    [
        ("", TruncatedFrameError),
        ("7e", TruncatedFrameError),
        ("7e11", TruncatedFrameError),
        ("7f11000000000021ae42050160010000c02f", BadDelimiterError),
        ("7e0c000000000021ae4205c02f", BadFrameLengthError),
        ("7e00", BadFrameLengthError),
        ("7e11000000000021ae42050160010000c02e", CrcMismatchError),
    ],
)
def test_malformed_frames(hex_frame: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_frame(bytes.fromhex(hex_frame))


def test_encoding_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(FrameTooLargeError):
        encode_request(WriteRequest(1, bytes(239)))
    assert len(encode_request(WriteRequest(1, bytes(238)))) == 256
    with pytest.raises(EncodeError):
        encode_request(ReadRequest(1), sequence=8)
    with pytest.raises(EncodeError):
        encode_request(ReadRequest(1 << 24))
    with pytest.raises(EncodeError):
        encode_request(EventLogRequest(10))
    with pytest.raises(EncodeError):
        encode_frame(Frame(Address(0, 0), Address(0, 0), 5, b""))
    with pytest.raises(EncodeError):
        encode_frame(Frame(Address(0x100, 0), Address(0, 0), 5, b"\x01"))


def test_layouts_cover_the_catalogue() -> None:
    assert set(RECORD_TYPES) == set(Layout)


def _crc_bitwise(data: bytes) -> int:
    """The SPEC's bitwise description, as an independent oracle."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_crc_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc16(data) == _crc_bitwise(data)
    assert crc16(data[len(data) // 2 :], crc16(data[: len(data) // 2])) == crc16(data)


@settings(max_examples=300, deadline=None)
@given(frame=frames, request=requests, twin=st.booleans())
def test_arbitrary_frames_raise_only_codec_errors(
    frame: Frame, request: Request, twin: bool
) -> None:
    for attempt in (
        lambda: parse_request(frame),
        lambda: decode_response(frame, request, twin=twin),
        lambda: describe_frame(frame, twin=twin),
    ):
        with contextlib.suppress(EmopError):
            attempt()


@settings(max_examples=200, deadline=None)
@given(request=requests, data=st.binary(min_size=1, max_size=243), twin=st.booleans())
def test_answers_with_the_right_header_raise_only_codec_errors(
    request: Request, data: bytes, twin: bool
) -> None:
    """Data fields that pass the NAK/format/echo checks but carry arbitrary bodies."""
    header = request_data(request)
    header = header[:5] if header[0] in (1, 5) else header[:1]
    frame = Frame(Address(0, 0), Address(0, 0), 5, (header + data)[:243])
    try:
        decode_response(frame, request, twin=twin)
        describe_frame(frame, twin=twin)
    except EmopError:
        pass


def test_frame_size_is_known_once_the_frame_is_whole_or_cannot_be_one() -> None:
    wire = encode_frame(Frame(Address(1, 2), Address(3, 4), 0, b"\x01\x02"))
    assert [frame_size(wire[:n]) for n in range(len(wire))] == [None] * len(wire)
    assert frame_size(wire) == frame_size(wire + b"\x7e\x00") == len(wire)
    # Leading garbage on a one-frame exchange: no frame, known at its first byte.
    assert frame_size(b"\x00") == 1
    assert frame_size(b"junk" + wire) == len(wire) + 4
