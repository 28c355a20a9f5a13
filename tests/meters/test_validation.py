"""Frame validation the simulator does not exercise: wrong echo, wrong address, extra bytes,
plus persistent-connection mode and the metrics the engine exports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from flowsd.emop import (
    Address,
    Frame,
    ReadRequest,
    decode_frame,
    encode_frame,
    encode_response,
    object_id,
    response_data,
)
from flowsd.emop.records import ClockTime, CsqNetOp
from flowsd.meters.observations import ReadFailure, Reading, SessionOutcome
from flowsd.meters.target import MeterTarget

from .conftest import Collector, plan_of, session_for, settings, subnet

METER = Address(0x00, 0x0018B0)
Reply = Callable[[Frame], bytes]


@asynccontextmanager
async def rogue_meter(reply: Reply, *, keep_open: bool = False) -> AsyncIterator[MeterTarget]:
    """A one-off meter answering every request with ``reply(request_frame)``."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readexactly(2)
                rest = await reader.readexactly(head[1] - 1)
                writer.write(reply(decode_frame(head + rest)))
                await writer.drain()
                if not keep_open:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    host = subnet()
    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield MeterTarget(
            meter_id=uuid.uuid4(), serial="ROGUE", ip_address=host, port=port, hardware="B1.w"
        )
    finally:
        server.close()
        await server.wait_closed()


def good(request: Frame) -> bytes:
    return encode_response(request, CsqNetOp(network_operator=1, csq=17), meter=METER)


def wrong_object(request: Frame) -> bytes:
    other = ReadRequest(object_id("prepay_balance"))
    data = response_data(other, CsqNetOp(network_operator=1, csq=17))
    return encode_frame(Frame(request.source, METER, request.control, data))


def wrong_address(request: Frame) -> bytes:
    data = response_data(ReadRequest(object_id("csq_net_op")), CsqNetOp(1, 17))
    return encode_frame(Frame(Address(0x80, 0x123456), METER, request.control, data))


def with_trailing_bytes(request: Frame) -> bytes:
    return good(request) + b"\x00\x34\x7e"


async def _poll(target: MeterTarget, **config: object) -> Collector:
    sink = Collector()
    await session_for(target, settings(**config), plan_of(["csq_net_op"]), sink).poll(["fast"])
    return sink


def impossible_length(request: Frame) -> bytes:
    return bytes((0x7E, 0x05)) + good(request)[2:]


@pytest.mark.parametrize(
    ("reply", "reason", "detail"),
    [
        (wrong_object, "mismatch", "echoes object ffc802"),
        (wrong_address, "mismatch", "addressed to 80/123456"),
        (impossible_length, "bad_length", "bad frame length: 5"),
    ],
)
async def test_invalid_answers_fail_with_their_reason_and_are_not_retried(
    reply: Reply, reason: str, detail: str
) -> None:
    async with rogue_meter(reply) as target:
        sink = await _poll(target)
    (failure,) = sink.of(ReadFailure)
    assert failure.reason == reason and failure.attempts == 1, failure
    assert detail in failure.detail, failure
    assert not sink.of(Reading)
    (outcome,) = sink.of(SessionOutcome)
    assert not outcome.ok and outcome.reason == reason


async def test_bytes_after_the_frame_are_ignored() -> None:
    async with rogue_meter(with_trailing_bytes) as target:
        sink = await _poll(target)
    (reading,) = sink.of(Reading)
    assert isinstance(reading.record, CsqNetOp) and reading.record.csq == 17


async def test_persistent_mode_reuses_one_connection_per_poll() -> None:
    plan = plan_of(["csq_net_op", "prepay_balance", "instantaneous_voltage"])
    async with rogue_meter(good_any, keep_open=True) as target:
        sink = Collector()
        session = session_for(target, settings(connection_mode="persistent"), plan, sink)
        await session.poll(["fast"])
        assert session.limiter.connects == 1
        assert len(sink.of(Reading)) == 3
        (outcome,) = sink.of(SessionOutcome)
        assert outcome.ok and session.limiter.in_flight == 0


def good_any(request: Frame) -> bytes:
    """Answer any read with a value of the right layout."""
    oid = int.from_bytes(request.data[1:4], "big")
    payload = {
        object_id("csq_net_op"): b"\x31",
        object_id("prepay_balance"): b"\xe0\x93\x04\x00",
        object_id("instantaneous_voltage"): b"\x5e\x09",
    }[oid]
    return encode_response(request, payload, meter=METER)


async def test_request_attempts_are_counted_by_outcome_and_reason() -> None:
    for reply, counted in [
        (good, ("object", "ok", "ok")),
        (wrong_object, ("object", "failed", "mismatch")),
    ]:
        async with rogue_meter(reply) as target:
            session = session_for(target, settings(), plan_of(["csq_net_op"]), Collector())
            await session.poll(["fast"])
        assert session.counts.attempts == {counted: 1}
        assert session.counts.connections.in_flight == 0


async def test_a_meter_that_never_accepts_gives_connect_timeout() -> None:
    # A listener with a full accept queue drops further SYNs: the connect hangs.
    host = subnet()
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind((host, 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, port))
            fillers.append(filler)
        target = MeterTarget(
            meter_id=uuid.uuid4(), serial="MUTE", ip_address=host, port=port, hardware="B1.w"
        )
        sink = await _poll(target, connect_timeout_seconds=0.2, request_attempts=2)
    finally:
        for s in [server, *fillers]:
            s.close()
    (failure,) = sink.of(ReadFailure)
    assert failure.reason == "connect_timeout" and failure.attempts == 2
    (outcome,) = sink.of(SessionOutcome)
    assert not outcome.ok and outcome.reason == "connect_timeout"


def impossible_clock(request: Frame) -> bytes:
    return encode_response(request, ClockTime(26, 13, 1, 0, 0, 0, 0), meter=METER)


async def test_an_impossible_clock_is_a_counted_logged_payload_failure() -> None:
    async with rogue_meter(impossible_clock) as target:
        sink = Collector()
        session = session_for(target, settings(), plan_of(["time"]), sink)
        with capture_logs() as logs:
            await session.poll(["fast"])
    (failure,) = sink.of(ReadFailure)
    assert (failure.object_name, failure.reason) == ("time", "payload")
    assert "not a valid date" in failure.detail
    assert not sink.of(Reading)
    (outcome,) = sink.of(SessionOutcome)
    assert not outcome.ok and outcome.reason == "payload" and outcome.failed_requests == 1
    assert session.counts.invalid_values == 1
    assert session.counts.request_failures["payload"] == 1
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["reason"]) for e in warnings] == [
        ("meter sent an invalid answer", "payload")
    ]
