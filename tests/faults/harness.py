"""The fault suite's scenario: a daemon polling a simulated fleet into a private PostgreSQL
that the test then stops, kills, restarts or starves, round after round.

Every round advances the fleet's clock half an hour (every meter polled once: its profile
logs, signal quality and balance), so events keep arriving during each fault, and the checks
at the end hold against the simulator's own journal of what every meter answered:

* the daemon never stopped, and no component failed unexpectedly (no restart, no give-up);
* ``/healthz`` answered 200 every time it was asked (every 50 ms, throughout);
* after each recovery ``/readyz`` was 200 again within :data:`READY_WITHIN_SECONDS`
  (the measured delay is reported per kind);
* nothing was lost or doubled: every signal-quality answer a meter gave is in the log exactly
  once, the half-hour records of every meter are contiguous, unique and equal to the
  simulator's, and the appender's books balance (accepted = committed + duplicates, nothing
  rejected, and the log's rows between committed and committed + duplicates: a commit whose
  answer was lost with its connection is retried and found as a duplicate);
* the spill journal was drained without a restart, and ``flowsd verify`` finds every
  projection equal to a replay.

``FLOWSD_FAULT_ROUNDS`` sets the faults per kind (2 by default; the nightly size is 20),
``FLOWSD_FAULT_REPORT`` names a file that gets one JSON line per kind and server with the
counts and recovery times (``python -m tests.faults.report FILE`` sums them up).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import asyncpg
import msgspec

from flowsd.app import Daemon
from flowsd.cli import main as flowsd_main
from flowsd.config import (
    AppenderConfig,
    Config,
    DaemonConfig,
    DatabaseConfig,
    ManagementConfig,
    PollConfig,
    ProjectionsConfig,
    StateConfig,
)
from flowsd.emop import by_name
from flowsd.events import types
from flowsd.events.reader import iter_batches
from flowsd.sim.clock import SimClock, from_emop
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import register_fleet
from tests.faults.server import Bouncer, PrivateServer
from tests.integration.daemon import (
    FAST_METERS,
    FROZEN_AT,
    free_port,
    running_daemon,
    sim_wall_clock,
    subnet,
)
from tests.support import migrate_database, wait_until

ROUNDS = max(1, int(os.environ.get("FLOWSD_FAULT_ROUNDS", "2")))
REPORT_ENV = "FLOWSD_FAULT_REPORT"
READY_WITHIN_SECONDS = 60.0
METERS = 12
HARDWARE = ("EMA1.w", "C1.w", "B1.w")
PLAN = PollConfig(
    cadences={"half_hourly": 1800.0},
    single_phase={"half_hourly": ["profile_logs", "csq_net_op", "prepay_balance"]},
    three_phase={"half_hourly": ["csq_net_op"]},
)
_CSQ = by_name("csq_net_op").id
_WATCH_EVERY_SECONDS = 0.05


async def http_status(host: str, port: int, path: str) -> int:
    """The status code of a GET (0 when the endpoint does not answer at all)."""
    try:
        with anyio.fail_after(5):
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head:
                    head += await stream.receive(1024)
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return 0
    return int(head.split(b" ", 2)[1])


class HealthWatch:
    """Asks ``/healthz`` and ``/readyz`` every 50 ms and remembers what they said."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.healthz_failures: list[str] = []
        self.readyz: list[tuple[float, int]] = []
        self.polls = 0

    async def run(self) -> None:
        host, port = self.address
        while True:
            healthz = await http_status(host, port, "/healthz")
            if healthz != 200:
                self.healthz_failures.append(f"{time.monotonic():.3f}: /healthz {healthz}")
            self.readyz.append((time.monotonic(), await http_status(host, port, "/readyz")))
            self.polls += 1
            await anyio.sleep(_WATCH_EVERY_SECONDS)

    def saw_unready_since(self, since: float) -> bool:
        return any(t >= since and status != 200 for t, status in self.readyz)

    async def ready_after(self, since: float) -> float:
        """Seconds from ``since`` to the first /readyz 200 asked after it."""
        with anyio.fail_after(READY_WITHIN_SECONDS):
            while True:
                for t, status in self.readyz:
                    if t >= since and status == 200:
                        return t - since
                await anyio.sleep(_WATCH_EVERY_SECONDS)


@dataclass
class Outcome:
    """What one test of one kind saw (written to the report)."""

    kind: str
    server: str
    rounds: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    unready_rounds: int = 0
    spilled_events: int = 0
    healthz_checks: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def write(self) -> None:
        path = os.environ.get(REPORT_ENV)
        if not path:
            return
        with Path(path).open("a") as report:
            report.write(json.dumps(asdict(self)) + "\n")


class Scenario:
    """One database on the private server, a fleet, a running daemon and its health watch."""

    def __init__(
        self,
        server: PrivateServer,
        tmp_path: Path,
        kind: str,
        *,
        memory_max_events: int = 50_000,
        state_directory: Path | None = None,
        appender_timeouts: tuple[float, float] = (5.0, 2.0),
        pooler: Bouncer | None = None,
    ) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.outcome = Outcome(kind, f"{server.binaries.label} ({server.binaries.version()})")
        self.database = f"fault_{uuid.uuid4().hex[:12]}"
        self.url = server.url(self.database)
        # The daemon's way in: the server, or a pooler in front of it. Checks go direct.
        self.daemon_url = pooler.url(self.database) if pooler else self.url
        self.clock = SimClock(FROZEN_AT, speed=0.0)
        self.memory_max_events = memory_max_events
        self.state_directory = state_directory or tmp_path / "state"
        self.appender_timeouts = appender_timeouts
        self.advances = 0
        self._stack = contextlib.AsyncExitStack()
        self.fleet: SimulatedFleet
        self.daemon: Daemon
        self.health: HealthWatch
        self._fault_at = 0.0

    # -- set-up ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Scenario:
        try:
            return await self._enter()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _enter(self) -> Scenario:
        admin = await asyncpg.connect(self.server.url())
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        await migrate_database(self.url)
        base = subnet()
        self.fleet = SimulatedFleet(
            meters=METERS,
            seed=7,
            base_address=base,
            port=free_port(base),
            clock=self.clock,
            history_days=3,
            hardware=[HARDWARE[i % len(HARDWARE)] for i in range(METERS)],
            journal=True,
        )
        await self._stack.enter_async_context(self.fleet)
        conn = await asyncpg.connect(self.url)
        try:
            identities = [self.fleet.state.identity(i) for i in range(METERS)]
            await register_fleet(conn, 7, identities)
        finally:
            await conn.close()
        config = self.config()
        self.daemon = await self._stack.enter_async_context(
            running_daemon(config, self.daemon_url, wall_clock=sim_wall_clock(self.clock))
        )
        assert self.daemon.management_address is not None
        self.health = HealthWatch(self.daemon.management_address)
        group = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(group.cancel_scope.cancel)
        group.start_soon(self.health.run)
        await self.settle()
        return self

    def config(self) -> Config:
        statement, lock = self.appender_timeouts
        return Config(
            database=DatabaseConfig(
                url=self.daemon_url,
                reconnect_initial_seconds=0.05,
                reconnect_max_seconds=0.5,
                connect_timeout_seconds=3.0,
                pool_min_size=1,
                pool_max_size=4,
            ),
            state=StateConfig(directory=str(self.state_directory)),
            management=ManagementConfig(listen=f"127.0.0.1:{free_port('127.0.0.1')}"),
            meters=msgspec.structs.replace(
                FAST_METERS, port=self.fleet.port, backfill_horizon_hours=2
            ),
            poll=PLAN,
            appender=AppenderConfig(
                queue_size=500,
                flush_interval_seconds=0.02,
                memory_max_events=self.memory_max_events,
                statement_timeout_seconds=statement,
                lock_timeout_seconds=lock,
            ),
            projections=ProjectionsConfig(
                retry_initial_seconds=0.05, retry_max_seconds=0.5, poll_interval_seconds=0.5
            ),
            daemon=DaemonConfig(
                state_flush_seconds=0.3,
                registry_reload_seconds=60.0,
                restart_initial_seconds=0.1,
                restart_max_seconds=1.0,
            ),
        )

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._stack.aclose()  # stops the watch, the daemon (exit 0 asserted), the fleet
        finally:
            if not self.server.running():
                self.server.start()
            admin = await asyncpg.connect(self.server.url())
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()

    # -- driving ---------------------------------------------------------------------------------

    async def poll_round(self) -> None:
        """Half an hour later: every meter polled once (its events may wait in memory or in
        the journal when the database is away)."""
        stats = self.daemon.supervisor.statistics
        before = stats().polls
        self.clock.advance(minutes=30)
        self.advances += 1
        await wait_until(lambda: stats().polls >= before + METERS)
        await wait_until(lambda: self.daemon.supervisor.status(top=0).polls_running == 0)

    async def settle(self) -> None:
        """Everything accepted is committed, the journal drained, the projectors caught up."""
        appender = self.daemon.appender
        await wait_until(lambda: appender.spilled_events == 0 and appender.statistics().queued == 0)
        with anyio.fail_after(READY_WITHIN_SECONDS):
            await appender.flush()
        projectors = self.daemon.projectors
        assert projectors is not None
        await wait_until(lambda: all(s.lag_events == 0 for s in projectors.status()))

    def fault_began(self) -> float:
        self._fault_at = time.monotonic()
        return self._fault_at

    async def recovered(self, since: float) -> None:
        """The database is back since ``since``: /readyz 200 within the bound, then settled."""
        self.outcome.unready_rounds += self.health.saw_unready_since(self._fault_at)
        self.outcome.recovery_seconds.append(round(await self.health.ready_after(since), 3))
        await self.settle()
        self.outcome.rounds += 1

    async def stop_server(self, mode: str) -> None:
        await anyio.to_thread.run_sync(self.server.stop, mode)

    async def start_server(self) -> float:
        await anyio.to_thread.run_sync(self.server.start)
        return time.monotonic()

    async def terminate_backends(self) -> int:
        """pg_terminate_backend on every flowsd connection; how many were terminated."""
        admin = await asyncpg.connect(
            self.server.url(), server_settings={"application_name": "fault-suite"}
        )
        try:
            return int(
                await admin.fetchval(
                    """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                       FROM pg_stat_activity
                       WHERE application_name = 'flowsd' AND pid <> pg_backend_pid()"""
                )
            )
        finally:
            await admin.close()

    async def flowsd(self, *argv: str) -> int:
        """A flowsd command against this database, in a thread (as a second process would)."""
        return int(await anyio.to_thread.run_sync(flowsd_main, [*argv, "--database-url", self.url]))

    # -- checks ----------------------------------------------------------------------------------

    async def finish(self) -> Outcome:
        """Stop the daemon and check everything the module docstring promises."""
        await self.settle()
        daemon = self.daemon
        assert daemon.components.alive()
        restarts = {n: s.restarts for n, s in daemon.components.statistics().items() if s.restarts}
        assert not restarts, f"components failed unexpectedly: {restarts}"
        assert not self.health.healthz_failures, self.health.healthz_failures[:5]
        assert self.health.polls > 0
        self.outcome.healthz_checks = self.health.polls
        await self._stack.aclose()  # the daemon stops here (and must exit 0)
        stats = daemon.appender.statistics()
        self.outcome.spilled_events = stats.spilled
        assert stats.rejected == 0
        assert stats.accepted == stats.committed + stats.duplicates, stats
        assert not list((self.state_directory / "spill").glob("segment-*"))
        await self._check_log(stats.committed, stats.duplicates)
        assert await self.flowsd("verify") == 0
        self.outcome.write()
        return self.outcome

    async def _check_log(self, committed: int, duplicates: int) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM flows.meter_event_log")
            ids = {r["serial"]: r["id"] for r in await conn.fetch(
                "SELECT serial, id FROM flows.meter_registry")}  # fmt: skip
            events = [e async for batch in iter_batches(conn, 0, batch_size=5000) for e in batch]
        finally:
            await conn.close()
        # Every accepted event made a row or found its row. A commit whose answer was lost
        # with the connection (the server committed, the client saw it die) is retried and
        # then found as a duplicate: such rows are in the log but not in `committed`.
        assert committed <= rows <= committed + duplicates, (rows, committed, duplicates)
        self.outcome.notes["commits_whose_answer_was_lost"] = rows - committed
        per_meter: dict[uuid.UUID, list[types.RecordedEvent]] = defaultdict(list)
        for event in events:
            per_meter[event.meter_id].append(event)
        for meter in self.fleet.meters:
            mine = per_meter[ids[meter.serial]]
            self._check_answers_stored_once(meter.index, mine)
            if not meter.three_phase:
                self._check_half_hours(meter.index, mine)

    def _check_answers_stored_once(self, index: int, events: list[types.RecordedEvent]) -> None:
        """Every signal-quality answer the meter gave is one event, with the value it sent."""
        answered = {from_emop(e.at) for e in self.fleet.answers(index, _CSQ)}
        stored = Counter(
            e.observed_at for e in events if isinstance(e.body, types.SignalQualityRead)
        )
        assert set(stored.values()) == {1}, f"meter {index}: doubled {stored}"
        assert set(stored) == answered, f"meter {index}: answered {answered}, stored {stored}"
        for event in events:
            if isinstance(event.body, types.SignalQualityRead):
                assert event.body.csq == self.fleet.truth(index, event.observed_at).csq

    def _check_half_hours(self, index: int, events: list[types.RecordedEvent]) -> None:
        records = sorted(
            (e for e in events if isinstance(e.body, types.ProfileLog1Record)),
            key=lambda e: e.observed_at,
        )
        stamps = [e.observed_at for e in records]
        assert len(stamps) == len(set(stamps)), f"meter {index}: a half hour stored twice"
        assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(stamps))
        newest = self.clock.now_datetime() - timedelta(minutes=31)
        assert stamps and stamps[-1] >= newest - timedelta(minutes=30), (index, stamps[-1])
        truths = {
            t.end: t
            for t in self.fleet.intervals(index, stamps[0] - timedelta(minutes=30), stamps[-1])
        }
        for event in records:
            body = event.body
            assert isinstance(body, types.ProfileLog1Record)
            assert body.import_a_wh == truths[event.observed_at].registers_at_end[0]
