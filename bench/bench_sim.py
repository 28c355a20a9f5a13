"""Simulator capacity: round trips per second it serves, and memory per idle meter.

The simulator runs in a child process pinned to one core; this process is the client,
pinned to the other core, so the CPU figures are the simulator's own. Each round trip is
what a poller does: a new TCP connection, one request, read to EOF, close. Reported:

* round trips per second achieved, and the simulator's CPU microseconds per round trip
  (its user + system time from /proc divided by the round trips), whose inverse is the
  capacity of one simulator core;
* RSS per idle meter at 1,000 and 10,000 meters: (RSS after every listener is open −
  RSS before) / meters, in the child, after a garbage collection; and, for comparison,
  the same for 10,000 bare listening sockets, with ``loop.add_reader`` accept callbacks,
  and with one asyncio ``Server`` each (what the fleet uses).

Run: ``python -m bench --only sim`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import subprocess
import sys
import time

from bench.common import Result
from flowsd.emop import EventLogRequest, ProfileLogRequest, ReadRequest, encode_request, object_id

AREA = "sim"
_CLIENT_CPU, _SERVER_CPU = 0, 1
_TICKS = os.sysconf("SC_CLK_TCK")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _serve(meters: int, base: str) -> None:
    from flowsd.sim.clock import SimClock  # noqa: PLC0415 - child process only
    from flowsd.sim.fleet import SimulatedFleet  # noqa: PLC0415

    gc.collect()
    before = _rss()
    fleet = SimulatedFleet(meters, seed=1, base_address=base, port=0, clock=SimClock(speed=60))
    async with fleet:
        gc.collect()
        after = _rss()
        report = {
            "pid": os.getpid(),
            "rss_before": before,
            "rss_after": after,
            "meters": [[m.ip_address, m.port] for m in fleet.meters[: min(meters, 500)]],
        }
        print(json.dumps(report), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def _pin(cpu: int) -> None:
    if (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def _start_server(meters: int, base: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    code = (
        "import asyncio, os, sys; from bench.bench_sim import _serve, _pin; "
        f"_pin({_SERVER_CPU}); asyncio.run(_serve({meters}, {base!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError("the simulator did not start")
    report: dict[str, object] = json.loads(line)
    return process, report


def _stop(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class _OneShot(asyncio.Protocol):
    """Client side of one round trip: send on connect, collect until EOF."""

    def __init__(self, request: bytes, done: asyncio.Future[int]) -> None:
        self.request = request
        self.done = done
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.received)


async def _hammer(
    addresses: list[tuple[str, int]], requests: list[bytes], workers: int, seconds: float
) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    stop_at = time.monotonic() + seconds
    counts = [0, 0]  # answered, failed

    async def worker(number: int) -> None:
        turn = number
        while time.monotonic() < stop_at:
            host, port = addresses[turn % len(addresses)]
            request = requests[turn % len(requests)]
            turn += workers
            done: asyncio.Future[int] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    functools.partial(_OneShot, request, done), host, port
                )
                received = await asyncio.wait_for(done, 5.0)
                transport.close()
                counts[0 if received else 1] += 1
            except (OSError, TimeoutError):
                counts[1] += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return counts[0], counts[1]


def _capacity(name: str, requests: list[bytes], seconds: float, meters: int) -> Result:
    process, report = _start_server(meters, "127.77.240.1")
    try:
        addresses = [(str(ip), int(port)) for ip, port in report["meters"]]  # type: ignore[attr-defined]
        pid = int(report["pid"])  # type: ignore[call-overload]
        _pin(_CLIENT_CPU)
        asyncio.run(_hammer(addresses, requests, 32, 0.5))  # warm-up
        cpu_before, started = _cpu_of(pid), time.monotonic()
        answered, failed = asyncio.run(_hammer(addresses, requests, 32, seconds))
        elapsed, cpu = time.monotonic() - started, _cpu_of(pid) - cpu_before
    finally:
        _stop(process)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    per_request = cpu / answered if answered else float("inf")
    return Result(
        area=AREA,
        name=f"round trips/s, new connection each ({name})",
        value=answered / elapsed,
        unit="round trips/s",
        detail={
            "simulator_cpu_us_per_round_trip": round(per_request * 1e6, 1),
            "one_core_capacity_round_trips_per_s": round(1 / per_request) if answered else 0,
            "simulator_cpu_share": round(cpu / elapsed, 3),
            "failed": failed,
            "meters": meters,
            "workers": 32,
            "seconds": seconds,
        },
    )


def _memory(meters: int) -> Result:
    process, report = _start_server(meters, "127.77.160.1")
    _stop(process)
    delta = int(report["rss_after"]) - int(report["rss_before"])  # type: ignore[call-overload]
    return Result(
        area=AREA,
        name=f"RSS per idle meter at {meters:,} meters",
        value=delta / meters,
        unit="bytes/meter",
        detail={"rss_delta_bytes": delta, "meters": meters},
    )


_LISTENER_PROBE = """
import asyncio, gc, ipaddress, os, socket, sys
from bench.bench_sim import _rss
async def main(kind, n):
    gc.collect(); before = _rss(); socks = []
    for i in range(n):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((str(ipaddress.IPv4Address("127.77.200.1") + i), 0)); s.listen(64)
        s.setblocking(False); socks.append(s)
    loop = asyncio.get_running_loop()
    if kind == "add_reader":
        for s in socks:
            loop.add_reader(s.fileno(), s.accept)
    elif kind == "server":
        kept = [await loop.create_server(asyncio.Protocol, sock=s) for s in socks]
    gc.collect(); print(_rss() - before)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _listener_memory(kind: str, meters: int) -> Result:
    """RSS per listening socket of the bare alternatives, for comparison with the fleet."""
    done = subprocess.run(
        [sys.executable, "-c", _LISTENER_PROBE, kind, str(meters)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return Result(
        area=AREA,
        name=f"RSS per listener, bare {kind} ({meters:,})",
        value=int(done.stdout.strip()) / meters,
        unit="bytes/meter",
        detail={"meters": meters},
    )


def run(quick: bool) -> list[Result]:
    seconds = 2.0 if quick else 8.0
    now = int(time.time()) - 946_684_800
    serial = [encode_request(ReadRequest(object_id("serial")))]
    poll_mix = [
        encode_request(ReadRequest(object_id(name)))
        for name in ("prepay_balance", "read_element_a", "csq_net_op", "time")
    ] + [
        encode_request(ProfileLogRequest(1, now - now % 7200 - 86_400)),
        encode_request(EventLogRequest(0)),
    ]
    results = [
        _capacity("serial read", serial, seconds, 200),
        _capacity("poll mix: balance, registers, csq, clock, profile log, event log",
                  poll_mix, seconds, 200),
    ]  # fmt: skip
    for meters in (1_000,) if quick else (1_000, 10_000):
        results.append(_memory(meters))
    if not quick:
        results += [_listener_memory(k, 10_000) for k in ("socket", "add_reader", "server")]
    return results
