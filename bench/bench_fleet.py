"""The daemon at fleet scale on the production plan: first start, back-fill, steady state.

``python -m bench --only fleet`` runs 19,500 simulated meters against ``flowsd``'s daemon with
``config/flowsd.toml`` as shipped (its poll plan, caps, timeouts, back-fill horizon); only the
database, the state directory, the meters' port and the log level are set by the harness.
``--quick`` runs 100 meters with the simulated clock at 30 times real time (an hour of the
plan every two minutes). Three processes, as an operator would run it: the simulator
(``flowsd.sim``, pinned to one core when there are two), the daemon (a child running
:class:`flowsd.app.Daemon`, its wall clock the simulator's), and this one, which samples the
daemon's ``/proc`` figures and reads the event log. Knobs (environment):

* ``FLOWSD_BENCH_FLEET_METERS``: fleet size;
* ``FLOWSD_BENCH_FLEET_SPEED``: simulated seconds per real second (the plan's rate scales with
  it; caps, pacing and timeouts stay in real seconds);
* ``FLOWSD_BENCH_FLEET_SECONDS``: the longest the run may take (default: until back-fill is
  complete plus a steady window, at most 10 hours for the full fleet);
* ``FLOWSD_BENCH_FLEET_SNAPSHOT_SECONDS``: with the memory profile, a further snapshot every
  so many seconds (default: none), to follow growth over a run too short to reach the marks;
* ``FLOWSD_BENCH_FLEET_MALLOC``: ``log`` (the daemon writes its RSS and glibc's account of
  its heap, mallinfo2, to stderr every minute) or ``trim`` (the same, then ``malloc_trim(0)``
  and its RSS after: how much of the RSS is freed heap glibc kept);
* ``FLOWSD_BENCH_FLEET_STEADY_SECONDS``: the steady-state window after back-fill (default
  half an hour of simulated time, at least 60 s);
* ``FLOWSD_BENCH_FLEET_PROFILE``: ``memory`` (tracemalloc in the daemon: bytes per meter by
  module at start, after the first pass and at the end; each snapshot is also dumped next to
  the text as ``.<n>.snap`` for ``tracemalloc.Snapshot.load`` and ``compare_to``) or ``cpu``
  (cProfile of the daemon, timed in the process's CPU time, over the steady window, or over
  the last third of the run), or ``perf`` (``perf record -e cpu-clock -g`` on the daemon over the
  same window: samples only while it is on a core, the kernel included, reported by shared
  object and by symbol; needs Linux ``perf``; run from Python 3.12 or later, it also names
  the innermost Python function of each sample, see :func:`innermost_python`);
  written next to the JSON results as ``fleet-<kind>-<time>.txt``. Profiling slows the
  daemon: its figures are not the benchmark's (least so with ``perf``).

Reported (the daemon process only; PostgreSQL and the simulator are other processes):

* RSS per meter: growth over the daemon's RSS before the meters were loaded, per meter, when
  the meters are loaded, after the first pass (every meter has a live reading), after
  back-fill and at the end, and the slope over the steady window (bytes per meter per hour);
* CPU per request (user + system CPU of the daemon / answered requests) per phase, and the
  cycle collector's share of that CPU (:class:`flowsd.ops.heap.CollectorClock`; per
  generation in the JSON);
* the transport floor, measured in the same run before the daemon starts (see
  :func:`measure_floor`), and CPU per request as a multiple of it: the same commit's CPU per
  request differs by more than two times between the machines sessions run on, and the
  multiple compares across them where the microseconds do not;
* requests/s against what the plan asks at steady state (object reads, one event-log page and
  one request per profile log and half hour);
* time to the first live reading (balance, signal or voltage) of every meter, and how many
  had one after one hourly cadence;
* back-fill: profile-log half hours owed at the start, the time until every meter's profile
  logs are caught up (or, when the run ends first, the share done and a projection at the
  rate measured).

The machine's load average is recorded next to the figures: prefer the CPU and byte counts,
which move far less with load than the rates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import Result
from flowsd.config import load_config
from flowsd.db.embedded import start_embedded
from flowsd.db.migrate import migrate
from flowsd.db.urls import with_database
from flowsd.emop.hardware import HardwareFamily
from flowsd.meters.backfill import HALF_HOUR
from flowsd.meters.plan import (
    EventLogRead,
    ObjectRead,
    PollPlan,
    ProfileLogsRead,
)
from flowsd.sim.clock import to_emop
from flowsd.sim.identity import ip_for
from flowsd.sim.register import register_fleet
from flowsd.sim.state import FleetState

AREA = "fleet"
SEED = 15
BASE_ADDRESS = "127.90.0.1"
HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "config" / "flowsd.toml"
RESULTS = HERE / "results"
_SIM_CPU = 1
_SAMPLE_SECONDS = 5.0
LIVE_TYPES = (1001, 1002, 1003, 1004)  # balance, signal quality, voltage, three-phase voltage
PROFILE_LOG_1 = 1014


@dataclass(frozen=True)
class Settings:
    meters: int
    speed: float
    max_seconds: float
    steady_seconds: float
    profile: str
    snapshot_seconds: float
    malloc: str

    @classmethod
    def from_environment(cls, quick: bool) -> Settings:
        env = os.environ
        meters = int(env.get("FLOWSD_BENCH_FLEET_METERS", 100 if quick else 19_500))
        speed = float(env.get("FLOWSD_BENCH_FLEET_SPEED", 30.0 if quick else 1.0))
        steady = float(env.get("FLOWSD_BENCH_FLEET_STEADY_SECONDS", max(60.0, 1800.0 / speed)))
        longest = 180.0 if quick else 36_000.0
        profile = env.get("FLOWSD_BENCH_FLEET_PROFILE", "")
        if profile not in ("", "memory", "cpu", "perf"):
            raise SystemExit(f"FLOWSD_BENCH_FLEET_PROFILE={profile!r}: memory, cpu or perf")
        if profile == "perf" and shutil.which("perf") is None:
            raise SystemExit("FLOWSD_BENCH_FLEET_PROFILE=perf: no perf on PATH (linux-perf)")
        return cls(
            meters=meters,
            speed=speed,
            max_seconds=float(env.get("FLOWSD_BENCH_FLEET_SECONDS", longest)),
            steady_seconds=steady,
            profile=profile,
            snapshot_seconds=float(env.get("FLOWSD_BENCH_FLEET_SNAPSHOT_SECONDS", 0)),
            malloc=env.get("FLOWSD_BENCH_FLEET_MALLOC", ""),
        )


# --- the simulator child ------------------------------------------------------------------


async def serve_fleet(
    meters: int, port: int, start_unix: float, origin: float, speed: float
) -> None:
    """Child process: the simulated fleet, its clock at ``start_unix`` when ``time.time()``
    was ``origin``, until stdin closes."""
    from flowsd.sim.clock import SimClock  # noqa: PLC0415 - child process only
    from flowsd.sim.fleet import SimulatedFleet  # noqa: PLC0415

    if (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {_SIM_CPU})
    now = start_unix + (time.time() - origin) * speed
    clock = SimClock(datetime.fromtimestamp(now, UTC), speed=speed)
    async with SimulatedFleet(
        meters, seed=SEED, base_address=BASE_ADDRESS, port=port, clock=clock, backlog=512
    ):
        print(json.dumps({"pid": os.getpid()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# --- the transport floor child ------------------------------------------------------------

FLOOR_WORKERS = 8
FLOOR_SECONDS = 10.0


def measure_floor(port: int, meters: int) -> None:
    """Child process: this machine's transport floor, measured against the simulated fleet
    before the daemon starts. ``FLOOR_WORKERS`` clients make requests back to back for
    ``FLOOR_SECONDS`` on the daemon's event loop, through flowsd's own transport (connect, one
    frame each way, close: what every meter request costs before any decoding, event or
    database work). Prints ``{"requests", "cpu", "wall"}`` as JSON."""
    from bench.bench_transport import flowsd_exchange, measure_exchanges  # noqa: PLC0415
    from flowsd.ops.event_loop import loop_factory  # noqa: PLC0415

    addresses = [(ip_for(BASE_ADDRESS, i), port) for i in range(min(meters, 64))]
    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        requests, cpu, wall = runner.run(
            measure_exchanges(flowsd_exchange, addresses, FLOOR_WORKERS, FLOOR_SECONDS)
        )
    if not requests:
        raise SystemExit(f"the transport floor: no whole frame from {len(addresses)} meters")
    print(json.dumps({"requests": requests, "cpu": cpu, "wall": wall}), flush=True)


def _transport_floor(port: int, meters: int) -> dict[str, float]:
    child = _child(f"from bench.bench_fleet import measure_floor; measure_floor({port}, {meters})")
    try:
        out, _ = child.communicate(timeout=FLOOR_SECONDS + 120)
    except subprocess.TimeoutExpired:
        child.kill()
        raise RuntimeError("the transport floor did not finish") from None
    if child.returncode:
        # The child's stderr is the harness's: its reason is printed above.
        raise RuntimeError(f"the transport floor failed ({child.returncode})")
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


# --- the daemon child ---------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class _MemoryProfile:
    """tracemalloc snapshots, dumped as they are taken; compared with the one taken before
    the meters were loaded by :func:`_describe_snapshots`, in the harness after the run (the
    grouping takes minutes under tracemalloc and would stop the daemon's loop meanwhile)."""

    def __init__(self, output: Path) -> None:
        import tracemalloc  # noqa: PLC0415

        self.tracemalloc = tracemalloc
        self.output = output
        tracemalloc.start(8)
        tracemalloc.take_snapshot().dump(str(output.with_suffix(".0.snap")))
        self.taken = 0

    def snapshot(self, label: str) -> None:
        snapshot = self.tracemalloc.take_snapshot()
        self.taken += 1
        snapshot.dump(str(self.output.with_suffix(f".{self.taken}.snap")))
        header = (
            f"## {label} (.{self.taken}.snap): traced "
            f"{self.tracemalloc.get_traced_memory()[0]:,} bytes, RSS {_rss_bytes():,} bytes, "
            f"{_malloc_figures()}"
        )
        with self.output.open("a") as out:
            out.write(header + "\n")


def _describe_snapshots(output: Path, meters: int) -> None:
    """Append to ``output`` each dumped snapshot's growth over the first, grouped."""
    import tracemalloc  # noqa: PLC0415

    base_path = output.with_suffix(".0.snap")
    if not base_path.exists():
        return
    base = tracemalloc.Snapshot.load(str(base_path))
    taken = 1
    while (path := output.with_suffix(f".{taken}.snap")).exists():
        snapshot = tracemalloc.Snapshot.load(str(path))
        lines = [f"## .{taken}.snap over .0.snap"]
        for title, key in (
            ("by the innermost flowsd line (allocations made on flowsd's behalf)", _flowsd_frame),
            ("by the allocating file", _innermost_file),
        ):
            grouped = _group(snapshot, key) - _group(base, key)
            total = sum(grouped.values())
            lines.append(f"\n### {title}: {total / meters:,.0f} B/meter in all")
            for name, size in grouped.most_common(25):
                lines.append(f"{size / meters:>10,.0f} B/meter  {size:>14,} B  {name}")
        with output.open("a") as out:
            out.write("\n".join(lines) + "\n\n")
        taken += 1


def _malloc_figures() -> str:
    """glibc's own account of the heap (mallinfo2), or nothing on another libc."""
    import ctypes  # noqa: PLC0415

    class _MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return "no mallinfo2"
    return (
        f"malloc: arena {info.arena:,} in use {info.uordblks:,} free {info.fordblks:,} "
        f"mmapped {info.hblkhd:,}"
    )


def _pymalloc_figures() -> str:
    """Python's small-object allocator: its arenas, not in mallinfo2 (they are mmapped)."""
    import re  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)  # sys._debugmallocstats writes to the C stderr
        os.dup2(captured.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode()
    figures = {}
    for name in (
        "arenas allocated current",
        "bytes in allocated blocks",
        "bytes in available blocks",
    ):
        found = re.search(rf"# {name}\s*=\s*([\d,]+)", text)
        figures[name] = int(found.group(1).replace(",", "")) if found else -1
    return (
        f"pymalloc: arenas {figures['arenas allocated current']:,} (MiB), "
        f"blocks in use {figures['bytes in allocated blocks']:,}, "
        f"free {figures['bytes in available blocks']:,}"
    )


_FIRST_TYPE_COUNTS: dict[str, int] = {}


def _type_changes() -> str:
    """The types whose gc-tracked instance count changed most since the first call."""
    import collections  # noqa: PLC0415
    import gc  # noqa: PLC0415

    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    if not _FIRST_TYPE_COUNTS:
        _FIRST_TYPE_COUNTS.update(counts)
    changes = {name: n - _FIRST_TYPE_COUNTS.get(name, 0) for name, n in counts.items()}
    top = sorted(changes.items(), key=lambda item: -abs(item[1]))[:12]
    return ", ".join(f"{name} {change:+,}" for name, change in top)


def _log_malloc(trim: bool, origin: float, daemon: Any) -> None:
    line = f"malloc t={time.time() - origin:.0f}s rss {_rss_bytes():,} {_malloc_figures()}"
    # Where committed events wait in memory: the projectors' in-memory buffers (batches are
    # shared between them), and each projector's catch-up page size.
    batches: dict[int, int] = {}
    for subscription in daemon.appender._hub._subscriptions:
        for batch in list(subscription._batches._queue):
            batches[id(batch)] = len(batch.events)
    runner = daemon.projectors  # None until the daemon has started them
    pages = sorted(task._page for task in runner.tasks) if runner is not None else []
    line += f"; {_pymalloc_figures()}"
    line += f"; gc-tracked objects by type, change since the first line: {_type_changes()}"
    line += f"; buffered events {sum(batches.values()):,} in {len(batches)} batches; pages {pages}"
    if trim:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        line += f"; after malloc_trim(0): rss {_rss_bytes():,}"
    print(line, file=sys.stderr, flush=True)


class _Counter(dict[str, int]):
    def most_common(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.items(), key=lambda item: -abs(item[1]))[:n]

    def __sub__(self, other: dict[str, int]) -> _Counter:
        result = _Counter(self)
        for key, value in other.items():
            result[key] = result.get(key, 0) - value
        return result


def _innermost_file(frames: Any) -> str:
    # A tracemalloc traceback runs from the oldest frame to the most recent.
    return str(frames[-1].filename).split("site-packages/")[-1].split("lib/python3")[-1]


def _flowsd_frame(frames: Any) -> str:
    for frame in reversed(frames):
        name = str(frame.filename)
        if "/flowsd/" in name and "site-packages" not in name:
            return f"flowsd/{name.rsplit('/flowsd/', 1)[1]}:{frame.lineno}"
    return f"(outside flowsd) {_innermost_file(frames)}"


def _group(snapshot: Any, key: Any) -> _Counter:
    grouped = _Counter()
    for trace in snapshot.traces:
        name = key(trace.traceback)
        grouped[name] = grouped.get(name, 0) + trace.size
    return grouped


def run_daemon(arguments: str) -> None:
    """Child process: the daemon until a ``stop`` line on stdin; a JSON line of figures on
    stdout every few seconds. Other stdin lines: ``snapshot LABEL`` (memory profile),
    ``cpu start`` / ``cpu stop`` (CPU profile)."""
    import anyio  # noqa: PLC0415

    from flowsd.app import Daemon  # noqa: PLC0415
    from flowsd.ops import event_loop, heap  # noqa: PLC0415
    from flowsd.ops.logs import configure_logging  # noqa: PLC0415

    options = json.loads(arguments)
    speed, origin, start_unix = options["speed"], options["origin"], options["start_unix"]
    memory = (
        _MemoryProfile(Path(options["profile_output"])) if options["profile"] == "memory" else None
    )
    profiler: Any = None

    def wall_clock() -> float:
        now: float = start_unix + (time.time() - origin) * speed
        return now

    config = load_config(CONFIG, environ={})
    config = _override(config, options)
    configure_logging(config.logging.level, fmt="json")
    baseline_rss = _rss_bytes()

    async def main() -> None:
        nonlocal profiler
        daemon = Daemon(config, options["url"], wall_clock=wall_clock, handle_signals=False)
        commands: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read_commands() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())
            loop.call_soon_threadsafe(commands.put_nowait, "stop")

        # A daemon thread: a reader blocked on stdin must not hold up the exit.
        threading.Thread(target=read_commands, daemon=True).start()

        def report(**extra: object) -> None:
            user, system = _cpu_seconds()
            status = daemon.supervisor.status(top=0)
            figures = {
                "t": time.time(),
                "cpu_user": user,
                "cpu_system": system,
                "gc_seconds": list(heap.HEAP.statistics().seconds),
                "rss": _rss_bytes(),
                "baseline_rss": baseline_rss,
                "meters": status.meters,
                "online": status.online,
                "requests_ok": status.requests_ok,
                "request_failures": sum(status.request_failures.values()),
                "connects": status.connects,
                "polls": status.polls,
                "ready": daemon.ready.is_set(),
                **extra,
            }
            print(json.dumps(figures), flush=True)

        async def reporter() -> None:
            samples = 0
            while True:
                report()
                if options["malloc"] and samples % 12 == 0:
                    _log_malloc(options["malloc"] == "trim", origin, daemon)
                samples += 1
                await anyio.sleep(_SAMPLE_SECONDS)

        async with anyio.create_task_group() as tg:

            async def run_until_stopped() -> None:
                # Stopped by request_stop() and waited for: a cancellation would cut its polls
                # and its appender off, leaving accepted events to the spill journal.
                await daemon.run()
                tg.cancel_scope.cancel()

            tg.start_soon(run_until_stopped)
            tg.start_soon(reporter)
            await daemon.ready.wait()
            if memory is not None:
                memory.snapshot("meters loaded (daemon ready)")
            report(event="ready")
            while True:
                command = await commands.get()
                if command == "stop":
                    break
                if command.startswith("snapshot ") and memory is not None:
                    memory.snapshot(command.removeprefix("snapshot "))
                elif command == "cpu start" and options["profile"] == "cpu":
                    import cProfile  # noqa: PLC0415

                    # CPU time: a wall-clock profile charges the daemon's waits for a core (two
                    # cores shared with PostgreSQL and the simulator) to the system call it was
                    # in, e.g. a loopback send() that woke the simulator.
                    profiler = cProfile.Profile(time.process_time)
                    profiler.enable()
                elif command == "cpu stop" and profiler is not None:
                    profiler.disable()
                    _write_cpu_profile(profiler, Path(options["profile_output"]))
                    profiler = None
                report(event=command)
            daemon.request_stop()
            report(event="stopping")

    event_loop.run(main, config.daemon.event_loop)


# CPython 3.12 and later can name Python functions to perf (PYTHONPERFSUPPORT: a trampoline
# per Python frame, listed in /tmp/perf-<pid>.map); 3.11 cannot.
PERF_NAMES_PYTHON = sys.version_info >= (3, 12)


class _PerfRecording:
    """``perf record`` on the daemon between :meth:`start` and :meth:`stop`; the report is
    appended to the profile's text (by shared object, then by symbol; on Python 3.12 and
    later also by the innermost Python function and its file), or what perf said when it
    could not record."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.data = output.with_suffix(".perf.data")
        self.messages = output.with_suffix(".perf.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, pid: int) -> None:
        if self.process is not None:
            return
        # CPython is built without frame pointers: only DWARF unwinding reaches the
        # trampoline of the innermost Python frame (and stops there).
        stacks = ["--call-graph", "dwarf,16384"] if PERF_NAMES_PYTHON else ["-g"]
        command = ["perf", "record", "-e", "cpu-clock", "-F", "499", *stacks, "-p", str(pid)]
        with self.messages.open("wb") as messages:
            self.process = subprocess.Popen(
                [*command, "-o", str(self.data)], stdout=messages, stderr=messages
            )

    def stop(self) -> None:
        """Stop recording and write the report (once; also after a failed run)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with self.output.open("a") as out:
            if not self.data.exists():
                said = self.messages.read_text(errors="replace")
                out.write(f"## perf recorded nothing (exit {process.returncode})\n{said}\n")
                return
            for sort in ("dso", "dso,sym"):
                command = ["perf", "report", "-i", str(self.data), "--no-children", "--stdio"]
                report = subprocess.run(
                    [*command, "-g", "none", "--sort", sort],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                rows = [line for line in report.stdout.splitlines() if line and line[0] != "#"]
                if report.returncode:
                    rows = [f"perf report failed ({report.returncode}): {report.stderr}"]
                out.write(f"## perf, by {sort}\n" + "\n".join(rows[:80]) + "\n\n")
            if PERF_NAMES_PYTHON:
                out.write(self._python_report())

    def _python_report(self) -> str:
        script = subprocess.run(
            ["perf", "script", "-i", str(self.data), "-F", "ip,sym"],
            capture_output=True,
            text=True,
            check=False,
        )
        if script.returncode:
            return f"perf script failed ({script.returncode}): {script.stderr}\n"
        samples, functions = innermost_python(script.stdout)
        files: collections.Counter[str] = collections.Counter()
        for function, count in functions.items():
            files[function.rsplit(":", 1)[-1]] += count
        text = ""
        for title, counts, rows in (("function", functions, 80), ("file", files, 40)):
            text += f"## perf, by innermost Python {title} ({samples} samples)\n"
            for name, count in counts.most_common(rows):
                text += f"{100 * count / max(samples, 1):7.2f}%  {name}\n"
            text += "\n"
        return text


def innermost_python(script: str) -> tuple[int, collections.Counter[str]]:
    """``perf script -F ip,sym`` output: how many samples, and how many of them ran in each
    Python function, innermost on their stack, as ``qualname:file`` (the file shortened to
    the repository, site-packages or the standard library). Whatever the function called
    in C, the kernel included, counts as the function's; samples with no Python frame are
    the event loop's own C code."""
    # Longest first: the virtual environment may sit inside the repository.
    prefixes = sorted(
        [
            (str(HERE.parent) + "/", ""),
            (sysconfig.get_path("purelib") + "/", ""),
            (sysconfig.get_path("platlib") + "/", ""),
            (sysconfig.get_path("stdlib") + "/", "stdlib/"),
        ],
        key=lambda prefix: -len(prefix[0]),
    )
    samples = 0
    counts: collections.Counter[str] = collections.Counter()
    for block in script.split("\n\n"):
        frames = [line.split(None, 1) for line in block.splitlines() if line.strip()]
        if not frames:
            continue
        samples += 1
        name = next(
            (f[1][4:] for f in frames if len(f) == 2 and f[1].startswith("py::")),
            "(no Python frame)",
        )
        function, _, path = name.partition(":")
        for prefix, short in prefixes:
            if path.startswith(prefix):
                path = short + path[len(prefix) :]
                break
        counts[f"{function}:{path}" if path else function] += 1
    return samples, counts


def _write_cpu_profile(profiler: Any, output: Path) -> None:
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    profiler.dump_stats(output.with_suffix(".prof"))  # for pstats: callers, other orders
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(70)
        with output.open("a") as out:
            out.write(f"## sorted by {order}\n{text.getvalue()}\n")


def _override(config: Any, options: dict[str, Any]) -> Any:
    import msgspec  # noqa: PLC0415

    replace = msgspec.structs.replace
    return replace(
        config,
        database=replace(config.database, url=options["url"]),
        state=replace(config.state, directory=options["state"]),
        management=replace(config.management, listen=""),
        logging=replace(config.logging, level="warning"),
        meters=replace(config.meters, port=options["port"]),
    )


# --- the harness ----------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    cpu: float
    cpu_system: float
    rss: int
    requests: int
    failures: int
    connects: int
    gc_seconds: tuple[float, float, float]  # the daemon's cycle collector, per generation


@dataclass
class Progress:
    """What the event log says, read incrementally by position."""

    cursor: int = 0
    live: dict[uuid.UUID, float] = field(default_factory=dict)  # meter -> first seen (real s)
    newest_profile: dict[uuid.UUID, datetime] = field(default_factory=dict)
    events: int = 0

    async def update(self, conn: asyncpg.Connection, now: float) -> None:
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM flows.meter_event_log")
        if head <= self.cursor:
            return
        for row in await conn.fetch(
            "SELECT DISTINCT meter_id FROM flows.meter_event_log "
            "WHERE position > $1 AND position <= $2 AND event_type = ANY($3::int[])",
            self.cursor,
            head,
            list(LIVE_TYPES),
        ):
            self.live.setdefault(row[0], now)
        for row in await conn.fetch(
            'SELECT meter_id, max("timestamp") FROM flows.meter_event_log '
            "WHERE position > $1 AND position <= $2 AND event_type = $3 GROUP BY meter_id",
            self.cursor,
            head,
            PROFILE_LOG_1,
        ):
            known = self.newest_profile.get(row[0])
            if known is None or row[1] > known:
                self.newest_profile[row[0]] = row[1]
        self.events += await conn.fetchval(
            "SELECT count(*) FROM flows.meter_event_log WHERE position > $1 AND position <= $2",
            self.cursor,
            head,
        )
        self.cursor = head


def _plan_requests_per_hour(plan: PollPlan, three_phase: bool) -> float:
    """Requests per simulated hour of one meter's plan at steady state."""
    total = 0.0
    for cadence in plan.cadences("three_phase" if three_phase else "single_phase"):
        per_round = 0.0
        for item in cadence.items:
            if isinstance(item, ObjectRead | EventLogRead):
                per_round += 1
            elif isinstance(item, ProfileLogsRead):
                # One request per log for each half hour of the cadence.
                per_round += 2 * max(1.0, cadence.period_seconds / HALF_HOUR)
        total += per_round * 3600.0 / cadence.period_seconds
    return total


def _has_profile_logs(plan: PollPlan, three_phase: bool) -> bool:
    family: HardwareFamily = "three_phase" if three_phase else "single_phase"
    return any(isinstance(item, ProfileLogsRead) for c in plan.cadences(family) for item in c.items)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((BASE_ADDRESS, 0))
        port: int = probe.getsockname()[1]
        return port


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
        env=None if env is None else {**os.environ, **env},
    )


class _Lines:
    """A child's JSON lines, read without blocking the harness's loop."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    loop.call_soon_threadsafe(self.queue.put_nowait, json.loads(line))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

        loop.run_in_executor(None, pump)

    def drain(self) -> Iterator[dict[str, Any]]:
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                yield item


def _send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(line + "\n")
        process.stdin.flush()


async def _measure(url: str, settings: Settings, scratch: Path) -> dict[str, Any]:
    plan = PollPlan.from_config(load_config(CONFIG, environ={}).poll)
    meters_config = load_config(CONFIG, environ={}).meters
    state = FleetState(seed=SEED, size=settings.meters, base_address=BASE_ADDRESS, history_days=30)
    identities = [state.identity(i) for i in range(settings.meters)]
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        # In transactions of 1,000 meters: the registry's hygiene triggers take two advisory
        # locks per meter, and 19,500 meters in one transaction exhaust the server's lock table.
        for start in range(0, len(identities), 1000):
            await register_fleet(conn, SEED, identities[start : start + 1000])
        ids = {
            r["serial"]: r["id"]
            for r in await conn.fetch("SELECT id, serial FROM flows.meter_registry")
        }
    finally:
        await conn.close()
    three_phase = {ids[i.serial]: i.hardware.three_phase for i in identities}
    planned_per_hour = sum(_plan_requests_per_hour(plan, tp) for tp in three_phase.values())
    backfilled = [m for m, tp in three_phase.items() if _has_profile_logs(plan, tp)]
    horizon = meters_config.backfill_horizon_hours * 3600
    owed_half_hours = len(backfilled) * (horizon // HALF_HOUR)

    port = _free_port()
    origin = time.time()
    start_unix = origin
    stamp = time.strftime("%Y%m%dT%H%M%S")
    profile_output = RESULTS / f"fleet-{settings.profile}-{stamp}.txt"
    if settings.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        profile_output.write_text(
            f"# fleet profile ({settings.profile}): {settings.meters} meters, speed "
            f"{settings.speed}, load average {os.getloadavg()[0]:.2f} at start\n\n"
        )
    simulator = _child(
        "import asyncio; from bench.bench_fleet import serve_fleet; "
        f"asyncio.run(serve_fleet({settings.meters}, {port}, {start_unix}, {origin}, "
        f"{settings.speed}))"
    )
    assert simulator.stdout is not None
    if not simulator.stdout.readline():
        simulator.kill()
        raise RuntimeError("the simulator did not start")
    try:
        floor = await asyncio.to_thread(_transport_floor, port, settings.meters)
    except BaseException:
        simulator.kill()
        raise
    options = {
        "url": url,
        "state": str(scratch / "state"),
        "port": port,
        "speed": settings.speed,
        "origin": origin,
        "start_unix": start_unix,
        "meters": settings.meters,
        "profile": settings.profile,
        "profile_output": str(profile_output),
        "malloc": settings.malloc,
    }
    started = time.time()
    perf_names = settings.profile == "perf" and PERF_NAMES_PYTHON
    daemon = _child(
        f"from bench.bench_fleet import run_daemon; run_daemon({json.dumps(json.dumps(options))})",
        {"PYTHONPERFSUPPORT": "1"} if perf_names else None,
    )
    lines = _Lines(daemon)
    perf = _PerfRecording(profile_output) if settings.profile == "perf" else None

    def open_profile_window() -> None:
        _send(daemon, "cpu start")
        if perf is not None:
            perf.start(daemon.pid)

    samples: list[Sample] = []
    marks: dict[str, float] = {}
    rss_at: dict[str, int] = {}
    progress = Progress()
    load: dict[str, float] = {"start": os.getloadavg()[0]}
    sim_cpu_start = _process_cpu(simulator.pid)
    baseline_rss = 0
    cadence_hour = 3600.0 / settings.speed
    next_snapshot = time.time() + (settings.snapshot_seconds or math.inf)
    conn = await asyncpg.connect(url)
    try:
        while True:
            await asyncio.sleep(_SAMPLE_SECONDS)
            now = time.time()
            for line in lines.drain():
                baseline_rss = line["baseline_rss"]
                samples.append(
                    Sample(
                        line["t"],
                        line["cpu_user"] + line["cpu_system"],
                        line["cpu_system"],
                        line["rss"],
                        line["requests_ok"],
                        line["request_failures"],
                        line["connects"],
                        tuple(line["gc_seconds"]),
                    )
                )
                if line.get("event") == "ready" and "ready" not in marks:
                    marks["ready"] = line["t"]
                    rss_at["ready"] = line["rss"]
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited early ({daemon.returncode})")
            await progress.update(conn, now)
            if now >= next_snapshot:
                next_snapshot = now + settings.snapshot_seconds
                _send(daemon, f"snapshot {now - started:.0f} s after start")
            sim_now = start_unix + (now - origin) * settings.speed
            if "first_pass" not in marks and len(progress.live) >= settings.meters:
                marks["first_pass"] = now
                load["first_pass"] = os.getloadavg()[0]
                rss_at["first_pass"] = samples[-1].rss if samples else 0
                _send(daemon, "snapshot every meter has a live reading")
            hour_mark = marks.get("ready", math.inf) + cadence_hour
            if "hour" not in marks and now >= hour_mark:
                marks["hour"] = now
                rss_at["one_hourly_cadence"] = samples[-1].rss if samples else 0
                _send(daemon, "snapshot one hourly cadence after start")
            newest_wanted = _newest_complete(sim_now, meters_config.profile_settle_seconds)
            caught_up = sum(
                1
                for m in backfilled
                if (seen := progress.newest_profile.get(m)) is not None
                and to_emop(seen) >= newest_wanted - HALF_HOUR
            )
            if "backfill_done" not in marks and caught_up >= len(backfilled):
                marks["backfill_done"] = now
                load["backfill_done"] = os.getloadavg()[0]
                rss_at["backfill_done"] = samples[-1].rss if samples else 0
                _send(daemon, "snapshot back-fill complete")
                open_profile_window()
            steady_start = marks.get("backfill_done")
            elapsed = now - started
            late = elapsed >= settings.max_seconds * 2 / 3
            profiling = settings.profile in ("cpu", "perf")
            if profiling and steady_start is None and "cpu" not in marks and late:
                marks["cpu"] = now
                open_profile_window()
            done = steady_start is not None and now - steady_start >= settings.steady_seconds
            if done or elapsed >= settings.max_seconds:
                marks["end"] = now
                load["end"] = os.getloadavg()[0]
                rss_at["end"] = samples[-1].rss if samples else 0
                break
        sim_cpu = _process_cpu(simulator.pid) - sim_cpu_start
        _send(daemon, "cpu stop")
        _send(daemon, "snapshot end")
        _send(daemon, "stop")
        profile_rows = await conn.fetchval(
            "SELECT count(*) FROM flows.meter_event_log WHERE event_type IN (1014, 1015)"
        )
    finally:
        if perf is not None:
            perf.stop()  # here, so a failed run stops it too
        await conn.close()
        _send(daemon, "stop")
        with contextlib.suppress(OSError):
            if daemon.stdin is not None:
                daemon.stdin.close()
        try:
            # A profile is written before the daemon stops, which can take minutes.
            daemon.wait(timeout=600 if settings.profile else 60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        if simulator.stdin is not None:
            simulator.stdin.close()
        try:
            simulator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            simulator.kill()
    if settings.profile == "memory":
        _describe_snapshots(profile_output, settings.meters)
    first_live = sorted(progress.live.values())
    return {
        "settings": settings,
        "samples": samples,
        "marks": marks,
        "rss_at": rss_at,
        "baseline_rss": baseline_rss,
        "started": started,
        "load": load,
        "planned_per_hour": planned_per_hour,
        "owed_half_hours": owed_half_hours,
        "backfilled_meters": len(backfilled),
        "caught_up": caught_up,
        "first_live": first_live,
        "live_meters": len(progress.live),
        "cadence_hour": cadence_hour,
        "events": progress.events,
        "profile_rows": profile_rows,
        "simulator_cpu": sim_cpu,
        "floor": floor,
        "profile_output": str(profile_output) if settings.profile else "",
    }


def _newest_complete(sim_unix: float, settle: float) -> int:
    emop = int(sim_unix - 946_684_800 - settle)
    return emop - emop % HALF_HOUR


def _window(samples: list[Sample], start: float, end: float) -> tuple[Sample, Sample] | None:
    inside = [s for s in samples if start <= s.t <= end]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def _results(m: dict[str, Any]) -> list[Result]:
    settings: Settings = m["settings"]
    meters = settings.meters
    marks, samples, started = m["marks"], m["samples"], m["started"]
    label = f"{meters:,} meters"
    detail: dict[str, object] = {
        "speed": settings.speed,
        "load_average": m["load"],
        "simulator_cpu_seconds": round(m["simulator_cpu"], 1),
        "run_seconds": round(marks["end"] - started, 1),
        "events": m["events"],
    }
    results: list[Result] = []

    def add(name: str, value: float, unit: str, **extra: object) -> None:
        results.append(Result(AREA, f"{name} ({label})", value, unit, {**detail, **extra}))

    floor = m["floor"]
    floor_us = floor["cpu"] / floor["requests"] * 1e6  # measure_floor fails on none
    add(
        "transport floor: CPU per request",
        floor_us,
        "µs",
        requests=floor["requests"],
        requests_per_second=round(floor["requests"] / max(floor["wall"], 1e-9)),
        workers=FLOOR_WORKERS,
    )
    baseline = m["baseline_rss"]
    for phase in ("ready", "one_hourly_cadence", "first_pass", "backfill_done", "end"):
        if phase in m["rss_at"]:
            add(
                f"RSS per meter, {phase.replace('_', ' ')}",
                (m["rss_at"][phase] - baseline) / meters,
                "bytes/meter",
                rss_mb=round(m["rss_at"][phase] / 2**20, 1),
                baseline_mb=round(baseline / 2**20, 1),
            )
    phases = {
        "first start": (marks.get("ready", started), marks.get("first_pass", marks["end"])),
        "back-fill": (marks.get("ready", started), marks.get("backfill_done", marks["end"])),
        "steady": (marks.get("backfill_done", math.inf), marks["end"]),
        "whole run": (started, marks["end"]),
    }
    for name, (start, end) in phases.items():
        window = _window(samples, start, end)
        if window is None:
            continue
        first, last = window
        requests = last.requests - first.requests
        seconds = last.t - first.t
        if requests <= 0 or seconds <= 0:
            continue
        add(
            f"CPU per request, {name}",
            (last.cpu - first.cpu) / requests * 1e6,
            "µs",
            requests=requests,
            seconds=round(seconds, 1),
            system_share=round(
                (last.cpu_system - first.cpu_system) / max(last.cpu - first.cpu, 1e-9), 3
            ),
            failures=last.failures - first.failures,
            gc_share=[
                round((b - a) / max(last.cpu - first.cpu, 1e-9), 3)
                for a, b in zip(first.gc_seconds, last.gc_seconds, strict=True)
            ],
        )
        if name in ("first start", "steady"):
            add(
                f"CPU per request over the transport floor, {name}",
                (last.cpu - first.cpu) / requests * 1e6 / max(floor_us, 1e-9),
                "×",
            )
        add(f"requests/s, {name}", requests / seconds, "requests/s")
        gc_seconds = sum(last.gc_seconds) - sum(first.gc_seconds)
        add(
            f"cycle collector's share of CPU, {name}",
            gc_seconds / max(last.cpu - first.cpu, 1e-9) * 100,
            "%",
        )
        if name == "steady":
            hours = seconds * settings.speed / 3600
            add(
                "RSS slope over the steady window",
                (last.rss - first.rss) / meters / max(hours, 1e-9),
                "bytes/meter/simulated hour",
            )
    add(
        "requests/s the plan asks at steady state",
        m["planned_per_hour"] * settings.speed / 3600,
        "requests/s",
    )
    first_live = m["first_live"]
    ready = marks.get("ready", started)
    if len(first_live) >= meters:
        add(
            "time to a live reading of every meter",
            (first_live[-1] - ready) * settings.speed,
            "simulated seconds",
            real_seconds=round(first_live[-1] - ready, 1),
        )
    hour = ready + m["cadence_hour"]
    add(
        "meters with a live reading one hourly cadence after start",
        sum(1 for t in first_live if t <= hour),
        "meters",
        of=meters,
    )
    owed = m["owed_half_hours"]
    if "backfill_done" in marks:
        add(
            "back-fill complete after",
            marks["backfill_done"] - ready,
            "seconds",
            owed_half_hours=owed,
            profile_rows=m["profile_rows"],
        )
    else:
        done = m["profile_rows"] / 2
        rate_per_second = done / max(marks["end"] - ready, 1e-9)
        add(
            "back-fill done when the run ended",
            done / max(owed, 1) * 100,
            "% of half hours",
            owed_half_hours=owed,
            meters_caught_up=m["caught_up"],
            of=m["backfilled_meters"],
            projected_completion_seconds=round(owed / max(rate_per_second, 1e-9)),
        )
    if m["profile_output"]:
        add("profile written", 1, "file", path=m["profile_output"])
    return results


def run(quick: bool) -> list[Result]:
    settings = Settings.from_environment(quick)
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-fleet-") as tmp:
        scratch = Path(tmp)
        configured = os.environ.get("FLOWSD_DATABASE_URL")
        if configured:
            return asyncio.run(_with_scratch_database(configured, settings, scratch))
        server = start_embedded(scratch / "pg", cleanup="delete")
        try:
            return _results(asyncio.run(_measure(server.url("postgres"), settings, scratch)))
        finally:
            server.stop()


async def _with_scratch_database(url: str, settings: Settings, scratch: Path) -> list[Result]:
    name = f"flowsd_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return _results(await _measure(with_database(url, name), settings, scratch))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
