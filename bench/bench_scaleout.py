"""Several daemons sharing one fleet against one daemon holding it all; appends from several.

``python -m bench --only scaleout``. Two parts, each on a scratch database (the embedded
server, or a new database on ``FLOWSD_DATABASE_URL``):

1. **Appends**: batches of 1,000 events (the events benchmark's production mix) from one
   writer without fencing, one writer with fencing (every batch carries its meters' lease
   epochs, as a daemon's do) and four writer processes with fencing at once (distinct
   meters each); events/s over all writers. The append lock serialises writers, so four
   can only overlap their encoding with another's commit.
2. **Fleet**: the simulator (``flowsd simulate --register``, one process) and ``flowsd run``
   processes: one daemon holding every meter, then four sharing them through leases. The
   poll plan is the production plan (``config/flowsd.toml``) with its cadences divided by
   ``FLOWSD_BENCH_SCALEOUT_COMPRESS`` (20: half-hourly every 90 s), so a short run sees every
   cadence several times; the back-fill horizon is one hour. After a warm-up, over a window:
   requests/s answered against the rate the plan asks, daemon CPU per request (all daemons'
   user + system), events appended per second. The daemons share the shipped cap of 256 meter
   connections in flight (``IN_FLIGHT``); the new-connection rate cap stays per daemon. With
   four daemons, one is then killed with SIGKILL: the time until its leases are all held by
   the others, and until every one of its meters has been polled again (its next slot under
   the plan; session state rows).

Knobs: ``FLOWSD_BENCH_SCALEOUT_METERS`` (4,000; ``--quick`` 400), ``..._COMPRESS`` (20),
``..._WARMUP_SECONDS`` (120; quick 40), ``..._WINDOW_SECONDS`` (60; quick 20),
``..._LEASE_SECONDS`` (10). The issue's size is 20,000 meters (4 x 5,000); a shared 2-core
machine cannot host that and the simulator at once, so the default is a fifth of it and the
figures per request and per meter are what carry over. The load average is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.bench_events import _events
from bench.common import Result
from flowsd.config import load_config
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.events.store import append_batch
from flowsd.meters.plan import EventLogRead, ObjectRead, PollPlan, ProfileLogsRead

AREA = "scaleout"
HERE = Path(__file__).resolve().parent
BASE_ADDRESS = "127.93.0.1"
BATCH = 1000
# Meter connections open at once, over all daemons (the shipped per-daemon cap): split among
# several daemons. The simulator holds one listening socket per meter, so at 19,500 meters it
# has about 500 descriptors left under this machine's 20,000 for accepted connections; four
# daemons at 256 each overflowed it and every request timed out.
IN_FLIGHT = 256


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"FLOWSD_BENCH_SCALEOUT_{name}", default))


def _load() -> float:
    return os.getloadavg()[0]


# --- part 1: appends ------------------------------------------------------------------------


async def _writer(url: str, meters: list[uuid.UUID], fenced: bool, seconds: float) -> int:
    """Append batches for ``seconds``; returns the events committed."""
    conn = await asyncpg.connect(url)
    try:
        epochs: dict[uuid.UUID, int] = {}
        if fenced:
            rows = await conn.fetch(
                """INSERT INTO flowsd.meter_lease (meter_id, daemon, epoch, expires_at)
                   SELECT m, 'bench', nextval('flowsd.meter_lease_epoch_seq'),
                          now() + interval '1 day'
                   FROM unnest($1::uuid[]) m
                   ON CONFLICT (meter_id) DO UPDATE SET expires_at = excluded.expires_at
                   RETURNING meter_id, epoch""",
                meters,
            )
            epochs = {row["meter_id"]: row["epoch"] for row in rows}
        offset = int.from_bytes(os.urandom(3), "big") * 1000
        committed = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            events = _events(meters, BATCH, offset)
            offset += BATCH
            result = await append_batch(conn, events, epochs=epochs or None)
            committed += len(result.events)
        return committed
    finally:
        await conn.close()


def writer_child(url: str, meters: str, fenced: bool, seconds: float) -> None:
    """Child process of the four-writer run: prints its committed count."""
    ids = [uuid.UUID(m) for m in meters.split(",")]
    print(asyncio.run(_writer(url, ids, fenced, seconds)), flush=True)


async def _appends(url: str, quick: bool) -> list[Result]:
    seconds = 5.0 if quick else 15.0
    conn = await asyncpg.connect(url)
    try:
        meters = [
            row["id"]
            for row in await conn.fetch(
                "INSERT INTO flows.meter_registry (id) SELECT unnest($1::uuid[]) RETURNING id",
                [uuid.uuid4() for _ in range(1000)],
            )
        ]
    finally:
        await conn.close()
    results = []
    for name, fenced in (("1 writer, unfenced", False), ("1 writer, fenced", True)):
        load = _load()
        committed = await _writer(url, meters, fenced, seconds)
        results.append(
            Result(AREA, f"append {name}", committed / seconds, "events/s", {"load": load})
        )
    load = _load()
    quarter = len(meters) // 4
    children = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured window
            [
                sys.executable,
                "-c",
                "import sys; from bench.bench_scaleout import writer_child as w; "
                "w(sys.argv[1], sys.argv[2], True, float(sys.argv[3]))",
                url,
                ",".join(str(m) for m in meters[i * quarter : (i + 1) * quarter]),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        for i in range(4)
    ]
    total = 0
    for child in children:
        out, _ = child.communicate(timeout=seconds + 120)
        total += int(out.strip().splitlines()[-1])
    results.append(
        Result(AREA, "append 4 writers, fenced", total / seconds, "events/s", {"load": load})
    )
    return results


# --- part 2: the fleet ----------------------------------------------------------------------

_CONFIG = """
[state]
directory = "{state}"
[logging]
level = "warning"
format = "json"
[management]
listen = "127.0.0.1:{management}"
[daemon]
instance = "{name}"
[leases]
lease_seconds = {lease}
[meters]
port = {port}
backfill_horizon_hours = 1
max_connections_in_flight = {in_flight}
[poll]
cadences = {{ half_hourly = {half_hourly}, hourly = {hourly}, daily = {daily} }}
"""


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(port: int, prefix: str, having: str = "") -> float:
    """Sum of every sample whose line starts with ``prefix`` (and contains ``having``)."""
    total = 0.0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(prefix) and having in line:
                    total += float(line.rsplit(" ", 1)[1])
    except OSError:
        return 0.0
    return total


def _planned_per_second(plan: PollPlan, meters: int) -> float:
    """Requests per second the plan asks of ``meters`` single-phase meters at steady state
    (profile logs: one request per log per round, the cadence being under half an hour)."""
    per_hour = 0.0
    for cadence in plan.cadences("single_phase"):
        per_round = 0.0
        for item in cadence.items:
            if isinstance(item, ObjectRead | EventLogRead):
                per_round += 1
            elif isinstance(item, ProfileLogsRead):
                per_round += 2
        per_hour += per_round * 3600.0 / cadence.period_seconds
    return per_hour * meters / 3600.0


async def _fleet_run(
    url: str, scratch: Path, meters: int, daemons: int, settings: dict[str, float]
) -> dict[str, Any]:
    compress = settings["compress"]
    lease = settings["lease"]
    port = _free_port()
    conn = await asyncpg.connect(url)
    await migrate(conn)
    sim = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured window
        [
            sys.executable, "-m", "flowsd", "simulate", "--meters", str(meters),
            "--base-address", BASE_ADDRESS, "--port", str(port), "--history-days", "1",
            "--hardware", "C1.w,EMA1.w,B1.w", "--register", "--database-url", url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(scratch / f"simulate-{meters}-{daemons}.log").open("wb"),
    )  # fmt: skip
    nodes: list[tuple[str, subprocess.Popen[bytes], int]] = []
    try:
        while await conn.fetchval("SELECT count(*) FROM flows.meter_registry") < meters:
            if sim.poll() is not None:
                said = (scratch / f"simulate-{meters}-{daemons}.log").read_text().strip()
                raise RuntimeError(f"the simulator stopped: {said}")
            await asyncio.sleep(0.5)
        for n in range(daemons):
            name = f"d{n}"
            home = scratch / f"{meters}-{daemons}-{name}"
            home.mkdir()
            management = _free_port()
            config = home / "flowsd.toml"
            config.write_text(
                _CONFIG.format(
                    state=home / "state",
                    management=management,
                    name=name,
                    lease=lease,
                    port=port,
                    in_flight=IN_FLIGHT // daemons,
                    half_hourly=1800 / compress,
                    hourly=3600 / compress,
                    daily=86400 / compress,
                )
            )
            process = subprocess.Popen(  # noqa: ASYNC220 - as above
                [sys.executable, "-m", "flowsd", "run", "--config", str(config)],
                env={**os.environ, "FLOWSD_DATABASE_URL": url, "FLOWSD_INSTANCE": name},
                stdout=subprocess.DEVNULL,
                stderr=(home / "stderr.log").open("wb"),
            )
            nodes.append((name, process, management))
        plan = PollPlan.from_config(load_config(str(config)).poll)
        await asyncio.sleep(settings["warmup"])

        def sample() -> tuple[float, float, float]:
            requests = sum(
                _metric(m, "flowsd_meter_requests_total{", 'outcome="ok"') for _, _, m in nodes
            )
            events = sum(_metric(m, "flowsd_events_appended_total") for _, _, m in nodes)
            cpu = sum(_cpu(p.pid) for _, p, _ in nodes)
            return requests, events, cpu

        load = _load()
        r0, e0, c0 = sample()
        started = time.monotonic()
        await asyncio.sleep(settings["window"])
        r1, e1, c1 = sample()
        elapsed = time.monotonic() - started
        figures: dict[str, Any] = {
            "meters": meters,
            "daemons": daemons,
            "requests_per_second": (r1 - r0) / elapsed,
            "planned_per_second": _planned_per_second(plan, meters),
            "cpu_ms_per_request": 1000 * (c1 - c0) / max(1.0, r1 - r0),
            "events_per_second": (e1 - e0) / elapsed,
            "load": load,
            "database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())"),
            "events": await conn.fetchval("SELECT count(*) FROM flows.meter_event_log"),
        }
        if daemons > 1:
            figures.update(await _kill_one(conn, nodes[-1], lease))
        return figures
    finally:
        for _, process, _ in nodes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for _, process, _ in nodes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()
        await conn.close()


async def _kill_one(
    conn: asyncpg.Connection, node: tuple[str, subprocess.Popen[bytes], int], lease: float
) -> dict[str, float]:
    name, process, _ = node
    mine = [
        r["meter_id"]
        for r in await conn.fetch("SELECT meter_id FROM flowsd.meter_lease WHERE daemon = $1", name)
    ]
    process.kill()
    killed_at = await conn.fetchval("SELECT now()")
    started = time.monotonic()
    taken = polled = None
    while time.monotonic() - started < 20 * lease + 600:
        if taken is None:
            held = await conn.fetchval(
                """SELECT count(*) FROM flowsd.meter_lease
                   WHERE meter_id = ANY($1::uuid[]) AND daemon IS NOT NULL AND daemon <> $2
                     AND acquired_at > $3""",
                mine,
                name,
                killed_at,
            )
            if held == len(mine):
                taken = time.monotonic() - started
        again = await conn.fetchval(
            """SELECT count(*) FROM flowsd.meter_session_state
               WHERE meter_id = ANY($1::uuid[]) AND last_poll_at > $2""",
            mine,
            killed_at,
        )
        if taken is not None and again == len(mine):
            polled = time.monotonic() - started
            break
        await asyncio.sleep(0.25)
    return {
        "killed_meters": len(mine),
        "takeover_seconds": -1.0 if taken is None else taken,
        "polled_again_seconds": -1.0 if polled is None else polled,
    }


async def _run(url: str, quick: bool, scratch: Path) -> list[Result]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    results = await _appends(url, quick)
    settings = {
        "compress": _env("COMPRESS", 20),
        "lease": _env("LEASE_SECONDS", 10),
        "warmup": _env("WARMUP_SECONDS", 40 if quick else 120),
        "window": _env("WINDOW_SECONDS", 20 if quick else 60),
    }
    meters = int(_env("METERS", 400 if quick else 4000))
    admin = await asyncpg.connect(url)
    try:
        for daemons in (1, 4):
            name = f"flowsd_bench_scaleout_{uuid.uuid4().hex[:8]}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                f = await _fleet_run(with_database(url, name), scratch, meters, daemons, settings)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            label = f"{daemons} x {meters // daemons} meters"
            detail = {**f, **settings}
            results.append(
                Result(AREA, f"{label}: requests/s", f["requests_per_second"], "req/s", detail)
            )
            results.append(
                Result(AREA, f"{label}: planned", f["planned_per_second"], "req/s", detail)
            )
            results.append(
                Result(AREA, f"{label}: CPU/request", f["cpu_ms_per_request"], "ms", detail)
            )
            results.append(
                Result(AREA, f"{label}: appended", f["events_per_second"], "events/s", detail)
            )
            if daemons > 1:
                results.append(
                    Result(AREA, f"{label}: takeover", f["takeover_seconds"], "s", detail)
                )
                results.append(
                    Result(AREA, f"{label}: polled again", f["polled_again_seconds"], "s", detail)
                )
    finally:
        await admin.close()
    return results


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-scaleout-") as tmp:
        scratch = Path(tmp)
        configured = os.environ.get("FLOWSD_DATABASE_URL")
        if configured:
            return asyncio.run(_scratch(configured, quick, scratch))
        server = start_embedded(scratch / "pg", cleanup="delete")
        try:
            return asyncio.run(_run(server.url("postgres"), quick, scratch))
        finally:
            server.stop()


async def _scratch(url: str, quick: bool, scratch: Path) -> list[Result]:
    name = f"flowsd_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return await _run(with_database(url, name), quick, scratch)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
