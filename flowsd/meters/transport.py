"""The only module that touches meter sockets: one request frame out, one frame back.

Built on a non-blocking socket and the event loop's reader/writer callbacks, not on an
asyncio transport: a request is a connect, one small write, a read until the frame is complete
and a close, and asyncio's transport machinery (a protocol object, its callbacks, waiter
futures, buffers) was a large share of the CPU of that. Measured back to back against the
simulator with ``bench/bench_transport.py``'s client loop (this machine, 8 clients): about
120 µs of client CPU per round trip, against about 205 µs for the ``asyncio.Protocol``
transport this replaced (the benchmark's own minimal Protocol client sits between the two).
A timeout is one event-loop timer per exchange (or connect) that wakes the waiting future
and marks the connection expired: an anyio cancel scope per exchange, with its task
bookkeeping, cost more CPU than the rest of the exchange's Python. A session cancelled by its
watchdog or by shutdown is cancelled at the same ``await`` and, as a timeout, leaves no reader
or writer registered; the socket is closed by :meth:`MeterConnection.close`.

A response is complete when :func:`flowsd.emop.frame.frame_size` says so (``frame_length + 1``
bytes, SPEC §3), however many TCP segments that takes; bytes after it are ignored. The first
byte not being 0x7e ends the read at once (the codec then reports the bad delimiter). Failures are
:class:`TransportError` with a ``reason`` from :data:`~flowsd.meters.observations.FailureReason`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import Any

import anyio

from flowsd.emop.frame import frame_size
from flowsd.meters.observations import FailureReason

# Connection-level reasons worth another attempt; anything else the meter said is final.
RETRYABLE: frozenset[FailureReason] = frozenset(
    {"refused", "connect_timeout", "unreachable", "reset", "closed", "read_timeout"}
)

_RECV_SIZE = 65536


class TransportError(Exception):
    """A connection-level failure with a reason and the bytes received so far."""

    def __init__(self, reason: FailureReason, detail: str = "", received: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.received = received


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ExpiredError(Exception):
    """The exchange's or connect's time ran out while it waited on the socket."""


class Traffic:
    """Bytes sent to and received from meters, over every connection that shares it."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


class MeterConnection:
    """One TCP connection to a meter; :meth:`exchange` may be called again (persistent mode)."""

    def __init__(
        self, sock: socket.socket, traffic: Traffic, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._sock = sock
        # The loop it was opened on, kept: on Python 3.11 every asyncio.get_running_loop()
        # is a getpid() system call, and a request would make four.
        self._loop = loop
        self._traffic = traffic
        self._closed = False  # by us, or the meter closed or reset it
        self._used = False
        self._waiting: asyncio.Future[None] | None = None  # a task waits on the socket
        self._expired = False  # the running exchange's (or connect's) timer fired
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def usable(self) -> bool:
        """Open, as far as can be told without waiting (an end of stream or a reset that has
        arrived since the last exchange counts as closed)."""
        if self._closed:
            return False
        try:
            if self._sock.recv(1, socket.MSG_PEEK):
                return True  # stray bytes: dropped by the next exchange
        except BlockingIOError:
            return True
        except OSError:
            pass
        self._closed = True
        return False

    async def exchange(self, request: bytes, read_timeout: float) -> bytes:
        """Send ``request`` and return the response frame (without trailing extra bytes)."""
        sock = self._sock
        if self._closed:
            raise TransportError("closed", "connection already closed")
        if self._used:
            self._drop_stray_bytes()
        self._used = True
        loop = self._loop
        buffer = bytearray()
        error: OSError | None = None
        timer = self._start_timer(loop, read_timeout)
        try:
            await self._send(request, loop)
            while True:
                await self._ready(loop.add_reader, loop.remove_reader)
                try:
                    data = sock.recv(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    self._closed = True
                    break
                buffer += data
                if frame_size(buffer) is not None:
                    break
        except _ExpiredError:
            pass
        except OSError as exc:
            self._closed = True
            error = exc
        finally:
            timer.cancel()
        data = bytes(buffer)
        self.bytes_received += len(data)
        self._traffic.received += len(data)
        size = frame_size(data)
        if size is not None:
            return data[:size]
        if self._expired:
            raise TransportError("read_timeout", f"{len(data)} bytes within {read_timeout}s", data)
        if data:
            raise TransportError("truncated", f"closed after {len(data)} bytes", data)
        if isinstance(error, ConnectionResetError):
            raise TransportError("reset", str(error))
        raise TransportError("closed", "closed without a reply")

    def _start_timer(self, loop: asyncio.AbstractEventLoop, seconds: float) -> asyncio.TimerHandle:
        """Arm the timeout of one exchange or connect: :meth:`_ready` raises
        :class:`_ExpiredError` once it has fired."""
        self._expired = False
        return loop.call_at(loop.time() + seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting is not None:
            _wake(self._waiting)

    async def _ready(self, add: Callable[..., Any], remove: Callable[[int], Any]) -> None:
        """Until the socket is readable (``add``: the loop's ``add_reader``) or writable;
        :class:`_ExpiredError` when the running timer fired first."""
        if self._expired:
            raise _ExpiredError
        fd = self._sock.fileno()
        future = self._loop.create_future()
        add(fd, _wake, future)
        self._waiting = future
        try:
            await future
        finally:
            self._waiting = None
            if self._sock.fileno() == fd:  # not closed meanwhile (see close)
                remove(fd)
        if self._expired:
            raise _ExpiredError

    async def _send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        view = memoryview(request)
        while view:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                await self._ready(loop.add_writer, loop.remove_writer)
                continue
            self.bytes_sent += sent
            self._traffic.sent += sent
            view = view[sent:]

    def _drop_stray_bytes(self) -> None:
        """Bytes that arrived between two exchanges belong to neither (persistent mode)."""
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._closed = True
                return
            if not data:
                self._closed = True
                return

    def close(self) -> None:
        """Close the socket; a task waiting on it (another task's exchange) is woken first
        and sees a closed connection, and the loop forgets the descriptor before it can be
        reused by another socket."""
        self._closed = True
        fd = self._sock.fileno()
        if fd == -1:
            return
        if self._waiting is not None:
            loop = self._waiting.get_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            _wake(self._waiting)
        self._sock.close()


async def connect(
    host: str, port: int, connect_timeout: float, traffic: Traffic | None = None
) -> MeterConnection:
    """Open a TCP connection, counting its bytes in ``traffic`` (when given);
    :class:`TransportError` on refusal, timeout or other errors."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection = MeterConnection(sock, traffic or Traffic(), loop)
    try:
        sock.setblocking(False)
        started = loop.time()
        address = _literal_address(host, port)
        if address is None:
            with anyio.move_on_after(connect_timeout):
                address = await _resolve(loop, host, port)
            if address is None:
                raise TransportError("connect_timeout", f"no connection within {connect_timeout}s")
        code = sock.connect_ex(address)
        if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            timer = connection._start_timer(loop, connect_timeout - (loop.time() - started))
            try:
                await connection._ready(loop.add_writer, loop.remove_writer)
            except _ExpiredError:
                raise TransportError(
                    "connect_timeout", f"no connection within {connect_timeout}s"
                ) from None
            finally:
                timer.cancel()
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            detail = f"[Errno {code}] {os.strerror(code)}: {host}:{port}"
            if code == errno.ECONNREFUSED:
                raise TransportError("refused", detail)
            if code == errno.ECONNRESET:
                raise TransportError("reset", detail)
            if code == errno.ETIMEDOUT:
                raise TransportError("connect_timeout", detail)
            raise TransportError("unreachable", detail)
    except BaseException:
        connection.close()
        raise
    return connection


def _literal_address(host: str, port: int) -> tuple[str, int] | None:
    """``(host, port)`` when ``host`` is an IPv4 address already, else None."""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    return host, port


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> tuple[str, int]:
    """``(address, port)`` for ``connect_ex``, a name resolved without blocking the loop."""
    try:
        found = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError("unreachable", str(exc)) from None
    if not found:
        raise TransportError("unreachable", f"{host} has no IPv4 address") from None
    return str(found[0][4][0]), port
