"""Every vector of the SPEC's vector file, both directions, plus the invalid frames."""

from __future__ import annotations

from typing import Any

import pytest

from flowsd.emop import (
    BadDelimiterError,
    CrcMismatchError,
    FrameError,
    NakCode,
    NakError,
    TruncatedFrameError,
    WriteRequest,
    decode_frame,
    decode_response,
    encode_nak,
    encode_request,
    encode_response,
    parse_request,
)
from flowsd.emop.view import describe_frame
from tests.emop import vectors

EXCHANGES = vectors.exchanges()
REAL = vectors.real_exchanges()
ALL = EXCHANGES + REAL


def _ids(items: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in items]


def test_the_vector_file_is_complete() -> None:
    assert len(vectors.document()["vectors"]) == 61
    assert len(EXCHANGES) >= 61
    assert len(vectors.invalid_frames()) == 6


@pytest.mark.parametrize(("name", "exchange"), ALL, ids=_ids(ALL))
def test_request_is_built_byte_identical(name: str, exchange: dict[str, Any]) -> None:
    breakdown = exchange["request"]
    request = vectors.request_of(breakdown)
    wire = encode_request(
        request,
        source=vectors.source_of(breakdown),
        destination=vectors.destination_of(breakdown),
        sequence=breakdown["control_sequence_bits_0_2"],
    )
    assert wire.hex() == exchange["request_frame_hex"]


@pytest.mark.parametrize(("name", "exchange"), ALL, ids=_ids(ALL))
def test_meter_side_parses_the_request(name: str, exchange: dict[str, Any]) -> None:
    frame = decode_frame(bytes.fromhex(exchange["request_frame_hex"]))
    assert parse_request(frame) == vectors.request_of(exchange["request"])
    assert frame.source == vectors.source_of(exchange["request"])


@pytest.mark.parametrize(("name", "exchange"), EXCHANGES, ids=_ids(EXCHANGES))
def test_reference_client_requests_use_the_reference_addressing(
    name: str, exchange: dict[str, Any]
) -> None:
    # The defaults of encode_request are the reference client's addresses and sequence.
    request = vectors.request_of(exchange["request"])
    assert encode_request(request).hex() == exchange["request_frame_hex"]


@pytest.mark.parametrize(("name", "exchange"), EXCHANGES, ids=_ids(EXCHANGES))
def test_response_decodes_to_the_reference_values(name: str, exchange: dict[str, Any]) -> None:
    decoded = exchange["decoded"]
    request = vectors.request_of(exchange["request"])
    raw = bytes.fromhex(exchange["response_frame_hex"])
    if "error" in decoded:  # the NAK vector: the reference failed, flowsd names the NAK
        with pytest.raises(NakError) as caught:
            decode_response(raw, request)
        assert caught.value.code == NakCode.OBJECT_NOT_RECOGNISED
        return
    response = decode_response(raw, request, twin=vectors.is_twin(decoded))
    if "note" in decoded:  # a write acknowledgement
        assert isinstance(request, WriteRequest)
        assert response.record is None
        return
    described = describe_frame(response.frame, twin=vectors.is_twin(decoded))
    assert described["fields"] == vectors.expected_fields(decoded)
    assert described["object"] in {exchange["response"].get("object_name"), *_log_names()}


def _log_names() -> set[str]:
    return {"profile_log_1", "profile_log_2", "event_log", "three_phase_intervals"}


@pytest.mark.parametrize(("name", "exchange"), ALL, ids=_ids(ALL))
def test_meter_side_rebuilds_the_response(name: str, exchange: dict[str, Any]) -> None:
    """Decode the response to a record, then answer the request with it: same bytes."""
    request_frame = decode_frame(bytes.fromhex(exchange["request_frame_hex"]))
    raw = bytes.fromhex(exchange["response_frame_hex"])
    response_frame = decode_frame(raw)
    meter = response_frame.source
    if response_frame.nak_code:
        rebuilt = encode_nak(request_frame, response_frame.nak_code, meter=meter)
    else:
        decoded = exchange.get("decoded") or {}
        response = decode_response(raw, parse_request(request_frame), twin=vectors.is_twin(decoded))
        body = b"" if response.record is None else response.record
        rebuilt = encode_response(request_frame, body, meter=meter)
    assert rebuilt == raw


def test_nak_vector_names_code_and_object() -> None:
    (exchange,) = next(v for v in vectors.document()["vectors"] if v["kind"] == "nak")["exchanges"]
    request = vectors.request_of(exchange["request"])
    with pytest.raises(NakError, match=r"NAK code 5 \(object_not_recognised\) for object ffc802"):
        decode_response(bytes.fromhex(exchange["response_frame_hex"]), request)


INVALID_OUTCOMES: dict[str, type[FrameError] | None] = {
    "pub-invalid-bad-crc": CrcMismatchError,
    "pub-invalid-truncated": TruncatedFrameError,
    "pub-invalid-wrong-delimiter": BadDelimiterError,
    "pub-invalid-empty": TruncatedFrameError,
    "pub-invalid-length-too-large": TruncatedFrameError,
    "pub-invalid-trailing-garbage": None,  # accepted, bytes after the CRC ignored
}


@pytest.mark.parametrize("case", vectors.invalid_frames(), ids=lambda c: c["id"])
def test_invalid_frame_handled_as_recommended(case: dict[str, Any]) -> None:
    assert case["id"] in INVALID_OUTCOMES, "a new invalid vector needs an expected outcome"
    expected = INVALID_OUTCOMES[case["id"]]
    recommended = case["recommended_outcome"]
    assert recommended.startswith("accept" if expected is None else "reject")
    request = parse_request(bytes.fromhex(case["answers_request_frame_hex"]))
    raw = bytes.fromhex(case["frame_hex"])
    if expected is None:
        response = decode_response(raw, request)
        assert str(response.record.gbp) == case["reference_outcome"]["value"]  # type: ignore[union-attr]
    else:
        with pytest.raises(expected):
            decode_response(raw, request)


def test_real_nak_capture_is_a_nak_for_the_unknown_object() -> None:
    _name, exchange = REAL[-1]
    request = vectors.request_of(exchange["request"])
    with pytest.raises(NakError) as caught:
        decode_response(bytes.fromhex(exchange["response_frame_hex"]), request)
    assert (caught.value.code, caught.value.object_id) == (5, 0x800309)
    assert decode_frame(bytes.fromhex(exchange["response_frame_hex"])).sequence == 1
