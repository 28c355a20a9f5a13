"""Property: concurrent appenders and readers; every committed event is read once, in order.

Writers append random batches, some through the appender's statement path and some as plain
INSERTs that know nothing of the lock, with random delays inside their transactions and random
rollbacks. Readers poll ``position > cursor`` with random page sizes the whole time, and a
follower tails one meter's events (:func:`flowsd.events.reader.follow`, as ``flowsd events
--follow`` does). Without
serialised appends a reader would move its cursor past a position that a slower transaction
commits later, and never see that event; the property fails then (checked by hand by dropping
the ``meter_event_log_serialize_appends`` trigger).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsd.config import AppenderConfig
from flowsd.events.appender import Appender
from flowsd.events.codec import payload_json
from flowsd.events.reader import EventFilter, follow, head_position, read_events
from flowsd.events.store import append_batch
from flowsd.events.types import Event
from tests.events.helpers import balance_event, create_meters


@dataclass(frozen=True)
class Step:
    writer: int
    size: int
    rollback: bool
    delay: float
    raw_insert: bool


steps = st.builds(
    Step,
    writer=st.integers(0, 2),
    size=st.integers(1, 25),
    rollback=st.booleans(),
    delay=st.sampled_from([0.0, 0.0, 0.001, 0.005, 0.02]),
    raw_insert=st.booleans(),
)


@dataclass
class Outcome:
    committed: set[uuid.UUID] = field(default_factory=set)
    rolled_back: set[uuid.UUID] = field(default_factory=set)
    by_meter: dict[uuid.UUID, set[uuid.UUID]] = field(default_factory=dict)


class _Rollback(Exception):  # noqa: N818 (control flow)
    pass


async def _raw_insert(conn: asyncpg.Connection, events: list[Event]) -> None:
    """An append that bypasses flowsd's functions: only the table's trigger serialises it."""
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, payload, '
        "idempotency_key) SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], "
        "$4::text[]::jsonb[], $5::uuid[])",
        [e.meter_id for e in events],
        [e.observed_at for e in events],
        [e.type_id for e in events],
        [payload_json(e.body) for e in events],
        [e.idempotency_key() for e in events],
    )


async def _write(
    url: str, plan: list[Step], meter: uuid.UUID, first_n: int, outcome: Outcome
) -> None:
    conn = await asyncpg.connect(url)
    n = first_n
    try:
        for step in plan:
            events = [balance_event(meter, n + i) for i in range(step.size)]
            n += step.size
            keys = {e.idempotency_key() for e in events}
            try:
                if step.raw_insert or step.rollback:
                    async with conn.transaction():
                        if step.raw_insert:
                            await _raw_insert(conn, events)
                        else:
                            await conn.fetchval("SELECT flowsd.begin_event_append()")
                            await _raw_insert(conn, events)
                        await asyncio.sleep(step.delay)
                        if step.rollback:
                            raise _Rollback
                else:
                    await asyncio.sleep(step.delay)
                    await append_batch(conn, events)
            except _Rollback:
                outcome.rolled_back |= keys
                continue
            outcome.committed |= keys
            outcome.by_meter.setdefault(meter, set()).update(keys)
    finally:
        await conn.close()


async def _read(
    url: str, start: int, done: asyncio.Event, seed: int
) -> list[tuple[int, uuid.UUID]]:
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    seen: list[tuple[int, uuid.UUID]] = []
    cursor = start
    try:
        for _ in range(20_000):  # bounded; ends far sooner
            finished = done.is_set()
            batch = await read_events(conn, cursor, rng.choice([1, 3, 10, 100]))
            seen += [(e.position, e.idempotency_key) for e in batch]
            if batch:
                cursor = batch[-1].position
            elif finished:
                return seen
            else:
                await asyncio.sleep(rng.choice([0, 0.001, 0.003]))
        raise AssertionError("reader did not finish")
    finally:
        await conn.close()


async def _follow(
    url: str, start: int, meter: uuid.UUID, done: asyncio.Event, seed: int
) -> list[tuple[int, uuid.UUID]]:
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    seen: list[tuple[int, uuid.UUID]] = []
    rounds = 0
    last_round = False

    async def wait() -> bool:
        nonlocal rounds, last_round
        rounds += 1
        if last_round or rounds > 20_000:  # bounded; ends far sooner
            return False
        # Set before the next round reads the head: that round sees every commit.
        last_round = done.is_set()
        await asyncio.sleep(rng.choice([0, 0.001, 0.003]))
        return True

    try:
        where = EventFilter(meter_id=meter)
        size = rng.choice([1, 3, 10, 100])
        async for batch in follow(conn, start, wait=wait, where=where, batch_size=size):
            seen += [(e.position, e.idempotency_key) for e in batch]
        assert last_round, "follower did not finish"
        return seen
    finally:
        await conn.close()


async def _scenario(url: str, plan: list[Step], seed: int) -> None:
    setup = await asyncpg.connect(url)
    try:
        meters = await create_meters(setup, 2)
        start = await head_position(setup)
    finally:
        await setup.close()
    outcome = Outcome()
    done = asyncio.Event()
    readers = [asyncio.create_task(_read(url, start, done, seed + r)) for r in range(2)]
    follower = asyncio.create_task(_follow(url, start, meters[0], done, seed))
    writers = [
        _write(url, [s for s in plan if s.writer == w], meters[w % 2], 100_000 * w, outcome)
        for w in range(3)
    ]
    await asyncio.wait_for(asyncio.gather(*writers), 60)
    done.set()
    views = await asyncio.wait_for(asyncio.gather(*readers), 60)
    followed = await asyncio.wait_for(follower, 60)
    positions = [p for p, _ in followed]
    assert positions == sorted(set(positions)), "the follower saw positions out of order or twice"
    assert {k for _, k in followed} == outcome.by_meter.get(meters[0], set()), (
        "the follower skipped a committed event of its meter"
    )
    for seen in views:
        positions = [p for p, _ in seen]
        assert positions == sorted(set(positions)), "a reader saw positions out of order or twice"
        keys = [k for _, k in seen]
        assert len(keys) == len(set(keys))
        assert set(keys) == outcome.committed, "a reader skipped a committed event"
        assert not set(keys) & outcome.rolled_back


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(steps, min_size=3, max_size=24), seed=st.integers(0, 2**16))
def test_readers_never_skip_or_repeat_committed_events(
    migrated_url: str, plan: list[Step], seed: int
) -> None:
    asyncio.run(_scenario(migrated_url, plan, seed))


async def _appenders_scenario(url: str, counts: list[int], batch_max: int, seed: int) -> None:
    setup = await asyncpg.connect(url)
    try:
        meters = await create_meters(setup, len(counts))
        start = await head_position(setup)
    finally:
        await setup.close()

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    config = AppenderConfig(batch_max=batch_max, flush_interval_seconds=0.002, queue_size=50)
    with tempfile.TemporaryDirectory() as spill:
        appenders = [
            Appender(connect, config=config, spill_directory=Path(spill) / str(i))
            for i in range(len(counts))
        ]
        tasks = [asyncio.create_task(a.run()) for a in appenders]
        done = asyncio.Event()
        readers = [asyncio.create_task(_read(url, start, done, seed + r)) for r in range(2)]
        events = [
            [balance_event(meter, n) for n in range(count)]
            for meter, count in zip(meters, counts, strict=True)
        ]
        await asyncio.gather(*(a.append_many(e) for a, e in zip(appenders, events, strict=True)))
        await asyncio.wait_for(asyncio.gather(*(a.flush() for a in appenders)), 30)
        done.set()
        views = await asyncio.wait_for(asyncio.gather(*readers), 30)
        for appender in appenders:
            appender.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    expected = {e.idempotency_key() for stream in events for e in stream}
    for seen in views:
        positions = [p for p, _ in seen]
        assert positions == sorted(set(positions))
        assert {k for _, k in seen} == expected
        assert len(seen) == len(expected)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    counts=st.lists(st.integers(1, 300), min_size=2, max_size=4),
    batch_max=st.sampled_from([1, 7, 50, 500]),
    seed=st.integers(0, 2**16),
)
def test_several_appender_tasks_and_readers(
    migrated_url: str, counts: list[int], batch_max: int, seed: int
) -> None:
    asyncio.run(_appenders_scenario(migrated_url, counts, batch_max, seed))
