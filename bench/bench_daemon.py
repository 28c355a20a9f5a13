"""The whole daemon against 1,000 and 10,000 simulated meters.

The simulator runs in a child process (pinned to one core when there are two); the daemon
runs in this process with the real appender on a durable PostgreSQL ($FLOWSD_DATABASE_URL,
a fresh database per size, or an embedded server in a temporary directory). The poll plan
reads 4 objects per meter every ``CADENCE`` seconds with the production pacing (2 s between
two requests to one meter). After one cadence of warm-up (every meter polled once), a window
is measured:

* meters held (sessions, and how many are online);
* requests per second sustained (and what the plan asks), p50 / p99 request latency as the
  engine measures it (from asking for a connection slot to the last byte, so it includes
  queueing for one of the ``max_connections_in_flight`` slots when the fleet saturates);
* events appended per second (committed to ``flows.meter_event_log``);
* CPU seconds of the daemon's process per 1,000 requests (PostgreSQL and the simulator are
  other processes, not counted; the details split out the kernel's share, ``cpu_system``);
* RSS per meter: the daemon process's growth from before start to after warm-up, per meter;
* in the details: the simulator's CPU share and the machine's busy share over the window
  (on a 2-core machine the simulator, PostgreSQL and the daemon share the cores);
* for comparison, the production approach (15 meters at a time, each meter's requests one
  after another with the same 2 s gap), computed from the measured latency: the time one
  round of the same work takes, against the daemon's time for it.

Run: ``python -m bench --only daemon`` (``--quick``: 1,000 meters, short window).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import asyncpg

from bench.common import Result, cpu_seconds, rate
from flowsd.app import Daemon
from flowsd.config import (
    AppenderConfig,
    Config,
    DaemonConfig,
    DatabaseConfig,
    ManagementConfig,
    MetersConfig,
    PollConfig,
    StateConfig,
)
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.meters.observations import Observation, Reading
from flowsd.ops.logs import configure_logging
from flowsd.sim.register import register_fleet
from flowsd.sim.state import FleetState

AREA = "daemon"
BASE_ADDRESS = "127.80.0.1"
SEED = 11
GAP_SECONDS = 2.0
PRODUCTION_WORKERS = 15
SINGLE_PHASE = ["prepay_balance", "csq_net_op", "instantaneous_voltage", "read_element_a"]
THREE_PHASE = [
    "csq_net_op",
    "three_phase_instantaneous_voltage_l1",
    "three_phase_instantaneous_voltage_l2",
    "three_phase_instantaneous_voltage_l3",
]
REQUESTS_PER_POLL = 4
_SIM_CPU = 1


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((BASE_ADDRESS, 0))
        port: int = probe.getsockname()[1]
        return port


async def serve(meters: int, port: int) -> None:
    """Child process: the simulated fleet until stdin closes."""
    from flowsd.sim.fleet import SimulatedFleet  # noqa: PLC0415 - child process only

    if (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {_SIM_CPU})
    async with SimulatedFleet(meters, seed=SEED, base_address=BASE_ADDRESS, port=port):
        print(json.dumps({"pid": os.getpid()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def _start_simulator(meters: int, port: int) -> subprocess.Popen[str]:
    code = (
        "import asyncio; from bench.bench_daemon import serve; "
        f"asyncio.run(serve({meters}, {port}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    if not process.stdout.readline():
        process.kill()
        raise RuntimeError("the simulator did not start")
    return process


def _config(url: str, state: Path, port: int, cadence: float) -> Config:
    return Config(
        database=DatabaseConfig(url=url),
        state=StateConfig(directory=str(state)),
        management=ManagementConfig(listen=""),
        meters=MetersConfig(
            port=port,
            min_gap_seconds=GAP_SECONDS,
            connect_timeout_seconds=5.0,
            read_timeout_seconds=5.0,
            max_connections_in_flight=128,
            max_new_connections_per_second=5000.0,
            new_connections_burst=500,
            schedule_jitter_seconds=0.0,
            schedule_tick_seconds=0.1,
        ),
        poll=PollConfig(
            cadences={"bench": cadence},
            single_phase={"bench": SINGLE_PHASE},
            three_phase={"bench": THREE_PHASE},
        ),
        appender=AppenderConfig(),
        daemon=DaemonConfig(state_flush_seconds=5.0, registry_reload_seconds=3600.0),
    )


class LatencyRecorder:
    """Wraps the daemon's sink and keeps the latency of each successful request."""

    def __init__(self, daemon: Daemon) -> None:
        self._inner = daemon.ingest
        self.latencies: list[float] = []
        self.recording = False

    async def __call__(self, observations: Sequence[Observation]) -> None:
        if self.recording:
            self.latencies.extend(o.latency_seconds for o in observations if isinstance(o, Reading))
        await self._inner(observations)


async def _prepare(url: str, meters: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        state = FleetState(seed=SEED, size=meters, base_address=BASE_ADDRESS, history_days=30)
        await register_fleet(conn, SEED, [state.identity(i) for i in range(meters)])
    finally:
        await conn.close()


async def _measure(
    url: str, meters: int, state: Path, cadence: float, window: float
) -> dict[str, float]:
    port = _free_port()
    await _prepare(url, meters)
    simulator = _start_simulator(meters, port)
    try:
        rss_before = _rss()
        daemon = Daemon(_config(url, state, port, cadence), url, handle_signals=False)
        recorder = LatencyRecorder(daemon)
        daemon.supervisor.sink = recorder
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            with anyio.fail_after(300):
                await daemon.ready.wait()
            await anyio.sleep(cadence + 2 * GAP_SECONDS * REQUESTS_PER_POLL)
            rss_after = _rss()
            stats = daemon.supervisor.statistics
            requests0, events0 = stats().requests_ok, daemon.appender.statistics().committed
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            system0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            sim0, (busy0, total0) = _process_cpu(simulator.pid), _machine_busy()
            recorder.recording = True
            await anyio.sleep(window)
            recorder.recording = False
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds() - cpu0
            system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system0
            sim_cpu = _process_cpu(simulator.pid) - sim0
            busy1, total1 = _machine_busy()
            requests = stats().requests_ok - requests0
            events = daemon.appender.statistics().committed - events0
            status = daemon.supervisor.status(top=0)
            daemon.request_stop()
    finally:
        if simulator.stdin is not None:
            simulator.stdin.close()
        simulator.wait(timeout=30)
    latencies = sorted(recorder.latencies) or [math.nan]
    return {
        "meters": status.meters,
        "online": status.online,
        "requests": requests,
        "failures": sum(status.request_failures.values()),
        "seconds": elapsed,
        "events": events,
        "cpu": cpu,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "rss_per_meter": (rss_after - rss_before) / meters,
        "skipped_slots": status.skipped_slots,
        "cpu_system": system,
        "simulator_cpu_share": sim_cpu / elapsed,
        "machine_busy_share": (busy1 - busy0) / max(total1 - total0, 1),
        "cpus": float(os.cpu_count() or 1),
    }


def _production_seconds(meters: int, latency: float) -> float:
    """15 workers, each meter's requests in turn with the 2 s gap between them."""
    per_meter = REQUESTS_PER_POLL * latency + (REQUESTS_PER_POLL - 1) * GAP_SECONDS
    return math.ceil(meters / PRODUCTION_WORKERS) * per_meter


def _results(meters: int, cadence: float, m: dict[str, float]) -> list[Result]:
    label = f"{meters:,} meters"
    requests_per_second = rate(int(m["requests"]), m["seconds"])
    daemon_round = meters * REQUESTS_PER_POLL / requests_per_second
    production_round = _production_seconds(meters, m["p50"])
    detail: dict[str, object] = dict(m)
    detail["cadence_seconds"] = cadence
    return [
        Result(AREA, f"meters held ({label}), online", m["online"], "meters", detail),
        Result(AREA, f"requests/s sustained ({label})", requests_per_second, "requests/s"),
        Result(
            AREA,
            f"requests/s the plan asks ({label})",
            meters * REQUESTS_PER_POLL / cadence,
            "requests/s",
        ),
        Result(AREA, f"request latency p50 ({label})", m["p50"] * 1000, "ms"),
        Result(AREA, f"request latency p99 ({label})", m["p99"] * 1000, "ms"),
        Result(
            AREA, f"events appended/s ({label})", rate(int(m["events"]), m["seconds"]), "events/s"
        ),
        Result(
            AREA,
            f"CPU per 1,000 requests, daemon process ({label})",
            m["cpu"] / max(m["requests"], 1) * 1000,
            "CPU seconds",
        ),
        Result(AREA, f"RSS per meter ({label})", m["rss_per_meter"], "bytes/meter"),
        Result(AREA, f"one round of the plan, flowsd ({label})", daemon_round, "seconds"),
        Result(
            AREA,
            f"one round of the plan, production 15-wide sequential ({label})",
            production_round,
            "seconds",
            {"workers": PRODUCTION_WORKERS, "gap_seconds": GAP_SECONDS, "latency_p50": m["p50"]},
        ),
    ]


def _database(base_url: str | None, tmp: Path) -> tuple[str, object | None]:
    if base_url:
        return base_url, None
    server = start_embedded(tmp / "pg", cleanup="delete")
    return server.url("postgres"), server


async def _fresh_database(admin_url: str) -> str:
    name = f"flowsd_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def _drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(quick: bool) -> list[Result]:
    configure_logging("warning")
    # (meters, cadence, window): the plan asks 4 x meters / cadence requests per second.
    sizes = [(1000, 20.0, 20.0)] if quick else [(1000, 30.0, 60.0), (10_000, 120.0, 60.0)]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-") as tmp:
        admin, server = _database(os.environ.get("FLOWSD_DATABASE_URL"), Path(tmp))
        try:
            for meters, cadence, window in sizes:

                async def one(
                    meters: int = meters, cadence: float = cadence, window: float = window
                ) -> dict[str, float]:
                    url = await _fresh_database(admin)
                    try:
                        return await _measure(
                            url, meters, Path(tmp) / f"state-{meters}", cadence, window
                        )
                    finally:
                        await _drop_database(admin, url)

                measured = anyio.run(one)
                results.extend(_results(meters, cadence, measured))
        finally:
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
    return results
