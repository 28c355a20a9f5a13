"""The management endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP/1.1.

Served from the daemon's own event loop (so a blocked loop shows as a failed scrape) by a
deliberately tiny handler: one request per connection, GET only, bounded request size and
read time. ``/healthz`` reports liveness (internal tasks alive); ``/readyz`` reports whether
flowsd can do its job (database reachable, sessions running), so a database outage makes it
unready but never "unhealthy" (which would invite pointless restarts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowsd.ops.metrics import REGISTRY

log = structlog.get_logger(__name__)

_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_SECONDS = 5.0

Check = Callable[[], bool]


@dataclass
class HealthChecks:
    """Named liveness and readiness checks; each returns True when fine."""

    liveness: dict[str, Check] = field(default_factory=dict)
    readiness: dict[str, Check] = field(default_factory=dict)
    # Lines added to /readyz's body under "details" (e.g. the database and why it is down).
    details: dict[str, Callable[[], str]] = field(default_factory=dict)

    def describe(self) -> dict[str, str]:
        found = {}
        for name, detail in self.details.items():
            try:
                found[name] = detail()
            except Exception as exc:
                found[name] = f"unknown ({type(exc).__name__})"
        return found

    @staticmethod
    def evaluate(checks: dict[str, Check]) -> tuple[bool, dict[str, bool]]:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        return all(results.values()), results


def parse_listen_address(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"management listen address {listen!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def render(path: str, checks: HealthChecks) -> bytes:
    """The full HTTP response for a GET of ``path``."""
    if path == "/metrics":
        return _response("200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
    if path in ("/healthz", "/readyz"):
        ready = path == "/readyz"
        ok, results = checks.evaluate(checks.readiness if ready else checks.liveness)
        reply: dict[str, object] = {"ok": ok, "checks": results}
        if ready and checks.details:
            reply["details"] = checks.describe()
        body = msgspec.json.encode(reply)
        status = "200 OK" if ok else "503 Service Unavailable"
        return _response(status, "application/json", body)
    return _response("404 Not Found", "text/plain", b"not found\n")


async def _handle(stream: anyio.abc.ByteStream, checks: HealthChecks) -> None:
    async with stream:
        request = b""
        with anyio.move_on_after(_READ_TIMEOUT_SECONDS):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST_BYTES:
                try:
                    request += await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        parts = request.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] != b"GET":
            reply = _response("400 Bad Request", "text/plain", b"GET only\n")
        else:
            reply = render(parts[1].split(b"?", 1)[0].decode("latin-1"), checks)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.send(reply)


async def serve_management(
    listen: str,
    checks: HealthChecks,
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound (host, port) through ``task_status``."""
    host, port = parse_listen_address(listen)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_address)
    log.info("management endpoint listening", address=f"{bound[0]}:{bound[1]}")
    task_status.started((str(bound[0]), int(bound[1])))
    async with listener:
        await listener.serve(lambda stream: _handle(stream, checks))
