"""Whole replays in parallel lanes, again and again, while events are appended and projected.

Lanes swap tables whose foreign keys point at the same parents (register_import, _export and
register_interval_hh at meter_registers; the meter series at meter_registry), and live
projectors write those tables meanwhile. Before the swaps took their locks in one order,
two lanes could each hold a parent and wait for the other's: PostgreSQL then kills one of
them with a deadlock, and the replay fails.

``FLOWSD_TEST_REPLAY_ROUNDS`` sets the number of replays (a bounded few by default, so the
suite stays quick; the soak run in the note used 60).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import anyio
import asyncpg
import pytest

from flowsd.events import types as t
from flowsd.events.store import append_batch
from flowsd.events.subscriptions import SubscriberHub
from flowsd.projections import replay as replay_module
from flowsd.projections.catalogue import all_projections
from flowsd.projections.replay import replay
from flowsd.projections.runner import ProjectorRunner
from flowsd.projections.verify import verify
from tests.projections.conftest import add_meter, add_register
from tests.projections.strategies import BASE
from tests.projections.test_runner import (
    CONFIG,
)
from tests.support import wait_until

ROUNDS = int(os.environ.get("FLOWSD_TEST_REPLAY_ROUNDS", "6"))
WORKERS = 4  # what `flowsd replay` uses on a machine with 4 or more cores


def _events(meters: Sequence[uuid.UUID], start: int, count: int) -> list[t.Event]:
    """Readings that feed every history table with a foreign key, ``count`` slots per meter."""
    events = []
    for meter in meters:
        for n in range(start, start + count):
            at = BASE + n * timedelta(minutes=30)

            def event(body: t.AnyBody, meter: uuid.UUID = meter, at: datetime = at) -> t.Event:
                return t.Event(meter_id=meter, observed_at=at, read_at=at, body=body)

            events += [
                event(t.SignalQualityRead(csq=n % 32)),
                event(t.BalanceRead(balance_gbp=Decimal(n) - 20)),
                event(t.VoltageRead(voltage_v=Decimal(230 + n % 10))),
                event(t.ProfileLog1Record(status=0x80, import_a_wh=100 * n)),
                event(t.RegisterRead(element="A", import_active_wh=900 * n, export_active_wh=n)),
                event(t.RegisterRead(element="B", import_active_wh=500 * n, export_active_wh=n)),
            ]
    return events


async def test_parallel_replays_while_ingesting_never_deadlock(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deadlock fails the test instead of being tried again.
    monkeypatch.setattr(replay_module, "SWAP_ATTEMPTS", 1)
    setup = await asyncpg.connect(migrated_url)
    meters = [await add_meter(setup) for _ in range(6)]
    for meter in meters:
        await add_register(setup, meter, "A")
        await add_register(setup, meter, "B")
    await append_batch(setup, _events(meters, 0, 20))
    hub = SubscriberHub()
    pool = await asyncpg.create_pool(migrated_url, min_size=2, max_size=12)
    appender = await asyncpg.connect(migrated_url)
    replayer = await asyncpg.connect(migrated_url)

    async def lane_connection() -> asyncpg.Connection:
        return await asyncpg.connect(migrated_url)

    appended = 20
    try:
        runner = ProjectorRunner(pool, CONFIG, subscribe=hub.subscribe)
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            stop_appending = anyio.Event()

            async def keep_appending() -> None:
                nonlocal appended
                while not stop_appending.is_set():
                    hub.publish(await append_batch(appender, _events(meters, appended, 1)))
                    appended += 1
                    await asyncio.sleep(0.005)

            group.start_soon(keep_appending)
            for _ in range(ROUNDS):
                report = await replay(
                    replayer, all_projections(), connect=lane_connection, workers=WORKERS
                )
                assert len(report.checkpoint) == len(all_projections())
            stop_appending.set()
            await anyio.sleep(0.05)
            head = await setup.fetchval("SELECT max(position) FROM flows.meter_event_log")
            await wait_until(lambda: all(s.checkpoint >= head for s in runner.status()), 60)
            group.cancel_scope.cancel()
        verdicts = await verify(setup, all_projections())
        assert [v.projection for v in verdicts if not v.equal] == []
        rows = await setup.fetchval("SELECT count(*) FROM flows.register_export")
        assert rows == 2 * len(meters) * appended
    finally:
        await appender.close()
        await replayer.close()
        await pool.close()
        await setup.close()
