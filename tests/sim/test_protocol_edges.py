"""Wire edge cases: malformed requests, refused writes, addressing, history limits, scale."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowsd.emop import (
    Frame,
    NakCode,
    NakError,
    ProfileLogRequest,
    ReadRequest,
    WriteRequest,
    build_request,
    decode_frame,
    encode_frame,
    object_id,
)
from flowsd.emop.records import ProfileLog1, Serial
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from tests.sim.client import ask, raw_exchange

BASE = "127.77.16.1"
SERIAL = ReadRequest(object_id("serial"))


async def test_request_with_a_bad_crc_gets_nak_1(frozen_clock: SimClock) -> None:
    wire = bytearray(encode_frame(build_request(SERIAL)))
    wire[-1] ^= 0xFF
    async with SimulatedFleet(1, base_address=BASE, port=0, clock=frozen_clock) as fleet:
        raw, _ = await raw_exchange(fleet.meters[0], bytes(wire))
    assert decode_frame(raw).nak_code == NakCode.FCS_ERROR


async def test_bytes_that_are_not_emop_close_the_connection(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(1, base_address=BASE, port=0, clock=frozen_clock) as fleet:
        raw, _ = await raw_exchange(fleet.meters[0], b"GET / HTTP/1.0\r\n\r\n")
    assert raw == b""


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (WriteRequest(object_id("serial"), b"EML0000000000   "), NakCode.SECURITY_NOT_GRANTED),
        (WriteRequest(object_id("tariff_active_price"), b"\1\0\0\0"),
         NakCode.SECURITY_NOT_GRANTED),
        (WriteRequest(object_id("prepay_enabled_flag"), b"\1\1"), NakCode.FRAME_LENGTH_INCORRECT),
        (WriteRequest(object_id("time"), b"\x1a\x0d\x01\0\0\0\0"), NakCode.FORMAT_ERROR),
        (WriteRequest(object_id("prepay_token_send"), b"12345"), NakCode.SECURITY_NOT_GRANTED),
        (WriteRequest(0x123456, b"\0"), NakCode.OBJECT_NOT_RECOGNISED),
    ],
)  # fmt: skip
async def test_refused_writes_nak(
    request_: WriteRequest, code: NakCode, frozen_clock: SimClock
) -> None:
    async with SimulatedFleet(
        1, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w"]
    ) as fleet:
        with pytest.raises(NakError) as raised:
            await ask(fleet.meters[0], request_)
        assert fleet.state.overrides(0) is None or not fleet.state.overrides(0).tokens  # type: ignore[union-attr]
    assert raised.value.code == code


async def test_unknown_format_is_a_format_error(frozen_clock: SimClock) -> None:
    request = build_request(SERIAL)
    odd = Frame(request.destination, request.source, request.control, b"\x09\x00")
    async with SimulatedFleet(1, base_address=BASE, port=0, clock=frozen_clock) as fleet:
        raw, _ = await raw_exchange(fleet.meters[0], encode_frame(odd))
    assert decode_frame(raw).nak_code == NakCode.FORMAT_ERROR


async def test_profile_request_older_than_the_log_starts_at_the_oldest_record(
    frozen_clock: SimClock,
) -> None:
    now = int(frozen_clock.now())
    async with SimulatedFleet(
        1, base_address=BASE, port=0, clock=frozen_clock, hardware=["EMA1.w"], history_days=2
    ) as fleet:
        old = (await ask(fleet.meters[0], ProfileLogRequest(1, now - 10 * 86_400))).record
        future = (await ask(fleet.meters[0], ProfileLogRequest(1, now + 3_600))).record
    assert isinstance(old, ProfileLog1)
    newest = now - now % 1800
    assert old.records[0].timestamp == newest - 2 * 86_400
    assert isinstance(future, ProfileLog1)
    assert all(r.timestamp == 0 and not r.status.valid_data for r in future.records)


async def test_meters_share_a_port_on_their_own_addresses(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        3, seed=4, base_address="127.77.17.1", port=18_080, clock=frozen_clock, journal=True,
        hardware=["C1.w", "P1.ax", "EMA1.w"],
    ) as fleet:  # fmt: skip
        serials = [getattr((await ask(m, SERIAL)).record, "serial", "") for m in fleet.meters
                   if not m.three_phase]  # fmt: skip
        assert {m.port for m in fleet.meters} == {18_080}
        assert [m.ip_address for m in fleet.meters] == [f"127.77.17.{i}" for i in (1, 2, 3)]
        assert fleet.journal is not None
        assert len(fleet.journal) == len(serials)
        assert fleet.stats.answered == len(serials)
        (answer,) = fleet.answers(0, object_id("serial"))
        assert answer.response[5:].strip().decode() == fleet.meters[0].serial
        assert answer.nak == 0
        assert fleet.answers(0, object_id("time")) == []
    assert all(s.strip() for s in serials)


async def test_two_thousand_meters_start_answer_and_stop(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        2_000, seed=8, base_address="127.77.18.1", port=0, clock=frozen_clock
    ) as fleet:
        first, last = fleet.meters[0], fleet.meters[-1]
        assert last.ip_address == "127.77.25.208"
        for meter in (first, last):
            request = ReadRequest(
                object_id("three_phase_serial" if meter.three_phase else "serial")
            )
            record = (await ask(meter, request)).record
            assert isinstance(record, Serial) and record.value == meter.serial
        kinds = {m.hardware for m in fleet.meters[:200]}
        manifest = fleet.manifest()
    assert kinds == {"C1.w", "EMA1.w", "B1.w", "P1.ax", "P1.cx"}
    meters = manifest["meters"]
    assert isinstance(meters, list)
    assert len(meters) == 2_000
    assert len({m["serial"] for m in meters}) == 2_000


def test_meter_list_indexing(frozen_clock: SimClock) -> None:
    fleet = SimulatedFleet(5, base_address=BASE, clock=frozen_clock)
    assert fleet.meters[-1].index == 4
    assert [m.index for m in fleet.meters[1:3]] == [1, 2]
    with pytest.raises(IndexError):
        fleet.meters[5]
    assert fleet.truth(fleet.meters[2].serial).serial == fleet.meters[2].serial
    assert fleet.truth(2, at=frozen_clock.now_datetime() - timedelta(days=1)).at < (
        frozen_clock.now_datetime()
    )


def test_addresses_outside_loopback_are_refused() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        SimulatedFleet(10, base_address="127.255.255.250")
