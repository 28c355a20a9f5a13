"""Every fault kind, as a client on a real socket observes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from flowsd.emop import (
    BadDelimiterError,
    CrcMismatchError,
    NakError,
    ReadRequest,
    Response,
    ResponseReader,
    TruncatedFrameError,
    decode_frame,
    decode_response,
    encode_request,
    object_id,
)
from flowsd.emop.records import Serial
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import MeterInfo, SimulatedFleet
from tests.sim.client import ask, raw_exchange

BASE = "127.77.13.1"
SERIAL = ReadRequest(object_id("serial"))
FAULTS = ",".join((
    "refuse@0=1", "blackhole@1=1", "slow@2=1:400ms", "badcrc@3=1", "truncate@4=1",
    "garbage@5=1", "split@6=1:3", "trickle@7=1:20ms", "nak@8=1:6", "toosoon@9=1:5s",
))  # fmt: skip


@pytest.fixture
async def fleet(frozen_clock: SimClock) -> AsyncIterator[SimulatedFleet]:
    async with SimulatedFleet(
        11, seed=5, base_address=BASE, port=0, clock=frozen_clock, faults=FAULTS,
        hardware=["EMA1.w"],
    ) as running:  # fmt: skip
        yield running


def wire() -> bytes:
    return encode_request(SERIAL)


def answered_serial(response: Response) -> str:
    assert isinstance(response.record, Serial), response
    return response.record.value


async def test_a_meter_without_faults_answers(fleet: SimulatedFleet) -> None:
    response = await ask(fleet.meters[10], SERIAL)
    assert answered_serial(response) == fleet.meters[10].serial
    assert fleet.stats.faults == {}


async def test_refuse_resets_the_connection(fleet: SimulatedFleet) -> None:
    with pytest.raises(ConnectionResetError):
        await raw_exchange(fleet.meters[0], wire())
    assert fleet.stats.faults["refuse"] == 1


async def test_blackhole_never_answers(fleet: SimulatedFleet) -> None:
    with pytest.raises(TimeoutError):
        await raw_exchange(fleet.meters[1], wire(), seconds=0.5)
    assert fleet.stats.faults["blackhole"] == 1


async def test_slow_answers_late(fleet: SimulatedFleet) -> None:
    started = time.monotonic()
    response = await ask(fleet.meters[2], SERIAL)
    assert time.monotonic() - started >= 0.4
    assert answered_serial(response) == fleet.meters[2].serial


async def test_badcrc_is_a_crc_mismatch(fleet: SimulatedFleet) -> None:
    with pytest.raises(CrcMismatchError):
        await ask(fleet.meters[3], SERIAL)


async def test_truncate_sends_part_of_the_frame(fleet: SimulatedFleet) -> None:
    raw, _ = await raw_exchange(fleet.meters[4], wire())
    assert raw[:1] == b"\x7e"
    assert len(raw) == 1 or len(raw) < raw[1] + 1
    with pytest.raises(TruncatedFrameError):
        decode_frame(raw)


async def test_garbage_is_not_a_frame(fleet: SimulatedFleet) -> None:
    raw, _ = await raw_exchange(fleet.meters[5], wire())
    assert raw and raw[0] != 0x7E
    with pytest.raises(BadDelimiterError):
        decode_frame(raw)
    reader = ResponseReader(SERIAL)
    assert reader.feed(raw) is None
    with pytest.raises(TruncatedFrameError):
        reader.eof()


async def test_split_defeats_a_single_recv_but_not_a_patient_reader(
    fleet: SimulatedFleet,
) -> None:
    first, _ = await raw_exchange(fleet.meters[6], wire(), single_read=True)
    with pytest.raises(TruncatedFrameError):
        decode_frame(first)  # what the reference client, reading once, would see
    whole, arrivals = await raw_exchange(fleet.meters[6], wire())
    assert len(arrivals) >= 2
    assert answered_serial(decode_response(whole, SERIAL)) == fleet.meters[6].serial


async def test_trickle_sends_byte_by_byte(fleet: SimulatedFleet) -> None:
    started = time.monotonic()
    raw, arrivals = await raw_exchange(fleet.meters[7], wire())
    assert len(arrivals) >= len(raw) // 2
    assert time.monotonic() - started >= 0.02 * (len(raw) - 1) * 0.8
    assert answered_serial(decode_response(raw, SERIAL)) == fleet.meters[7].serial


async def test_nak_fault_uses_its_code(fleet: SimulatedFleet) -> None:
    with pytest.raises(NakError) as raised:
        await ask(fleet.meters[8], SERIAL)
    assert raised.value.code == 6


async def test_toosoon_refuses_a_connection_inside_the_minimum_gap(fleet: SimulatedFleet) -> None:
    meter = fleet.meters[9]
    assert answered_serial(await ask(meter, SERIAL)) == meter.serial
    with pytest.raises(ConnectionResetError):
        await ask(meter, SERIAL)
    assert fleet.stats.faults["toosoon"] == 1


async def _refused(meter: MeterInfo) -> bool:
    try:
        await raw_exchange(meter, wire(), seconds=1.0)
    except ConnectionRefusedError:
        return True
    except (ConnectionResetError, TimeoutError):
        return False
    return False


async def _answers(meter: MeterInfo) -> bool:
    try:
        return answered_serial(await ask(meter, SERIAL)) == meter.serial
    except (ConnectionRefusedError, ConnectionResetError):
        return False


# The fleet opens and closes listeners on a 0.5 s check: allow a loaded machine plenty.
SETTLE_SECONDS = 30.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {SETTLE_SECONDS}s")
        await asyncio.sleep(0.1)


async def test_offline_meter_refuses_then_comes_back(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        2, seed=5, base_address=BASE, port=0, clock=frozen_clock, faults="offline@1=1:10m",
        hardware=["EMA1.w"],
    ) as fleet:  # fmt: skip
        meter = fleet.meters[1]
        window = fleet.plan.offline_window(fleet.seed, 1, meter.serial, frozen_clock.now())
        assert window is not None
        if window[0] <= frozen_clock.now():
            frozen_clock.advance(seconds=3600 - frozen_clock.now() % 3600)
            window = fleet.plan.offline_window(fleet.seed, 1, meter.serial, frozen_clock.now())
            assert window is not None
        assert answered_serial(await ask(meter, SERIAL)) == meter.serial
        frozen_clock.advance(seconds=window[0] - frozen_clock.now() + 1)
        await _until(lambda: _refused(meter), "the offline meter kept accepting connections")
        assert answered_serial(await ask(fleet.meters[0], SERIAL)) == fleet.meters[0].serial
        frozen_clock.advance(seconds=window[1] - frozen_clock.now() + 1)
        await _until(lambda: _answers(meter), "the meter did not come back after its window")


async def test_faults_can_change_while_the_fleet_runs(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        2, seed=5, base_address=BASE, port=0, clock=frozen_clock, hardware=["EMA1.w"]
    ) as fleet:
        meter = fleet.meters[0]
        assert answered_serial(await ask(meter, SERIAL)) == meter.serial
        fleet.set_faults("offline@0=1:1h")
        await _until(lambda: _refused(meter), "the meter did not go offline")
        fleet.set_faults("")
        await _until(lambda: _answers(meter), "the meter did not come back")
