"""The projector runner against PostgreSQL: crashes, competing instances, replays under load."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

import anyio
import asyncpg
import pytest
from structlog.testing import capture_logs

from flowsd.config import ProjectionsConfig
from flowsd.events import types as t
from flowsd.events.checkpoints import CheckpointConflictError, read_checkpoint
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.subscriptions import SubscriberHub
from flowsd.events.types import RecordedEvent
from flowsd.ops.metrics import REGISTRY
from flowsd.projections.base import Projection
from flowsd.projections.catalogue import all_projections
from flowsd.projections.interval_hh import IntervalProjection
from flowsd.projections.parking import retry_parked
from flowsd.projections.projector import apply_batch
from flowsd.projections.registry import RegistryProjection
from flowsd.projections.replay import replay
from flowsd.projections.runner import ProjectorRunner
from flowsd.projections.series import CsqProjection
from flowsd.projections.status import ProjectorStatistics
from flowsd.projections.verify import verify
from tests.projections.conftest import add_meter, add_register
from tests.projections.strategies import BASE
from tests.support import wait_until

CONFIG = ProjectionsConfig(batch_min=7, batch_max=50, poll_interval_seconds=0.2)


def readings(meters: Sequence[uuid.UUID], start: int, count: int) -> list[t.Event]:
    """CSQ, balance and profile records, ``count`` per meter, slots from ``start``."""
    events = []
    for meter in meters:
        for n in range(start, start + count):
            at = BASE + n * timedelta(minutes=30)
            events += [
                t.Event(
                    meter_id=meter, observed_at=at, read_at=at, body=t.SignalQualityRead(csq=n % 32)
                ),
                t.Event(
                    meter_id=meter,
                    observed_at=at,
                    read_at=at,
                    body=t.BalanceRead(balance_gbp=Decimal(n) - 20),
                ),
                t.Event(
                    meter_id=meter,
                    observed_at=at,
                    read_at=at,
                    body=t.ProfileLog1Record(status=0x80, import_a_wh=100 * n),
                ),
            ]
    return events


async def meters_with_registers(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    meters = [await add_meter(conn) for _ in range(count)]
    for meter in meters:
        await add_register(conn, meter, "A")
    return meters


async def all_equal(conn: asyncpg.Connection) -> list[str]:
    return [v.projection for v in await verify(conn, all_projections()) if not v.equal]


class DiesAfterWriting(Projection):
    """Writes the batch's rows, then its database session is killed before the commit."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name, self.table = inner.name, inner.table
        self.key, self.values, self.event_types = inner.key, inner.values, inner.event_types

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await self.inner.apply(conn, events)
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async def create_shadow(self, conn: asyncpg.Connection, shadow: str) -> None:
        raise NotImplementedError

    async def build(self, conn: asyncpg.Connection, shadow: str, after: int, through: int) -> None:
        raise NotImplementedError

    def shadow_rows(self, shadow: str) -> str:
        raise NotImplementedError

    async def swap(self, conn: asyncpg.Connection, shadow: str, *, whole: bool) -> None:
        raise NotImplementedError


async def test_projector_killed_mid_batch_resumes_without_loss_or_duplication(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    meters = await meters_with_registers(conn, 3)
    result = await append_batch(conn, readings(meters, 0, 6))
    for inner in (CsqProjection(), IntervalProjection()):
        victim = await asyncpg.connect(migrated_url)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await apply_batch(
                victim,
                DiesAfterWriting(inner),
                result.events,
                expected=0,
                through=result.through_position,
            )
        await victim.close()
        assert await read_checkpoint(conn, inner.name) == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {inner.table}") == 0

    pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=4)
    try:
        runner = ProjectorRunner(pool, CONFIG)
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            await wait_until(lambda: all(s.lag_events == 0 for s in runner.status()))
            # A second crash: cancelled in the middle of catching up a new backlog.
            await append_batch(conn, readings(meters, 6, 30))
            await asyncio.sleep(0.05)
            group.cancel_scope.cancel()
        runner = ProjectorRunner(pool, CONFIG)
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            head = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
            assert await runner.wait_caught_up(head, 20)
            assert not await runner.wait_caught_up(head + 1, 0.3)  # nothing beyond the head
            group.cancel_scope.cancel()
    finally:
        await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_csq") == 3 * 36
    assert await conn.fetchval("SELECT count(*) FROM flows.register_interval_hh") == 3 * 35
    assert await all_equal(conn) == []


class CountingProjection(CsqProjection):
    """meter_csq, also counting in a table how many times a batch was applied."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await conn.execute("UPDATE apply_count SET n = n + 1")
        await asyncio.sleep(0.2)  # keep the transaction open while the other instance tries
        await super().apply(conn, events)


async def test_two_instances_never_both_apply_a_batch(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    await conn.execute(
        "CREATE TABLE apply_count (n integer NOT NULL); INSERT INTO apply_count VALUES (0)"
    )
    meters = await meters_with_registers(conn, 2)
    result = await append_batch(conn, readings(meters, 0, 4))
    first, second = await asyncpg.connect(migrated_url), await asyncpg.connect(migrated_url)
    try:
        outcomes = await asyncio.gather(
            *(
                apply_batch(
                    c,
                    CountingProjection(),
                    result.events,
                    expected=0,
                    through=result.through_position,
                )
                for c in (first, second)
            ),
            return_exceptions=True,
        )
    finally:
        await first.close()
        await second.close()
    conflicts = [o for o in outcomes if isinstance(o, CheckpointConflictError)]
    assert len(conflicts) == 1, outcomes
    assert await conn.fetchval("SELECT n FROM apply_count") == 1
    assert await read_checkpoint(conn, "meter_csq") == result.through_position


async def test_two_runners_side_by_side_give_the_tables_of_a_replay(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    meters = await meters_with_registers(conn, 4)
    pools = [await asyncpg.create_pool(migrated_url, min_size=1, max_size=4) for _ in range(2)]
    try:
        runners = [ProjectorRunner(pool, CONFIG) for pool in pools]
        async with anyio.create_task_group() as group:
            for runner in runners:
                await group.start(runner.run)
            for start in range(0, 40, 4):
                await append_batch(conn, readings(meters, start, 4))
                await asyncio.sleep(0.01)
            head = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
            await wait_until(lambda: all(s.checkpoint == head for r in runners for s in r.status()))
            group.cancel_scope.cancel()
    finally:
        for pool in pools:
            await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_csq") == 4 * 40
    assert await all_equal(conn) == []


async def test_replay_while_events_are_appended_then_verify(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    meters = await meters_with_registers(conn, 5)
    await append_batch(conn, readings(meters, 0, 40))
    hub = SubscriberHub()
    pool = await asyncpg.create_pool(migrated_url, min_size=2, max_size=6)
    appender = await asyncpg.connect(migrated_url)
    replayer = await asyncpg.connect(migrated_url)
    try:
        runner = ProjectorRunner(pool, CONFIG, subscribe=hub.subscribe)
        async with anyio.create_task_group() as group:
            await group.start(runner.run)

            async def keep_appending() -> None:
                for start in range(40, 100, 2):
                    hub.publish(await append_batch(appender, readings(meters, start, 2)))
                    await asyncio.sleep(0.01)

            group.start_soon(keep_appending)
            report = await replay(replayer, all_projections())
            assert report.events > 0
            head_after = 0
            while head_after != await conn.fetchval(
                "SELECT max(position) FROM flows.meter_event_log"
            ):
                head_after = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
                await asyncio.sleep(0.3)
            await wait_until(lambda: all(s.checkpoint == head_after for s in runner.status()))
            group.cancel_scope.cancel()
    finally:
        await appender.close()
        await replayer.close()
        await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_csq") == 5 * 100
    assert await all_equal(conn) == []


def transactions(projection: str) -> float:
    """Projector transactions of ``projection`` so far (this process)."""
    name = "flowsd_projector_batch_events_count"
    return REGISTRY.get_sample_value(name, {"projection": projection}) or 0.0


@pytest.mark.parametrize("hole", [False, True])
async def test_batches_merged_within_the_window_give_the_tables_of_a_replay(
    conn: asyncpg.Connection, migrated_url: str, hole: bool
) -> None:
    """Ten batches handed over within ``merge_seconds`` are one transaction; with a batch
    appended but never handed over (another process's) among them, the log fills the hole.
    Either way the tables equal a replay."""
    meters = await meters_with_registers(conn, 5)
    hub = SubscriberHub()
    # No poll within the test: only the batches handed over wake the projectors.
    config = ProjectionsConfig(
        batch_min=7, batch_max=10_000, merge_seconds=2.0, poll_interval_seconds=600
    )
    pool = await asyncpg.create_pool(migrated_url, min_size=2, max_size=6)
    try:
        runner = ProjectorRunner(pool, config, subscribe=hub.subscribe, listen=False)
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            before = transactions("meter_csq")
            appended = [await append_batch(conn, readings(meters, s, 4)) for s in range(0, 40, 4)]
            # Handed over 20 ms apart (well inside the window), as the appender would.
            for n, batch in enumerate(appended):
                if not (hole and n == 4):
                    hub.publish(batch)
                await asyncio.sleep(0.02)
            head = await conn.fetchval("SELECT max(position) FROM flows.meter_event_log")
            await wait_until(lambda: all(s.checkpoint == head for s in runner.status()))
            group.cancel_scope.cancel()
    finally:
        await pool.close()
    if not hole:
        assert transactions("meter_csq") - before == 1
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_csq") == 5 * 40
    assert await all_equal(conn) == []


async def test_a_meter_that_cannot_be_applied_is_parked_and_retried(
    conn: asyncpg.Connection,
) -> None:
    taken, other = await add_meter(conn, serial="EMLTAKEN"), await add_meter(conn)
    at = BASE
    clash = t.Event(
        meter_id=other, observed_at=at, read_at=at, body=t.IdentityRead(serial="EMLTAKEN")
    )
    later = t.Event(
        meter_id=other,
        observed_at=at + timedelta(hours=1),
        read_at=at,
        body=t.FlagsRead(prepay_enabled=True),
    )
    fine = t.Event(
        meter_id=taken, observed_at=at, read_at=at, body=t.FlagsRead(prepay_enabled=True)
    )
    registry = RegistryProjection()
    first = await append_batch(conn, [clash, fine])
    await conn.execute("UPDATE flows.meter_registry SET serial = 'EMLOTHER' WHERE id = $1", other)
    with capture_logs() as logs:
        await apply_batch(conn, registry, first.events, expected=0, through=first.through_position)
        second = await append_batch(conn, [later])
        await apply_batch(
            conn,
            registry,
            second.events,
            expected=first.through_position,
            through=second.through_position,
        )
    parked_lines = [e for e in logs if e["event"] == "projection parked events"]
    assert len(parked_lines) == 2  # the failing event, then the one held behind it
    assert {(e["meter_serial"], e["meter_id"]) for e in parked_lines} == {("EMLOTHER", str(other))}
    assert (
        await conn.fetchval("SELECT prepay_enabled FROM flows.meter_registry WHERE id = $1", taken)
        is True
    )
    parked = await conn.fetch(
        "SELECT position FROM flowsd.projection_parked_event WHERE meter_id = $1 ORDER BY 1", other
    )
    assert len(parked) == 2  # the failing event and the later one, held behind it
    assert (
        await conn.fetchval("SELECT prepay_enabled FROM flows.meter_registry WHERE id = $1", other)
        is None
    )
    # Still failing: nothing applied, nothing lost.
    with capture_logs() as logs:
        assert (await retry_parked(conn, registry)).still_parked == 2
    (still,) = [e for e in logs if e["event"] == "parked events still fail"]
    assert still["meter_serial"] == "EMLOTHER"
    # The operator fixes the cause; the retry applies both, in order.
    await conn.execute("UPDATE flows.meter_registry SET serial = 'EMLOLD' WHERE id = $1", taken)
    report = await retry_parked(conn, registry)
    assert (report.applied, report.still_parked) == (2, 0)
    row = await conn.fetchrow(
        "SELECT serial, prepay_enabled FROM flows.meter_registry WHERE id = $1", other
    )
    assert tuple(row or ()) == ("EMLTAKEN", True)


def csq(meter: uuid.UUID, hours: int, value: int) -> t.Event:
    at = BASE + timedelta(hours=hours)
    return t.Event(meter_id=meter, observed_at=at, read_at=at, body=t.SignalQualityRead(csq=value))


async def log_with_an_undecodable_payload(
    conn: asyncpg.Connection, broken: uuid.UUID, fine: uuid.UUID
) -> int:
    """Four CSQ events, the second of ``broken`` held behind its first, which does not
    decode; the head."""
    await append_batch(conn, [csq(fine, 0, 9)])
    # Written by something other than this version's appender: a known type, a bad payload.
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, payload) '
        "VALUES ($1, $2, $3, $4::jsonb)",
        broken,
        BASE,
        t.SignalQualityRead.TYPE_ID,
        '{"csq": "high"}',
    )
    return (await append_batch(conn, [csq(broken, 1, 3), csq(fine, 1, 4)])).through_position


async def test_an_event_whose_payload_does_not_decode_is_parked_not_skipped(
    conn: asyncpg.Connection,
) -> None:
    broken, fine = await add_meter(conn), await add_meter(conn)
    head = await log_with_an_undecodable_payload(conn, broken, fine)
    events = await read_events(conn, 0, 100, until=head)

    outcome = await apply_batch(conn, CsqProjection(), events, expected=0, through=head)

    assert (outcome.applied, outcome.parked, outcome.events) == (2, 2, 4)
    parked = await conn.fetch(
        "SELECT meter_id, event_type, error FROM flowsd.projection_parked_event ORDER BY position"
    )
    assert [(r["meter_id"], r["event_type"]) for r in parked] == [(broken, 1002), (broken, 1002)]
    assert "does not decode" in parked[0]["error"]
    assert (
        await conn.fetchval("SELECT count(*) FROM flows.meter_csq WHERE meter_id = $1", fine) == 2
    )
    assert (
        await conn.fetchval("SELECT count(*) FROM flows.meter_csq WHERE meter_id = $1", broken) == 0
    )
    # A retry decodes the payload again: still parked.
    assert (await retry_parked(conn, CsqProjection())).still_parked == 2


async def test_the_runner_counts_what_its_projector_did(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    """The statistics ``/metrics`` exports: at 0 from the start; then the log read once,
    every event covered, the two events of the broken meter parked, nothing failed."""
    broken, fine = await add_meter(conn), await add_meter(conn)
    head = await log_with_an_undecodable_payload(conn, broken, fine)
    pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=4)
    try:
        runner = ProjectorRunner(pool, CONFIG, projections=[CsqProjection()], listen=False)
        zero = ProjectorStatistics("meter_csq", 0, 0, 0.0, False, 0, 0, 0, 0, 0, "stopped")
        assert runner.statistics() == [zero]
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            await wait_until(lambda: runner.statistics()[0].checkpoint == head)
            (running,) = runner.statistics()
            group.cancel_scope.cancel()
    finally:
        await pool.close()
    assert running == ProjectorStatistics("meter_csq", head, 0, 0.0, True, 4, 1, 2, 0, 0)
    (stopped,) = runner.statistics()
    assert not stopped.healthy and stopped.role == "stopped"
