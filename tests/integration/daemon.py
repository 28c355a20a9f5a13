"""Helpers for the daemon's integration tests: a registered simulated
fleet on private loopback addresses, and the daemon running in-process on the fleet's clock.

Every test takes its own 127.81.<n>.0/24 and one free port shared by its meters (the
registry stores addresses only, so all meters of a fleet listen on one port).

Waits are bounded by :data:`tests.support.WAIT_SECONDS`.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec

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
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import register_fleet
from tests.support import WAIT_SECONDS, wait_until

# A Tuesday mid-quarter, long after every simulated meter was commissioned.
FROZEN_AT = datetime(2026, 3, 10, 12, 0, 7, tzinfo=UTC)
EMOP_EPOCH_UNIX = 946_684_800
MIXED_HARDWARE = ("C1.w", "EMA1.w", "B1.w", "P1.ax", "P1.cx")

_subnets = itertools.count(1)

FAST_METERS = MetersConfig(
    min_gap_seconds=0.0,
    connect_timeout_seconds=1.0,
    read_timeout_seconds=1.0,
    request_attempts=2,
    retry_initial_seconds=0.01,
    retry_max_seconds=0.02,
    max_connections_in_flight=64,
    max_new_connections_per_second=10_000.0,
    new_connections_burst=1000,
    offline_after_failures=3,
    probe_initial_seconds=0.3,
    probe_max_seconds=0.6,
    watchdog_seconds=20.0,
    schedule_jitter_seconds=0.0,
    schedule_tick_seconds=0.02,
    profile_settle_seconds=0.0,
    backfill_horizon_hours=6,
    backfill_max_requests_per_poll=24,
    stop_deadline_seconds=3.0,
)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def subnet() -> str:
    return f"127.81.{next(_subnets)}.1"


def fast_plan(period: float = 1.0, single: tuple[str, ...] = ("csq_net_op",)) -> PollConfig:
    return PollConfig(
        cadences={"fast": period},
        single_phase={"fast": list(single)},
        three_phase={"fast": ["csq_net_op"]},
    )


def daemon_config(
    tmp_path: Path,
    url: str,
    *,
    poll: PollConfig | None = None,
    meters: MetersConfig | None = None,
    **daemon: Any,
) -> Config:
    settings = {"state_flush_seconds": 0.3, "registry_reload_seconds": 60.0, **daemon}
    return Config(
        database=DatabaseConfig(url=url, reconnect_initial_seconds=0.05),
        state=StateConfig(directory=str(tmp_path / "state")),
        management=ManagementConfig(listen=""),
        meters=meters or FAST_METERS,
        poll=poll or PollConfig(),
        appender=AppenderConfig(queue_size=2000, flush_interval_seconds=0.02),
        daemon=DaemonConfig(**settings),
    )


def _toml(value: object) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_toml(v)}" for key, v in value.items()) + " }"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a string or a list of strings: JSON's are TOML's too


def run_config(
    state: Path,
    port: int,
    *,
    period: float = 0.5,
    single_phase: Sequence[str] = ("csq_net_op",),
    **sections: Mapping[str, object],
) -> str:
    """The text of a ``flowsd.toml`` polling a simulated fleet listening on ``port`` (state
    under ``state``, JSON logs, no management endpoint, one cadence ``fast`` every ``period``
    seconds, short timeouts, no gaps, jitter or rate limit to speak of); ``sections`` add keys
    to a section or override them, e.g. ``leases={"lease_seconds": 3.0}``."""
    config: dict[str, dict[str, object]] = {
        "state": {"directory": str(state)},
        "logging": {"format": "json"},
        "management": {"listen": ""},
        "meters": {
            "port": port,
            "min_gap_seconds": 0.0,
            "connect_timeout_seconds": 1.0,
            "read_timeout_seconds": 1.0,
            "request_attempts": 2,
            "retry_initial_seconds": 0.01,
            "retry_max_seconds": 0.02,
            "max_new_connections_per_second": 10000.0,
            "new_connections_burst": 1000,
            "schedule_jitter_seconds": 0.0,
            "schedule_tick_seconds": 0.05,
            "stop_deadline_seconds": 3.0,
        },
        "poll": {"cadences": {"fast": period}},
        "poll.single_phase": {"fast": list(single_phase)},
        "poll.three_phase": {"fast": ["csq_net_op"]},
        "daemon": {"state_flush_seconds": 0.3, "registry_reload_seconds": 3600.0},
    }
    for name, keys in sections.items():
        config[name] = {**config.get(name, {}), **keys}
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items())
        for name, keys in config.items()
    )


def start_run(home: Path, url: str, config: str, *, instance: str) -> subprocess.Popen[bytes]:
    """``flowsd run`` as a process, with ``config`` written to ``home/flowsd.toml`` and its
    stderr to ``home/stderr.log``."""
    path = home / "flowsd.toml"
    path.write_text(config)
    return subprocess.Popen(
        [sys.executable, "-m", "flowsd", "run", "--config", str(path), "--database-url", url],
        stdout=subprocess.DEVNULL,
        stderr=(home / "stderr.log").open("wb"),
        env={**os.environ, "FLOWSD_INSTANCE": instance},
    )


@asynccontextmanager
async def registered_fleet(
    url: str,
    meters: int,
    *,
    seed: int = 3,
    faults: str | None = None,
    clock: SimClock | None = None,
    hardware: tuple[str, ...] | None = MIXED_HARDWARE,
    journal: bool = False,
) -> AsyncIterator[SimulatedFleet]:
    """A running fleet whose meters are active in ``meter_registry``."""
    base = subnet()
    port = free_port(base)
    fleet = SimulatedFleet(
        meters=meters,
        seed=seed,
        base_address=base,
        port=port,
        faults=faults,
        clock=clock,
        history_days=3,
        hardware=[hardware[i % len(hardware)] for i in range(meters)] if hardware else None,
        journal=journal,
    )
    async with fleet:
        conn = await asyncpg.connect(url)
        try:
            identities = [fleet.state.identity(i) for i in range(meters)]
            await register_fleet(conn, seed, identities)
        finally:
            await conn.close()
        yield fleet


def sim_wall_clock(clock: SimClock) -> Callable[[], float]:
    """The daemon's wall clock following the simulator's (Unix seconds)."""
    return lambda: clock.now() + EMOP_EPOCH_UNIX


def with_meters(config: Config, fleet: SimulatedFleet) -> Config:
    meters = msgspec.structs.replace(config.meters, port=fleet.port)
    return msgspec.structs.replace(config, meters=meters)


@asynccontextmanager
async def running_daemon(
    config: Config, url: str, *, wall_clock: Callable[[], float] | None = None
) -> AsyncIterator[Daemon]:
    """The daemon in this process until the block ends (then a clean stop)."""
    kwargs: dict[str, Any] = {"handle_signals": False}
    if wall_clock is not None:
        kwargs["wall_clock"] = wall_clock
    daemon = Daemon(config, url, **kwargs)
    async with anyio.create_task_group() as tg:
        result: list[int] = []
        finished = anyio.Event()

        async def run() -> None:
            try:
                result.append(await daemon.run())
            finally:
                finished.set()

        tg.start_soon(run)
        with anyio.fail_after(WAIT_SECONDS):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()
            with anyio.fail_after(WAIT_SECONDS):
                await finished.wait()
            assert result == [0]


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def fetchval(url: str, query: str, *args: object) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def poll_round(daemon: Daemon) -> None:
    """Wait until every online meter has been polled for each cadence slot begun on the
    daemon's (simulated) clock: call after moving the clock."""
    await wait_until(daemon.supervisor.round_complete)


async def projections_caught_up(daemon: Daemon, url: str) -> None:
    """Wait until everything polled so far is committed and applied by every projector."""
    await daemon.appender.flush()
    head = await fetchval(url, "SELECT coalesce(max(position), 0) FROM flows.meter_event_log")
    assert daemon.projectors is not None
    assert await daemon.projectors.wait_caught_up(head, WAIT_SECONDS), "projectors behind"
