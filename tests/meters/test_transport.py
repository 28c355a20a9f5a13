"""The meter transport over real loopback sockets: a frame in pieces, every failure reason,
persistent connections, and a close from another task while an exchange waits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from flowsd.meters.transport import TransportError, connect
from tests.support import wait_until

FRAME = bytes([0x7E, 5, 1, 2, 3, 4])  # frame_size: the length byte + 1
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _answer_in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(64):
        for piece in (FRAME[:1], FRAME[1:3], FRAME[3:] + b"\x00\x00"):  # bytes after it ignored
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)


async def _exchange_once(port: int, read_timeout: float = 5.0) -> bytes:
    conn = await connect("127.0.0.1", port, 5.0)
    try:
        return await conn.exchange(b"\x7e\x03\x00", read_timeout)
    finally:
        conn.close()


async def test_a_frame_in_pieces_and_a_persistent_connection() -> None:
    async with serve(_answer_in_pieces) as port:
        assert await _exchange_once(port) == FRAME
        conn = await connect("localhost", port, 5.0)  # a name is resolved
        try:
            for _ in range(3):
                assert conn.usable
                assert await conn.exchange(b"\x7e\x03\x00", 5.0) == FRAME
            assert conn.bytes_sent == 9
        finally:
            conn.close()
        assert not conn.usable


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"", "closed"),
        (FRAME[:3], "truncated"),
        (None, "read_timeout"),
        ("reset", "reset"),
    ],
)
async def test_failures_have_their_reason(reply: bytes | str | None, reason: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        if reply is None:
            await asyncio.sleep(2)
        elif reply == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            assert isinstance(reply, bytes)
            writer.write(reply)
            await writer.drain()
        writer.close()

    async with serve(handler) as port:
        with pytest.raises(TransportError) as info:
            await _exchange_once(port, read_timeout=0.3)
        assert info.value.reason == reason
        if reason == "truncated":
            assert info.value.received == FRAME[:3]


async def test_refused() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(TransportError) as info:
        await connect("127.0.0.1", port, 5.0)
    assert info.value.reason == "refused"


async def test_persistent_connection_closed_by_the_meter_is_not_usable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(FRAME + b"stray")  # bytes after the frame, then a close
        await writer.drain()
        writer.close()

    async with serve(handler) as port:
        conn = await connect("127.0.0.1", port, 5.0)
        try:
            assert await conn.exchange(b"\x7e\x03\x00", 5.0) == FRAME
            # The stray bytes, then the end of the stream.
            await wait_until(lambda: not conn.usable)
            with pytest.raises(TransportError, match="closed"):
                await conn.exchange(b"\x7e\x03\x00", 5.0)
        finally:
            conn.close()


async def test_close_from_another_task_wakes_the_exchange_and_frees_the_descriptor() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    async with serve(silent) as port:
        conn = await connect("127.0.0.1", port, 5.0)
        waiting = asyncio.ensure_future(conn.exchange(b"\x7e\x03\x00", 5.0))
        await asyncio.sleep(0.05)
        conn.close()
        with anyio.fail_after(1), pytest.raises(TransportError) as info:
            await waiting
        assert info.value.reason == "closed"
    # The closed descriptor's number is reused by the next socket: it must work normally.
    async with serve(_answer_in_pieces) as port:
        for _ in range(5):
            assert await _exchange_once(port) == FRAME
