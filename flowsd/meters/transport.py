"""The only module that touches meter sockets: one request frame out, one frame back.

Built on an ``asyncio.Protocol`` rather than anyio streams: measured against the simulator
(``bench/bench_transport.py``) the Protocol costs several times less CPU per round trip,
and meter polling is the daemon's hot path. Timeouts are anyio cancel scopes, so a session
cancelled by its watchdog or by shutdown leaves no socket behind.

A response is complete when :func:`flowsd.emop.frame.frame_size` says so (``frame_length + 1``
bytes, SPEC §3), however many TCP segments that takes; bytes after it are ignored. The first
byte not being 0x7e ends the read at once (the codec then reports the bad delimiter). Failures are
:class:`TransportError` with a ``reason`` from :data:`~flowsd.meters.observations.FailureReason`.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import anyio

from flowsd.emop.frame import frame_size
from flowsd.meters.observations import FailureReason

# Connection-level reasons worth another attempt; anything else the meter said is final.
RETRYABLE: frozenset[FailureReason] = frozenset(
    {"refused", "connect_timeout", "unreachable", "reset", "closed", "read_timeout"}
)


class TransportError(Exception):
    """A connection-level failure with a reason and the bytes received so far."""

    def __init__(self, reason: FailureReason, detail: str = "", received: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.received = received


class _MeterProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if frame_size(self.buffer) is not None:
            self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Traffic:
    """Bytes sent to and received from meters, over every connection that shares it."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


class MeterConnection:
    """One TCP connection to a meter; :meth:`exchange` may be called again (persistent mode)."""

    def __init__(self, protocol: _MeterProtocol, traffic: Traffic) -> None:
        self._protocol = protocol
        self._traffic = traffic

    @property
    def usable(self) -> bool:
        return not self._protocol.closed

    async def exchange(self, request: bytes, read_timeout: float) -> bytes:
        """Send ``request`` and return the response frame (without trailing extra bytes)."""
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.closed:
            raise TransportError("closed", "connection already closed")
        protocol.buffer.clear()
        transport.write(request)
        self._traffic.sent += len(request)
        loop = asyncio.get_running_loop()
        with anyio.move_on_after(read_timeout) as scope:
            while frame_size(protocol.buffer) is None and not protocol.closed:
                protocol.waiter = loop.create_future()
                try:
                    await protocol.waiter
                finally:
                    protocol.waiter = None
        data = bytes(protocol.buffer)
        self._traffic.received += len(data)
        size = frame_size(data)
        if size is not None:
            return data[:size]
        if scope.cancelled_caught:
            raise TransportError("read_timeout", f"{len(data)} bytes within {read_timeout}s", data)
        if data:
            raise TransportError("truncated", f"closed after {len(data)} bytes", data)
        if isinstance(protocol.error, ConnectionResetError):
            raise TransportError("reset", str(protocol.error))
        raise TransportError("closed", "closed without a reply")

    def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()


async def connect(
    host: str, port: int, connect_timeout: float, traffic: Traffic | None = None
) -> MeterConnection:
    """Open a TCP connection, counting its bytes in ``traffic`` (when given);
    :class:`TransportError` on refusal, timeout or other errors."""
    loop = asyncio.get_running_loop()
    protocol = _MeterProtocol()
    with anyio.move_on_after(connect_timeout) as scope:
        try:
            await loop.create_connection(lambda: protocol, host, port, family=socket.AF_INET)
        except ConnectionRefusedError as exc:
            raise TransportError("refused", str(exc)) from None
        except ConnectionResetError as exc:
            raise TransportError("reset", str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                raise TransportError("connect_timeout", str(exc)) from None
            raise TransportError("unreachable", str(exc)) from None
    if scope.cancelled_caught:
        raise TransportError("connect_timeout", f"no connection within {connect_timeout}s")
    return MeterConnection(protocol, traffic or Traffic())
