"""The wire side: one listening socket per meter and an asyncio Protocol per connection.

A connection carries one request: bytes are collected until the frame-length byte says the
frame is complete (at most 256 bytes), the meter's answer is computed, encoded by the codec
and written in a single write, and the meter closes the connection. A request with a bad
CRC is answered with NAK 1. Faults drawn for the connection change how (or whether) the
answer is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, cast

from flowsd.emop import (
    DELIMITER,
    Address,
    CrcMismatchError,
    EmopError,
    NakCode,
    decode_frame,
    decode_frame_unverified,
    encode_nak,
    encode_response,
    frame_size,
)
from flowsd.sim.faults import Fault, FaultKind
from flowsd.sim.rand import Stream, draw, integer
from flowsd.sim.responder import Answer, respond

if TYPE_CHECKING:
    from flowsd.sim.fleet import SimulatedFleet

MAX_REQUEST_BYTES = 256
# A connection that never completes a request (or a blackholed one) is dropped after this.
IDLE_LIMIT_SECONDS = 120.0
SPLIT_GAP_SECONDS = 0.05
_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Close with a TCP RST (what a meter refusing the connection looks like)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class MeterConnection(asyncio.Protocol):
    """One accepted connection to meter ``index``."""

    __slots__ = ("answered", "buffer", "fault", "fleet", "index", "timer", "transport")

    def __init__(self, fleet: SimulatedFleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.buffer = bytearray()
        self.answered = False
        self.fault: Fault | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport (uvloop's is not a subclass of asyncio.Transport,
        # so no isinstance check: it failed every connection on uvloop).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        fleet = self.fleet
        fleet.stats.connections += 1
        decision = fleet.admit(self.index)
        if decision is not None:
            fleet.stats.count(decision)
            reset(transport)
            return
        self.fault = fleet.draw_fault(self.index)
        if self.fault is not None and self.fault.kind is FaultKind.REFUSE:
            fleet.stats.count(FaultKind.REFUSE)
            reset(transport)
            return
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(IDLE_LIMIT_SECONDS, transport.abort)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if self.answered or self.transport is None or len(buffer) >= MAX_REQUEST_BYTES:
            return  # one request per connection: anything after it is ignored
        buffer += data
        size = frame_size(buffer)
        if size is None:
            return
        if buffer[0] != DELIMITER:
            self._finish()  # not EMOP: a meter just drops the connection
            return
        self._answer(bytes(buffer[:size]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.connection_closed(self.index)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def _finish(self) -> None:
        if self.transport is not None:
            self.fleet.exchange_ended(self.index)
            self.transport.close()

    def _answer(self, raw: bytes) -> None:
        fleet, fault = self.fleet, self.fault
        self.answered = True
        if fault is not None and fault.kind is FaultKind.BLACKHOLE:
            fleet.stats.count(fault.kind)
            return  # hold the socket open until the idle limit or the client gives up
        try:
            request = decode_frame(raw)
        except CrcMismatchError:
            request = decode_frame_unverified(raw)
            answer = Answer(NakCode.FCS_ERROR)
        except EmopError:  # a frame length no request can have
            self._finish()
            return
        else:
            answer = respond(fleet.state, self.index, request, fleet.clock.now())
        nak = answer.nak
        if fault is not None and fault.kind is FaultKind.NAK:
            nak = int(fault.parameter)  # the request was still carried out
        meter = Address(0x00, fleet.state.identity(self.index).meter_address)
        try:
            if nak:
                wire = encode_nak(request, nak, meter=meter)
            else:
                wire = encode_response(request, answer.body, meter=meter, parsed=answer.request)
        except EmopError:
            self._finish()  # a simulator bug: do not leave the client waiting for an answer
            raise
        fleet.record(self.index, request, wire)
        fleet.stats.answered += 1
        if fault is not None:
            fleet.stats.count(fault.kind)
        if fault is None or fault.kind is FaultKind.NAK:
            self._send_and_close(wire)
        else:
            self._deliver_faulty(wire, fault)

    def _send_and_close(self, wire: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(wire)
            self._finish()

    def _deliver_faulty(self, wire: bytes, fault: Fault) -> None:
        loop = asyncio.get_running_loop()
        fleet = self.fleet
        keys = (fleet.seed, self.index, Stream.GARBAGE, fleet.connections_to(self.index))
        kind = fault.kind
        if kind is FaultKind.SLOW:
            loop.call_later(fault.parameter, self._send_and_close, wire)
        elif kind is FaultKind.BADCRC:
            self._send_and_close(wire[:-2] + bytes((wire[-2] ^ 0x5A, wire[-1] ^ 0xA5)))
        elif kind is FaultKind.TRUNCATE:
            self._send_and_close(wire[: integer(1, len(wire) - 1, *keys)])
        elif kind is FaultKind.GARBAGE:
            length = integer(1, 40, *keys)
            junk = bytearray(draw(*keys, i) & 0xFF for i in range(length))
            if junk[0] == DELIMITER:
                junk[0] = 0x00
            self._send_and_close(bytes(junk))
        elif kind is FaultKind.SPLIT:
            parts = max(2, min(int(fault.parameter), len(wire)))
            size = -(-len(wire) // parts)
            chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
            self._send_pieces(chunks, SPLIT_GAP_SECONDS)
        elif kind is FaultKind.TRICKLE:
            self._send_pieces([wire[i : i + 1] for i in range(len(wire))], fault.parameter)
        else:
            self._send_and_close(wire)

    def _send_pieces(self, pieces: list[bytes], gap: float) -> None:
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        transport.write(pieces[0])
        for number, piece in enumerate(pieces[1:], start=1):
            last = number == len(pieces) - 1
            loop.call_later(gap * number, self._write_piece, piece, last)

    def _write_piece(self, piece: bytes, last: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(piece)
        if last:
            self._finish()


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket bound to ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
