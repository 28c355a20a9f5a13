"""The appender task: group commit, back-pressure, subscribers, outages, spill, rejections."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest
from structlog.testing import capture_logs

from flowsd.config import AppenderConfig, Config
from flowsd.events.appender import Appender
from flowsd.events.spill import SpillDirectoryInUseError, SpillJournal
from flowsd.events.store import AppendResult
from flowsd.events.types import Event, RecordedEvent
from tests.events.helpers import balance_event


class Database:
    """Connections to the test database that the test can cut off and restore."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.up = True
        self.connections: list[asyncpg.Connection] = []

    async def connect(self) -> asyncpg.Connection:
        if not self.up:
            raise OSError("connection refused (database down in this test)")
        conn = await asyncpg.connect(self.url)
        self.connections.append(conn)
        return conn

    def go_down(self) -> None:
        self.up = False
        for conn in self.connections:
            conn.terminate()
        self.connections.clear()


def make_appender(db: Database, spill: Path, **overrides: int | float) -> Appender:
    settings: dict[str, int | float] = {
        "queue_size": 100,
        "batch_max": 50,
        "flush_interval_seconds": 0.01,
        "memory_max_events": 60,
    }
    settings.update(overrides)
    config = AppenderConfig(**settings)  # type: ignore[arg-type]
    return Appender(
        db.connect,
        config=config,
        spill_directory=spill,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.05,
    )


@pytest.fixture
def db(migrated_url: str) -> Database:
    return Database(migrated_url)


@pytest.fixture
async def running(db: Database, tmp_path: Path) -> AsyncIterator[Callable[..., Appender]]:
    """Start appenders with :func:`make_appender`; stop them all at the end of the test."""
    started: list[tuple[Appender, asyncio.Task[None]]] = []

    def start(**overrides: int | float) -> Appender:
        appender = make_appender(db, tmp_path / "spill", **overrides)
        started.append((appender, asyncio.create_task(appender.run())))
        return appender

    yield start
    for appender, task in started:
        appender.stop()
        await asyncio.wait_for(task, 10)


def spilled_count(directory: Path) -> int:
    journal = SpillJournal(directory)
    try:
        return journal.scan()
    finally:
        journal.close()


async def stored_keys(conn: asyncpg.Connection) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT idempotency_key FROM flows.meter_event_log ORDER BY position")
    return [r[0] for r in rows]


async def test_group_commit_in_acceptance_order_with_subscribers(
    running: Callable[..., Appender], conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    appender = running(batch_max=100, queue_size=1000)
    subscription = appender.subscribe()
    heard: list[AppendResult] = []
    appender.add_listener(heard.append)
    events = [balance_event(meters[i % 4], i) for i in range(1000)]
    await appender.append_many(events)
    await asyncio.wait_for(appender.flush(), 10)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]
    batches = []
    while (batch := subscription.get_nowait()) is not None:
        batches.append(batch)
    assert batches == heard
    assert all(1 <= len(b.events) <= 100 for b in batches)
    assert len(batches) < 100  # grouped, not one transaction per event
    assert batches[0].after_position == 0
    for earlier, later in itertools.pairwise(batches):
        assert later.after_position == earlier.through_position
    positions = [e.position for b in batches for e in b.events]
    assert positions == list(range(1, 1001))
    assert [e.body for b in batches for e in b.events] == [e.body for e in events]


async def test_duplicates_are_not_stored_or_published(
    running: Callable[..., Appender], conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    appender = running()
    subscription = appender.subscribe()
    events = [balance_event(meters[0], i) for i in range(30)]
    await appender.append_many(events + events)
    await asyncio.wait_for(appender.flush(), 10)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 30
    published: list[RecordedEvent] = []
    while (batch := subscription.get_nowait()) is not None:
        published += batch.events
    assert len(published) == 30


async def test_a_full_queue_makes_producers_wait(
    db: Database, tmp_path: Path, meters: list[uuid.UUID]
) -> None:
    appender = make_appender(db, tmp_path / "spill", queue_size=5)
    for i in range(5):
        await appender.append(balance_event(meters[0], i))
    sixth = asyncio.create_task(appender.append(balance_event(meters[0], 5)))
    await asyncio.sleep(0.1)
    assert not sixth.done()
    with pytest.raises(asyncio.QueueFull):
        appender.append_nowait(balance_event(meters[0], 6))
    task = asyncio.create_task(appender.run())
    await asyncio.wait_for(sixth, 5)
    await asyncio.wait_for(appender.flush(), 5)
    appender.stop()
    await asyncio.wait_for(task, 5)


async def test_outage_spills_to_disk_and_drains_in_order(
    db: Database,
    running: Callable[..., Appender],
    conn: asyncpg.Connection,
    meters: list[uuid.UUID],
    tmp_path: Path,
) -> None:
    appender = running(memory_max_events=40, spill_segment_max_bytes=4096)
    first = [balance_event(meters[0], i) for i in range(20)]
    await appender.append_many(first)
    await asyncio.wait_for(appender.flush(), 5)
    db.go_down()
    during = [balance_event(meters[1], i) for i in range(300)]
    await asyncio.wait_for(appender.append_many(during), 10)
    for _ in range(200):
        if appender.spilled_events >= 200:
            break
        await asyncio.sleep(0.02)
    assert appender.spilled_events >= 200
    assert len(list((tmp_path / "spill").iterdir())) > 1  # rotated segments
    assert not appender.statistics().database_up
    db.up = True
    after = [balance_event(meters[2], i) for i in range(10)]
    await appender.append_many(after)
    await asyncio.wait_for(appender.flush(), 10)
    assert await stored_keys(conn) == [e.idempotency_key() for e in first + during + after]
    assert list((tmp_path / "spill").glob("*.spill")) == []
    assert appender.statistics().pending_in_journal == 0


async def test_stop_during_outage_spills_and_the_next_run_drains(
    db: Database, conn: asyncpg.Connection, meters: list[uuid.UUID], tmp_path: Path
) -> None:
    db.up = False
    appender = make_appender(db, tmp_path / "spill", memory_max_events=1000)
    task = asyncio.create_task(appender.run())
    events = [balance_event(meters[0], i) for i in range(25)]
    await appender.append_many(events)
    await asyncio.sleep(0.05)
    appender.stop()
    await asyncio.wait_for(task, 5)
    assert spilled_count(tmp_path / "spill") == 25
    db.up = True
    successor = make_appender(db, tmp_path / "spill")
    task = asyncio.create_task(successor.run())
    await asyncio.wait_for(successor.flush(), 10)
    successor.stop()
    await asyncio.wait_for(task, 5)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]


async def test_replaying_a_spill_segment_twice_adds_nothing(
    db: Database, conn: asyncpg.Connection, meters: list[uuid.UUID], tmp_path: Path
) -> None:
    journal = SpillJournal(tmp_path / "spill")
    events = [balance_event(meters[3], i) for i in range(40)]
    journal.write(events)
    journal.close()
    (segment,) = journal.segments()
    shutil.copy(segment, tmp_path / "copy")
    for _ in range(2):
        appender = make_appender(db, tmp_path / "spill")
        task = asyncio.create_task(appender.run())
        await asyncio.wait_for(appender.flush(), 10)
        appender.stop()
        await asyncio.wait_for(task, 5)
        assert not segment.exists()
        shutil.copy(tmp_path / "copy", segment)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]


async def test_a_full_disk_raises_the_alarm_and_loses_nothing(
    db: Database, conn: asyncpg.Connection, meters: list[uuid.UUID], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("spill cannot be created under a file")
    appender = make_appender(db, blocker / "spill", memory_max_events=20, queue_size=10)
    db.up = False
    task = asyncio.create_task(appender.run())
    events = [balance_event(meters[0], i) for i in range(200)]
    producer = asyncio.create_task(appender.append_many(events))
    for _ in range(200):
        if appender.statistics().spill_blocked:
            break
        await asyncio.sleep(0.02)
    assert appender.statistics().spill_blocked
    await asyncio.sleep(0.2)
    assert not producer.done()  # memory and queue full: the producer waits
    db.up = True
    await asyncio.wait_for(producer, 10)
    await asyncio.wait_for(appender.flush(), 10)
    appender.stop()
    await asyncio.wait_for(task, 5)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]
    assert not appender.statistics().spill_blocked


async def test_an_event_the_database_refuses_is_kept_aside_and_the_rest_commit(
    running: Callable[..., Appender], conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    appender = running()
    stranger = balance_event(uuid.uuid4(), 7)  # no such meter in meter_registry
    events: list[Event] = [balance_event(meters[0], i) for i in range(10)]
    await appender.append_many([*events[:5], stranger, *events[5:]])
    await asyncio.wait_for(appender.flush(), 10)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]
    rejected = await conn.fetchrow("SELECT idempotency_key, error FROM flowsd.rejected_event")
    assert rejected is not None
    assert rejected["idempotency_key"] == stranger.idempotency_key()
    assert "foreign key" in rejected["error"]


async def test_the_log_line_of_a_refused_event_names_the_meter_by_serial(
    running: Callable[..., Appender], conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    # A registered meter whose event the database refuses on its own merits (a CHECK).
    refused = balance_event(meters[1], 3)
    await conn.execute(
        "ALTER TABLE flows.meter_event_log ADD CONSTRAINT refuse_one "
        f"CHECK (idempotency_key <> '{refused.idempotency_key()}')"
    )
    appender = running()
    with capture_logs() as logs:
        await appender.append_many([balance_event(meters[0], 1), refused])
        await asyncio.wait_for(appender.flush(), 10)
    (line,) = [e for e in logs if e["event"] == "event rejected by the database"]
    serial = await conn.fetchval("SELECT serial FROM flows.meter_registry WHERE id = $1", meters[1])
    assert (line["meter_serial"], line["meter_id"]) == (serial, str(meters[1]))


async def test_refused_events_in_a_large_batch_are_found_by_halving(
    running: Callable[..., Appender], conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    appender = running(queue_size=1000, batch_max=400, flush_interval_seconds=0.2)
    received = appender.subscribe()
    strangers = [balance_event(uuid.uuid4(), n) for n in (7, 8, 9)]
    events: list[Event] = [balance_event(meters[n % 4], n) for n in range(300)]
    await appender.append_many([*events[:10], strangers[0], *events[10:200], *strangers[1:]])
    await appender.append_many(events[200:])
    await asyncio.wait_for(appender.flush(), 20)
    assert await stored_keys(conn) == [e.idempotency_key() for e in events]
    rejected = await conn.fetch("SELECT idempotency_key FROM flowsd.rejected_event")
    assert {r[0] for r in rejected} == {e.idempotency_key() for e in strangers}
    published = []
    while (batch := received.get_nowait()) is not None:
        published += [r.idempotency_key for r in batch.events]
    assert published == [e.idempotency_key() for e in events]
    appends = await conn.fetchval("SELECT count(DISTINCT recorded_at) FROM flows.meter_event_log")
    assert appends < 40


async def test_a_slow_subscriber_misses_batches_and_can_tell(
    running: Callable[..., Appender], meters: list[uuid.UUID]
) -> None:
    appender = running(subscriber_max_batches=1, batch_max=5)
    subscription = appender.subscribe()
    for i in range(4):
        await appender.append_many([balance_event(meters[0], 10 * i + j) for j in range(5)])
        await asyncio.wait_for(appender.flush(), 5)
    first = subscription.get_nowait()
    assert first is not None
    assert first.after_position == 0
    assert subscription.get_nowait() is None
    assert subscription.missed
    assert appender.statistics().subscriber_dropped_batches == 3


async def test_from_config_spills_under_the_state_directory(
    db: Database, tmp_path: Path, meters: list[uuid.UUID]
) -> None:
    config = msgspec.toml.decode(
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'.encode(), type=Config
    )
    db.up = False
    appender = Appender.from_config(config, db.connect)
    task = asyncio.create_task(appender.run())
    await appender.append(balance_event(meters[0], 1))
    appender.stop()
    await asyncio.wait_for(task, 5)
    assert spilled_count(tmp_path / "state" / "spill") == 1


async def test_two_appenders_cannot_share_a_spill_directory(
    db: Database, tmp_path: Path, meters: list[uuid.UUID]
) -> None:
    first = make_appender(db, tmp_path / "spill")
    task = asyncio.create_task(first.run())
    # A committed event means the first appender has claimed the directory.
    await first.append(balance_event(meters[0], 1))
    await asyncio.wait_for(first.flush(), 10)
    with pytest.raises(SpillDirectoryInUseError):
        await asyncio.wait_for(make_appender(db, tmp_path / "spill").run(), 10)
    first.stop()
    await asyncio.wait_for(task, 5)
