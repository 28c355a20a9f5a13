"""Appending batches: order, idempotency, serialisation with other writers, NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from flowsd.events.reader import (
    EventFilter,
    head_position,
    iter_batches,
    listen_for_appends,
    read_events,
)
from flowsd.events.store import APPEND_LOCK_KEY, append_batch
from flowsd.events.types import BalanceRead, MeterLogEntry, UnknownBody, idempotency_key
from tests.events.helpers import balance_event, native_event, register_event


async def test_batch_is_stored_in_order_and_reads_back_equal(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    events = [balance_event(meters[i % 4], i) for i in range(50)]
    events += [register_event(meters[0], 7, "A"), register_event(meters[0], 7, "B")]
    events.append(native_event(meters[1], 3, emlite_type=48, event_set=4))
    result = await append_batch(conn, events)
    assert result.after_position == 0
    assert result.duplicates == 0
    assert [r.position for r in result.events] == list(range(1, len(events) + 1))
    assert result.through_position == len(events)
    stored = await read_events(conn, 0, 1000)
    assert stored == list(result.events)
    assert [(s.meter_id, s.observed_at, s.body) for s in stored] == [
        (e.meter_id, e.observed_at, e.body) for e in events
    ]
    assert [s.idempotency_key for s in stored] == [e.idempotency_key() for e in events]


async def test_re_appending_a_batch_adds_nothing(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    events = [balance_event(meters[0], i) for i in range(20)]
    first = await append_batch(conn, events)
    again = await append_batch(conn, events + events[:5])
    assert again.events == ()
    assert again.duplicates == 25
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 20
    assert await head_position(conn) == first.through_position


async def test_duplicates_inside_one_batch_are_stored_once(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    event = balance_event(meters[0], 1)
    result = await append_batch(conn, [event, event, balance_event(meters[0], 2), event])
    assert len(result.events) == 2
    assert result.duplicates == 2


async def test_meter_native_entry_columns_keep_production_meaning(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    event = native_event(meters[0], 60, emlite_type=48, event_set=4)
    await append_batch(conn, [event])
    row = await conn.fetchrow(
        "SELECT e.meter_id, e.timestamp, e.event_type, e.event_set, e.payload, t.name "
        "FROM flows.meter_event_log e JOIN flows.meter_event_log_type t ON t.id = e.event_type"
    )
    assert row is not None
    assert tuple(row) == (meters[0], event.observed_at, 48, 4, None, "CREDIT_TOKEN_APPLIED")


async def test_sql_key_formula_matches_python_for_meter_events(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """A writer that knows nothing of keys (psql, the old syncer) gets the same key."""
    event = native_event(meters[2], 99, emlite_type=34, event_set=7)
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set) '
        "VALUES ($1, $2, 34, 7)",
        meters[2],
        event.observed_at,
    )
    result = await append_batch(conn, [event])
    assert result.duplicates == 1
    assert await conn.fetchval("SELECT idempotency_key FROM flows.meter_event_log") == (
        event.idempotency_key()
    )


async def test_sql_and_python_key_formulas_agree(conn: asyncpg.Connection) -> None:
    meter = uuid.UUID("6a1f0c8e-59d3-4f57-9a57-0f3c2d1b9e11")
    moments = [
        datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC),
        datetime(2025, 7, 1, 12, 0, 0, 1, tzinfo=UTC),
    ]
    for moment in moments:
        for type_id, discriminator in ((33, "4"), (1006, "B"), (1001, "")):
            in_sql = await conn.fetchval(
                "SELECT flowsd.event_idempotency_key($1, $2, $3, $4)",
                meter,
                type_id,
                moment,
                discriminator,
            )
            assert in_sql == idempotency_key(meter, type_id, moment, discriminator)


async def test_keys_of_later_observations_sort_later() -> None:
    meter = uuid.uuid4()
    keys = [balance_event(meter, n * 3600).idempotency_key() for n in range(50)]
    assert [k.bytes for k in keys] == sorted(k.bytes for k in keys)


async def test_flowsd_payload_is_readable_from_sql(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    await append_batch(conn, [balance_event(meters[0], 1234)])
    balance = await conn.fetchval(
        "SELECT (payload->>'balance_gbp')::numeric FROM flows.meter_event_log e "
        "JOIN flows.meter_event_log_type t ON t.id = e.event_type WHERE t.name = 'BALANCE_READ'"
    )
    assert str(balance) == "12.34"


async def test_unknown_stored_type_reads_as_unknown_body(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, payload) '
        """VALUES ($1, now(), 1999, '{"type": "future"}')""",
        meters[0],
    )
    (stored,) = await read_events(conn, 0)
    assert isinstance(stored.body, UnknownBody)
    assert stored.body.type_id == 1999


async def test_meter_log_entry_from_legacy_row_reads_back(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set) '
        "VALUES ($1, now(), 38, 4)",
        meters[0],
    )
    (stored,) = await read_events(conn, 0)
    assert stored.body == MeterLogEntry(emlite_type_id=38, event_set=4)


async def test_other_writers_wait_for_an_open_append(
    migrated_url: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """A plain INSERT issued while an append holds the lock gets a later position."""
    other = await asyncpg.connect(migrated_url)
    try:
        async with conn.transaction():
            await conn.fetchval("SELECT flowsd.begin_event_append()")
            insert = asyncio.create_task(
                other.execute(
                    'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, '
                    "event_set) VALUES ($1, now(), 33, 1)",
                    meters[0],
                )
            )
            await asyncio.sleep(0.3)
            assert not insert.done()
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND ((classid::bigint << 32) | objid::bigint) = $1",
                APPEND_LOCK_KEY,
            )
            assert waiting == 1
            await append_batch_in_open_transaction(conn, meters[1])
        await asyncio.wait_for(insert, 5)
    finally:
        await other.close()
    rows = await conn.fetch("SELECT position, event_type FROM flows.meter_event_log ORDER BY 1")
    assert [r["event_type"] for r in rows] == [1001, 33]


async def append_batch_in_open_transaction(conn: asyncpg.Connection, meter: uuid.UUID) -> None:
    event = balance_event(meter, 5)
    await conn.execute(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, payload, '
        "idempotency_key) VALUES ($1, $2, 1001, '{}', $3)",
        meter,
        event.observed_at,
        event.idempotency_key(),
    )


async def test_commit_notifies_other_processes_once_per_batch(
    migrated_url: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    listener = await asyncpg.connect(migrated_url)
    received: asyncio.Queue[int] = asyncio.Queue()
    try:
        await listen_for_appends(listener, received.put_nowait)
        result = await append_batch(conn, [balance_event(meters[0], i) for i in range(10)])
        assert await asyncio.wait_for(received.get(), 5) == result.through_position
        await append_batch(conn, [balance_event(meters[0], 0)])  # only a duplicate
        await asyncio.sleep(0.2)
        assert received.empty()
    finally:
        await listener.close()


async def test_iter_batches_pages_to_the_head_or_a_limit(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    await append_batch(conn, [balance_event(meters[0], i) for i in range(25)])
    pages = [page async for page in iter_batches(conn, 0, batch_size=10)]
    assert [len(p) for p in pages] == [10, 10, 5]
    limited = [page async for page in iter_batches(conn, 3, batch_size=10, until=15)]
    assert [e.position for p in limited for e in p] == list(range(4, 16))


async def test_filtered_reads_take_one_meter_and_some_types(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    events = [balance_event(meters[i % 2], i) for i in range(20)]
    events += [register_event(meters[0], 30, "A"), native_event(meters[0], 31, 48, 4)]
    events.append(native_event(meters[1], 32, 48, 4))
    result = await append_batch(conn, events)
    by_position = {r.position: r for r in result.events}
    mine = EventFilter(meter_id=meters[0])
    read = [e async for page in iter_batches(conn, 0, batch_size=4, where=mine) for e in page]
    assert [e.position for e in read] == [
        p for p, r in by_position.items() if r.meter_id == meters[0]
    ]
    balances = EventFilter(meter_id=meters[0], type_ids=[BalanceRead.TYPE_ID])
    assert {type(e.body) for e in await read_events(conn, 0, 100, where=balances)} == {BalanceRead}
    natives = EventFilter(meter_id=meters[0], type_ids=[], meter_log_entries=True)
    (native,) = await read_events(conn, 0, 100, where=natives)
    assert isinstance(native.body, MeterLogEntry) and native.meter_id == meters[0]
    assert await read_events(conn, 0, 100, until=5, where=mine) == [
        e for e in read if e.position <= 5
    ]


async def test_a_meter_with_events_cannot_leave_the_registry(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """The meters table that replaced the log's row foreign key keeps RESTRICT."""
    await append_batch(conn, [balance_event(meters[0], 1), balance_event(meters[0], 2)])
    await conn.execute("DELETE FROM flows.meter_shadows WHERE id = ANY($1::uuid[])", meters[:2])
    # RESTRICT: 23001 on PostgreSQL 18, 23503 on 15 for a deferrable key; refused either way.
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="event_log_meter"):
        await conn.execute("DELETE FROM flows.meter_registry WHERE id = $1", meters[0])
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="event_log_meter"):
        await conn.execute(
            "UPDATE flows.meter_registry SET id = gen_random_uuid() WHERE id = $1", meters[0]
        )
    # A meter without events still can.
    await conn.execute("DELETE FROM flows.meter_registry WHERE id = $1", meters[1])
    noted = await conn.fetch("SELECT meter_id FROM flowsd.event_log_meter")
    assert [row["meter_id"] for row in noted] == [meters[0]]
