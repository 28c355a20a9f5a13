"""The reference client's byte-exact requests (the SPEC's vectors.json) against the simulator.

The reference client (simt-emlite) cannot be installed here, so interoperability is checked
with its recorded requests instead: each request of every vector is sent, unchanged, to a
simulated meter of the vector's kind, and the answer must be one frame in one TCP write,
addressed back to the requester with the sequence echoed, decodable by the codec, and the
same length as the reference's response (the same shape; values differ per meter).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flowsd.emop import (
    REFERENCE_CLIENT,
    Address,
    NakCode,
    ReadRequest,
    decode_frame,
    decode_response,
    encode_request,
    object_id,
    parse_request,
)
from flowsd.emop.records import PrepayBalance
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import MeterInfo, SimulatedFleet
from tests.emop.vectors import document
from tests.sim.client import raw_exchange

BASE = "127.77.12.1"
# Two days after the vectors' profile-log and interval requests, inside the meters' logs.
VECTOR_TIME = datetime(2025, 6, 15, 12, 0, 7, tzinfo=UTC)
VECTORS = [v for v in document()["vectors"] if v["kind"] != "nak"]


def pick_meters(fleet: SimulatedFleet) -> dict[str, MeterInfo]:
    """A C1.w meter, and a P1.ax meter that answers hardware_version empty (as the vector)."""
    now = fleet.clock.now()
    three_phase = next(
        m
        for m in fleet.meters
        if m.hardware == "P1.ax"
        and not fleet.state.identity(m.index).hardware_version_naks
        and not any(fleet.model(m.index).phase_voltage_naks(now, p) for p in (2, 3))
    )
    twin = next(m for m in fleet.meters if m.hardware == "C1.w")
    return {"C1.w": twin, "P1.ax": three_phase}


def meter_for(vector: dict[str, Any], meters: dict[str, MeterInfo]) -> MeterInfo:
    return meters["P1.ax" if "P1.ax" in vector["meter"] else "C1.w"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
async def test_reference_request_gets_a_reference_shaped_answer(vector: dict[str, Any]) -> None:
    clock = SimClock(VECTOR_TIME, speed=0.0)
    async with SimulatedFleet(
        12, seed=3, base_address=BASE, port=0, clock=clock, hardware=["C1.w", "P1.ax"]
    ) as fleet:
        meter = meter_for(vector, pick_meters(fleet))
        twin = vector["meter"] == "single_phase_twin_element_C1.w"
        for exchange in vector["exchanges"]:
            request_wire = bytes.fromhex(exchange["request_frame_hex"])
            reference = bytes.fromhex(exchange["response_frame_hex"])
            raw, arrivals = await raw_exchange(meter, request_wire)
            assert len(arrivals) == 1, "the answer must arrive in a single write"
            frame = decode_frame(raw)  # delimiter, length and CRC are valid
            assert frame.destination == REFERENCE_CLIENT
            assert frame.source.address == meter.meter_address
            assert frame.control == 0x05  # sequence echoed, no NAK
            request = parse_request(request_wire)
            decode_response(frame, request, twin=twin)  # raises unless it decodes
            assert len(raw) == len(reference), exchange["request_frame_hex"]
            assert frame.data[:5] == decode_frame(reference).data[:5]


async def test_nak_vector_request_is_answered_by_a_healthy_meter() -> None:
    """The vectors' NAK case is a meter refusing a balance read; a healthy meter answers it."""
    (vector,) = [v for v in document()["vectors"] if v["kind"] == "nak"]
    clock = SimClock(VECTOR_TIME, speed=0.0)
    async with SimulatedFleet(
        1, seed=3, base_address=BASE, port=0, clock=clock, hardware=["C1.w"]
    ) as fleet:
        request_wire = bytes.fromhex(vector["request_frame_hex"])
        raw, _ = await raw_exchange(fleet.meters[0], request_wire)
        balance = fleet.truth(0).balance
    assert decode_frame(bytes.fromhex(vector["response_frame_hex"])).nak_code == 5
    request = parse_request(request_wire)
    assert request == ReadRequest(object_id("prepay_balance"))
    assert balance is not None
    assert decode_response(raw, request).record == PrepayBalance(balance)


async def test_real_capture_requests_are_addressed_back_to_their_client() -> None:
    """Requests from another client (c0/6f0093, sequence 1) as captured from a real meter.

    The captured firmware read was addressed to 00/000000 ("whoever you are") and is answered
    like the real meter did; the captured unknown-object read was addressed to that real
    meter's own address (00/0018b0), which is not the simulated meter's, so it gets NAK 7.
    """
    pairs = document()["real_captures"]["exchanges"]
    firmware = next(p for p in pairs if p["request"]["object_id"] == "000201")
    other_meter = next(p for p in pairs if p["request"]["object_id"] == "800309")
    clock = SimClock(VECTOR_TIME, speed=0.0)
    async with SimulatedFleet(
        1, seed=3, base_address=BASE, port=0, clock=clock, hardware=["C1.w"]
    ) as fleet:
        meter = fleet.meters[0]
        firmware_raw, _ = await raw_exchange(meter, bytes.fromhex(firmware["request_frame_hex"]))
        other_raw, _ = await raw_exchange(meter, bytes.fromhex(other_meter["request_frame_hex"]))
        own_request = encode_request(
            ReadRequest(0x800309),
            source=Address(0xC0, 0x6F0093),
            destination=Address(0, meter.meter_address),
            sequence=1,
        )
        own_raw, _ = await raw_exchange(meter, own_request)
    real = decode_frame(bytes.fromhex(firmware["response_frame_hex"]))
    ours = decode_frame(firmware_raw)
    assert (ours.destination, ours.control, len(ours.data)) == (
        real.destination, real.control, len(real.data),
    )  # fmt: skip
    assert decode_frame(other_raw).control == 0x01 | (NakCode.FRAME_ADDRESS_INCORRECT << 3)
    real_nak = decode_frame(bytes.fromhex(other_meter["response_frame_hex"]))
    own = decode_frame(own_raw)
    assert (own.destination, own.control, own.data) == (
        real_nak.destination, real_nak.control, real_nak.data,
    )  # fmt: skip
