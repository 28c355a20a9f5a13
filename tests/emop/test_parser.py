"""The incremental parser and the per-exchange response reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsd.emop import (
    BadFrameLengthError,
    CrcMismatchError,
    EmopError,
    Frame,
    FrameError,
    FrameParser,
    FrameTooLargeError,
    NakError,
    ReadRequest,
    ResponseMismatchError,
    ResponseReader,
    TruncatedFrameError,
    decode_frame,
    encode_frame,
    object_id,
)
from flowsd.emop.records import PrepayBalance
from tests.emop import vectors
from tests.emop.strategies import frames

VECTOR_FRAMES = [
    bytes.fromhex(e[key])
    for _, e in vectors.exchanges()
    for key in ("request_frame_hex", "response_frame_hex")
]
BALANCE = ReadRequest(object_id("prepay_balance"))
BALANCE_ANSWER = bytes.fromhex("7e150021ae4200002f410501ffc80200003f1700801c")


def _feed_in_pieces(
    parser: FrameParser, stream: bytes, cuts: list[int]
) -> list[Frame | FrameError]:
    out: list[Frame | FrameError] = []
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += parser.feed(stream[previous:cut])
        previous = cut
    return out


@settings(max_examples=100, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(VECTOR_FRAMES), min_size=1, max_size=8),
    data=st.data(),
)
def test_any_split_yields_the_same_frames(chosen: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(chosen)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    parser = FrameParser()
    items = _feed_in_pieces(parser, stream, cuts)
    assert items == [decode_frame(f) for f in chosen]
    assert parser.buffered == 0
    assert parser.skipped_bytes == 0
    assert parser.truncation() is None


@settings(max_examples=100, deadline=None)
@given(generated=st.lists(frames, min_size=1, max_size=5), data=st.data())
def test_any_split_of_generated_frames(generated: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in generated)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    assert _feed_in_pieces(FrameParser(), stream, cuts) == generated


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=12))
def test_arbitrary_bytes_never_crash_nor_grow_the_buffer(chunks: list[bytes]) -> None:
    parser = FrameParser()
    for chunk in chunks:
        for item in parser.feed(chunk):
            assert isinstance(item, Frame | FrameError)
        assert parser.buffered <= 256
    error = parser.truncation()
    assert error is None or isinstance(error, TruncatedFrameError)


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_to_a_reader_raise_only_codec_errors(chunks: list[bytes]) -> None:
    reader = ResponseReader(BALANCE)
    try:
        for chunk in chunks:
            reader.feed(chunk)
        reader.eof()
    except EmopError:
        pass


def test_garbage_before_a_delimiter_is_skipped_and_counted() -> None:
    parser = FrameParser()
    assert parser.feed(b"\x00\x01garbage") == []
    assert parser.feed(b"xx" + BALANCE_ANSWER) == [decode_frame(BALANCE_ANSWER)]
    assert parser.skipped_bytes == 11
    assert parser.buffered == 0


def test_bad_crc_is_reported_and_the_stream_resynchronises() -> None:
    corrupt = BALANCE_ANSWER[:-1] + b"\x00"
    parser = FrameParser()
    items = parser.feed(corrupt + BALANCE_ANSWER)
    assert isinstance(items[0], CrcMismatchError)
    assert items[-1] == decode_frame(BALANCE_ANSWER)
    assert parser.errors >= 1 and parser.frames_parsed == 1


def test_bad_length_and_oversized_frames_are_errors() -> None:
    parser = FrameParser(max_frame_length=64)
    items = parser.feed(b"\x7e\x05" + b"\x7e\x61" + BALANCE_ANSWER)
    assert isinstance(items[0], BadFrameLengthError)
    assert isinstance(items[1], FrameTooLargeError)
    assert items[-1] == decode_frame(BALANCE_ANSWER)


def test_truncation_at_end_of_stream() -> None:
    parser = FrameParser()
    assert parser.feed(BALANCE_ANSWER[:10]) == []
    error = parser.truncation()
    assert isinstance(error, TruncatedFrameError)
    assert "needs 22 bytes" in str(error)


def test_reader_reassembles_a_split_response_and_ignores_trailing_bytes() -> None:
    reader = ResponseReader(BALANCE)
    assert reader.feed(BALANCE_ANSWER[:7]) is None
    response = reader.feed(BALANCE_ANSWER[7:] + b"\x7e\x00\x00")
    assert response is not None
    assert response.record == PrepayBalance(1_523_456)
    assert reader.eof() is response


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", TruncatedFrameError),
        (BALANCE_ANSWER[:-3], TruncatedFrameError),
        (BALANCE_ANSWER[:-1] + b"\x00", CrcMismatchError),
        (bytes.fromhex("7e110021ae4200002f412d01ffc8020042e5"), NakError),
        (
            bytes.fromhex("7e210021ae4200002f41050160010000454d4c32313337353830383236202020684b"),
            ResponseMismatchError,
        ),
    ],
)
def test_reader_errors(reply: bytes, error: type[EmopError]) -> None:
    reader = ResponseReader(BALANCE)
    with pytest.raises(error):
        reader.feed(reply)
        reader.eof()
