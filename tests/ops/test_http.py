"""The management endpoint over a real loopback socket."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from flowsd.ops.http import HealthChecks, parse_listen_address, serve_management


async def _get(port: int, raw: bytes) -> tuple[str, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_metrics_health_and_readiness() -> None:
    database_up = False
    checks = HealthChecks(
        liveness={"supervisor": lambda: True},
        readiness={"database": lambda: database_up},
    )
    async with anyio.create_task_group() as tg:
        _, port = await tg.start(serve_management, "127.0.0.1:0", checks)
        status, body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert b"process_cpu_seconds_total" in body

        status, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert msgspec.json.decode(body) == {"ok": True, "checks": {"supervisor": True}}

        status, body = await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert status.endswith("503 Service Unavailable")
        assert msgspec.json.decode(body)["checks"] == {"database": False}
        database_up = True
        status, _ = await _get(port, b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"

        status, _ = await _get(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert status.endswith("404 Not Found")
        status, _ = await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status.endswith("400 Bad Request")
        tg.cancel_scope.cancel()


async def test_a_failing_check_counts_as_not_ok() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    ok, results = HealthChecks.evaluate({"broken": broken, "fine": lambda: True})
    assert not ok
    assert results == {"broken": False, "fine": True}


def test_parse_listen_address() -> None:
    assert parse_listen_address("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_listen_address("[::1]:80") == ("::1", 80)
    assert parse_listen_address(":9469") == ("127.0.0.1", 9469)
    with pytest.raises(ValueError, match="host:port"):
        parse_listen_address("localhost")
