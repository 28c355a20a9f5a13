"""A daemon frozen inside its append transaction holds the event log's append lock only for
``[database] idle_in_transaction_timeout_seconds``: a real ``flowsd run`` process, stopped
with SIGSTOP while its append transaction holds the lock, is cut off by the server, another
writer's append gets through, and the daemon, resumed, commits the batch it was appending
again, once (the simulator's journal is the truth).

Freezing it there on purpose: the test holds a SHARE lock on ``flowsd.event_key``, which the
daemon's insert needs (the log's statement trigger claims every key there) and takes only
after the append lock. Once the daemon's session waits on it, holding the append lock, the
process is stopped and the SHARE lock released: the insert completes on the server and the
session then waits for a client that does not answer, idle in its transaction, which is
what any daemon paused between two statements of a transaction looks like to the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from flowsd.emop import by_name
from flowsd.events import types
from flowsd.events.reader import iter_batches
from flowsd.events.store import append_batch
from flowsd.sim.clock import from_emop
from flowsd.sim.fleet import SimulatedFleet
from tests.events.helpers import balance_event, create_meters
from tests.integration.daemon import free_port, registered_fleet, run_config, start_run
from tests.support import migrate_database, wait_until

IDLE_TIMEOUT = 2.0
METERS = 4
_CSQ = by_name("csq_net_op").id

# The daemon's append, waiting for a lock while it holds the (exclusive) append lock.
_BLOCKED_APPEND = """
SELECT a.pid FROM pg_stat_activity a
WHERE a.application_name = 'flowsd' AND a.wait_event_type = 'Lock'
  AND a.query LIKE '%flows.meter_event_log%'
  AND EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'
              AND l.mode = 'ExclusiveLock' AND l.granted)
"""


def _start(
    tmp_path: Path, url: str, fleet: SimulatedFleet, management: int
) -> subprocess.Popen[bytes]:
    config = run_config(
        tmp_path / "state",
        fleet.port,
        database={"idle_in_transaction_timeout_seconds": IDLE_TIMEOUT},
        management={"listen": f"127.0.0.1:{management}"},
        daemon={"instance": "frozen", "state_flush_seconds": 1.0, "registry_reload_seconds": 60.0},
        leases={"lease_seconds": 120.0},
        appender={
            "flush_interval_seconds": 0.1,
            "statement_timeout_seconds": 60.0,
            "lock_timeout_seconds": 60.0,
        },
        meters={
            "connect_timeout_seconds": 2.0,
            "read_timeout_seconds": 2.0,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.1,
            "profile_settle_seconds": 0.0,
        },
    )
    return start_run(tmp_path, url, config, instance="frozen")


def _metric(port: int, prefix: str) -> float:
    """The sum of the samples whose name (labels included) starts with ``prefix``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))


async def _count(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM flows.meter_event_log")
    return count


async def test_a_daemon_frozen_in_its_append_transaction_is_cut_off_and_retries_once(
    database_url: str, tmp_path: Path
) -> None:
    url = database_url
    await migrate_database(url)
    async with registered_fleet(url, METERS, hardware=("C1.w",), journal=True) as fleet:
        conn = await asyncpg.connect(url)
        # pg_stat_activity is read outside the gate's transaction (a snapshot within one).
        watch = await asyncpg.connect(url)
        # A meter nobody polls (no address), for the other writer's event.
        (other_meter,) = await create_meters(conn, 1)
        management = free_port("127.0.0.1")
        log = tmp_path / "stderr.log"
        daemon = _start(tmp_path, url, fleet, management)
        frozen = False
        try:
            await wait_until(lambda: _more(conn, 0))
            gate = conn.transaction()
            await gate.start()
            await conn.execute("LOCK TABLE flowsd.event_key IN SHARE MODE")
            pids: list[int] = []

            async def blocked() -> bool:
                pids[:] = [row["pid"] for row in await watch.fetch(_BLOCKED_APPEND)]
                return bool(pids)

            await wait_until(blocked, seconds=30)
            daemon.send_signal(signal.SIGSTOP)
            frozen = True
            frozen_at = fleet.clock.now()
            await gate.commit()
            (pid,) = pids
            await wait_until(lambda: _state(watch, pid, "idle in transaction"), seconds=10)
            idle_since = time.monotonic()

            # Another writer: held up by the frozen session, then through once the server
            # ended it.
            writer = await asyncpg.connect(url)
            try:
                result = await append_batch(writer, [balance_event(other_meter, 1)])
            finally:
                await writer.close()
            waited = time.monotonic() - idle_since
            assert len(result.events) == 1
            assert IDLE_TIMEOUT - 0.5 < waited < IDLE_TIMEOUT + 1.5, waited
            assert not await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", pid
            )
            print(f"other writer through {waited:.2f} s after the frozen session went idle")

            daemon.send_signal(signal.SIGCONT)
            frozen = False
            before = await _count(conn)
            await wait_until(lambda: _metric(management, "flowsd_appender_errors_total") >= 1)
            await wait_until(lambda: _more(conn, before + 2 * METERS))
            duplicates = _metric(management, "flowsd_events_duplicate_total")
        finally:
            if frozen:
                daemon.send_signal(signal.SIGCONT)
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
            await conn.close()
            await watch.close()
        text = log.read_text()
        assert daemon.returncode == 0, text[-3000:]
        failures = [
            json.loads(line) for line in text.splitlines() if '"append failed; retrying"' in line
        ]
        assert failures, text[-3000:]
        print("the daemon, resumed:", failures[0]["error"])
        # The killed transaction committed nothing: its retry found none of its keys stored.
        assert duplicates == 0
        await _check_once(url, fleet, from_emop(frozen_at))


async def _state(conn: asyncpg.Connection, pid: int, state: str) -> bool:
    found = await conn.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(found == state)


async def _more(conn: asyncpg.Connection, than: int) -> bool:
    return await _count(conn) > than


async def _check_once(url: str, fleet: SimulatedFleet, frozen_at: datetime) -> None:
    """Every signal-quality answer a meter gave before the freeze is stored, and nothing
    twice: the batch cut off by the server was committed again, once."""
    stored: dict[str, Counter[datetime]] = {}
    conn = await asyncpg.connect(url)
    try:
        serials = {
            row["id"]: row["serial"]
            for row in await conn.fetch("SELECT id, serial FROM flows.meter_registry")
        }
        async for batch in iter_batches(conn, after=0):
            for event in batch:
                if isinstance(event.body, types.SignalQualityRead):
                    counts = stored.setdefault(serials[event.meter_id], Counter())
                    counts[event.observed_at] += 1
    finally:
        await conn.close()
    for meter in fleet.meters:
        counts = stored.get(meter.serial, Counter())
        assert set(counts.values()) == {1}, f"meter {meter.index}: a reading stored twice"
        for answer in fleet.answers(meter.index, _CSQ):
            at = from_emop(answer.at)
            if at >= frozen_at:
                continue
            assert any(abs(stamp - at) <= timedelta(seconds=1) for stamp in counts), (
                f"meter {meter.index}: the reading answered at {at} was lost"
            )
