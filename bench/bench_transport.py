"""Meter transport: CPU per request of flowsd's transport (a non-blocking socket on the loop's
reader/writer callbacks) vs an asyncio Protocol (flowsd's transport until issue 15) vs anyio
streams vs asyncio streams.

The simulator runs in a child process (so its CPU is not counted); this process runs
``workers`` concurrent clients, each doing what flowsd does per request: connect, send a
``csq_net_op`` read, read until the frame is complete, close. Reported per client API:
round trips per second and client CPU microseconds per round trip (user + system). The
last figure is the whole engine (FleetSupervisor with 3 objects per meter per second),
i.e. transport plus codec, scheduling, observations and metrics.

Run: ``python -m bench --only transport`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import anyio

from bench.common import Result, cpu_seconds
from flowsd.config import MetersConfig, PollConfig
from flowsd.emop import ReadRequest, encode_request, object_id
from flowsd.emop.frame import frame_size
from flowsd.meters import FleetSupervisor, MeterTarget, Observation, PollPlan
from flowsd.meters.transport import connect
from flowsd.ops.logs import configure_logging

AREA = "transport"
_SERVER = """
import asyncio, sys
from flowsd.sim.fleet import SimulatedFleet

async def main(n):
    async with SimulatedFleet(meters=n, seed=1, base_address="127.79.0.1", port=0) as fleet:
        for m in fleet.meters:
            print(m.ip_address, m.port, flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""

Address = tuple[str, int]
Exchange = Callable[[Address, bytes], Awaitable[bytes]]


async def flowsd_exchange(address: Address, request: bytes) -> bytes:
    """One request as flowsd's transport makes it: connect, one frame each way, close."""
    conn = await connect(address[0], address[1], 5.0)
    try:
        return await conn.exchange(request, 5.0)
    finally:
        conn.close()


class _OneFrame(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if frame_size(self.buffer) is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _protocol(address: Address, request: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    with anyio.fail_after(5.0):
        transport, protocol = await loop.create_connection(_OneFrame, address[0], address[1])
        try:
            transport.write(request)
            await protocol.done
            return bytes(protocol.buffer)
        finally:
            transport.close()


async def _anyio_streams(address: Address, request: bytes) -> bytes:
    with anyio.fail_after(5.0):
        async with await anyio.connect_tcp(address[0], address[1]) as stream:
            await stream.send(request)
            buffer = bytearray()
            while frame_size(buffer) is None:
                buffer += await stream.receive()
            return bytes(buffer)


async def _asyncio_streams(address: Address, request: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5.0)
    try:
        writer.write(request)
        buffer = bytearray()
        while frame_size(buffer) is None:
            chunk = await asyncio.wait_for(reader.read(512), 5.0)
            if not chunk:
                break
            buffer += chunk
        return bytes(buffer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def measure_exchanges(
    exchange: Exchange, addresses: list[Address], workers: int, seconds: float
) -> tuple[int, float, float]:
    """``workers`` clients making requests back to back for ``seconds``: (answered requests,
    CPU seconds of this process, wall seconds)."""
    request = encode_request(ReadRequest(object_id("csq_net_op")))
    done = 0
    errors = 0
    deadline = time.monotonic() + seconds
    counter = itertools.count()

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            address = addresses[next(counter) % len(addresses)]
            try:
                reply = await exchange(address, request)
                if frame_size(reply) is not None:
                    done += 1
                else:
                    errors += 1
            except (OSError, TimeoutError):
                errors += 1

    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return done, cpu_seconds() - cpu0, time.perf_counter() - wall0


async def _engine(addresses: list[Address], seconds: float) -> tuple[int, float, float]:
    """The whole engine (supervisor, sessions, codec, observations) polling the fleet."""
    settings = MetersConfig(
        min_gap_seconds=0.0,
        schedule_jitter_seconds=0.0,
        schedule_tick_seconds=0.05,
        max_new_connections_per_second=100_000.0,
        new_connections_burst=1000,
    )
    objects = ["csq_net_op", "firmware_version", "backlight"]  # every hardware kind has them
    poll = PollConfig(cadences={"p": 1.0}, single_phase={"p": objects}, three_phase={"p": objects})
    received = 0

    async def sink(batch: Sequence[Observation]) -> None:
        nonlocal received
        received += len(batch)

    supervisor = FleetSupervisor(settings, PollPlan.from_config(poll), sink)
    supervisor.apply(
        MeterTarget(
            meter_id=uuid.UUID(int=i + 1), serial=None, ip_address=host, port=port, hardware="B1.w"
        )
        for i, (host, port) in enumerate(addresses)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        await anyio.sleep(1.5)  # first slots
        done0, cpu0, wall0 = supervisor.statistics().requests_ok, cpu_seconds(), time.perf_counter()
        await anyio.sleep(seconds)
        done = supervisor.statistics().requests_ok - done0
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        await supervisor.stop()
    return done, cpu, wall


def run(quick: bool) -> list[Result]:
    configure_logging("warning", fmt="json")
    meters, workers, seconds, rounds = (20, 20, 1.0, 1) if quick else (200, 50, 3.0, 3)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(meters)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert server.stdout is not None
        addresses: list[Address] = []
        for line in server.stdout:
            if line.strip() == "ready":
                break
            host, port = line.split()
            addresses.append((host, int(port)))
        apis: dict[str, Exchange] = {
            "flowsd_transport": flowsd_exchange,
            "asyncio_protocol": _protocol,
            "asyncio_streams": _asyncio_streams,
            "anyio_streams": _anyio_streams,
        }
        totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in apis}
        for _ in range(rounds):  # round robin, so machine noise hits every API alike
            for name, exchange in apis.items():
                measured = asyncio.run(measure_exchanges(exchange, addresses, workers, seconds))
                for i, value in enumerate(measured):
                    totals[name][i] += value
        totals["engine_3_objects_per_second_per_meter"] = [0.0, 0.0, 0.0]
        for _ in range(rounds):
            measured = asyncio.run(_engine(addresses, seconds * 2))
            for i, value in enumerate(measured):
                totals["engine_3_objects_per_second_per_meter"][i] += value
        results = []
        for name, (done, cpu, wall) in totals.items():
            detail: dict[str, object] = {"meters": meters, "workers": workers, "loop": "asyncio"}
            results.append(Result(AREA, f"{name} cpu per request", cpu / done * 1e6, "µs", detail))
            results.append(Result(AREA, f"{name} requests/s", done / wall, "req/s", detail))
        return results
    finally:
        server.terminate()
        server.wait(timeout=10)
