"""A TCP proxy in front of PostgreSQL that a test can cut and restore (a database outage)."""

from __future__ import annotations

from contextlib import suppress
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio
import anyio.abc


class DatabaseProxy:
    """Listens on 127.0.0.1 and relays to the server of ``url`` (TCP or Unix socket)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        self._upstream_port = parts.port or 5432
        self._unix = f"{host}/.s.PGSQL.{self._upstream_port}" if host.startswith("/") else None
        self._host = host
        self._parts = parts
        self.port = 0
        self.up = True
        self._streams: set[anyio.abc.ByteStream] = set()

    def url(self) -> str:
        """The URL reaching the server through this proxy."""
        user = self._parts.username or ""
        password = f":{self._parts.password}" if self._parts.password else ""
        netloc = f"{user}{password}@127.0.0.1:{self.port}"
        return urlunsplit(self._parts._replace(netloc=netloc, query=""))

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._relay)

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until :meth:`restore`."""
        self.up = False
        for stream in list(self._streams):
            self._close(stream)

    def restore(self) -> None:
        self.up = True

    def _close(self, stream: anyio.abc.ByteStream) -> None:
        self._streams.discard(stream)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if raw is not None:
            with suppress(OSError):
                raw.shutdown(2)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            if self._unix:
                upstream: (
                    anyio.abc.SocketStream | anyio.abc.UNIXSocketStream
                ) = await anyio.connect_unix(self._unix)
            else:
                upstream = await anyio.connect_tcp(self._host, self._upstream_port)
            async with upstream:
                self._streams.update((client, upstream))
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                        tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
                finally:
                    self._streams.discard(client)
                    self._streams.discard(upstream)

    @staticmethod
    async def _pump(
        source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            scope.cancel()
