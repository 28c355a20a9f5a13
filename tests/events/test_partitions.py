"""The partitioned event log (migration 115): months ahead, boundaries, the default partition,
idempotency across partitions, and retention by detaching old partitions."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest

from flowsd.events.codec import to_staged_rows
from flowsd.events.reader import head_position, read_events
from flowsd.events.store import append_batch
from flowsd.events.types import Event
from tests.events.helpers import balance_event


async def insert_by_hand(conn: asyncpg.Connection, event: Event, recorded_at: datetime) -> int:
    """The event as a writer that names recorded_at would store it (psql, an import)."""
    (row,) = to_staged_rows([event])
    position: int = await conn.fetchval(
        'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set, '
        "read_at, payload, idempotency_key, recorded_at) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING position",
        *row[1:],
        recorded_at,
    )
    return position


async def partition_of(conn: asyncpg.Connection, position: int) -> str:
    name: str = await conn.fetchval(
        "SELECT tableoid::regclass::text FROM flows.meter_event_log WHERE position = $1",
        position,
    )
    return name


async def ranges(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT name, lower_bound, upper_bound FROM flowsd.event_log_partition "
        "WHERE detached_at IS NULL ORDER BY upper_bound"
    )


async def test_months_ahead_are_contiguous_and_rows_on_a_boundary_go_to_the_later_month(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    kind = "SELECT relkind::text FROM pg_class WHERE oid = 'flows.meter_event_log'::regclass"
    assert await conn.fetchval(kind) == "p"
    covered = await ranges(conn)
    assert covered[0]["lower_bound"] is None  # the rows from before the migration's month
    assert covered[-1]["upper_bound"] > await conn.fetchval("SELECT now() + interval '25 days'")
    made = await conn.fetchval(
        "SELECT flowsd.ensure_event_log_partitions(now() + interval '80 days')"
    )
    assert made >= 1
    covered = await ranges(conn)
    assert covered[-1]["upper_bound"] > await conn.fetchval("SELECT now() + interval '80 days'")
    for earlier, later in itertools.pairwise(covered):
        assert later["lower_bound"] == earlier["upper_bound"]
        assert later["lower_bound"].day == 1 and later["lower_bound"].utcoffset() == timedelta(0)
    assert await conn.fetchval(
        "SELECT flowsd.ensure_event_log_partitions(now() + interval '80 days')"
    ) == 0  # fmt: skip
    boundary = covered[-1]["lower_bound"]
    on = await insert_by_hand(conn, balance_event(meters[0], 1), boundary)
    before = await insert_by_hand(
        conn, balance_event(meters[0], 2), boundary - timedelta(microseconds=1)
    )
    assert await partition_of(conn, on) == f"flowsd.{covered[-1]['name']}"
    assert await partition_of(conn, before) == f"flowsd.{covered[-2]['name']}"


async def test_an_append_creates_the_partitions_it_lacks(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """No housekeeping needed: begin_event_append() adds months when fewer than 25 days are
    covered, and the append lands in its month, not in the default partition."""
    for part in (await ranges(conn))[1:]:
        await conn.execute(f"ALTER TABLE flows.meter_event_log DETACH PARTITION flowsd.{part[0]}")
        await conn.execute(f"DROP TABLE flowsd.{part[0]}")
    await conn.execute("DELETE FROM flowsd.event_log_partition WHERE lower_bound IS NOT NULL")
    result = await append_batch(conn, [balance_event(meters[0], n) for n in range(3)])
    assert len(result.events) == 3
    month = await conn.fetchval("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")
    assert await partition_of(conn, result.events[0].position) == (
        f"flowsd.meter_event_log_{month}"
    )
    covered = await ranges(conn)
    assert covered[-1]["upper_bound"] > await conn.fetchval("SELECT now() + interval '25 days'")


async def test_rows_in_the_default_partition_move_into_their_month_when_it_is_created(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    horizon = (await ranges(conn))[-1]["upper_bound"]
    event = balance_event(meters[0], 7)
    late = await insert_by_hand(conn, event, horizon + timedelta(days=3))
    assert await partition_of(conn, late) == "flowsd.meter_event_log_default"
    await conn.execute("SELECT flowsd.ensure_event_log_partitions($1)", horizon + timedelta(days=3))
    assert (await partition_of(conn, late)).startswith("flowsd.meter_event_log_2")
    assert await conn.fetchval("SELECT count(*) FROM flowsd.meter_event_log_default") == 0
    (read,) = await read_events(conn, 0)
    assert read.position == late and read.idempotency_key == event.idempotency_key()
    again = await append_batch(conn, [event])
    assert again.duplicates == 1


async def test_a_key_is_unique_across_partitions(
    conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    old = balance_event(meters[0], 1)
    first = (await ranges(conn))[0]
    position = await insert_by_hand(conn, old, first["upper_bound"] - timedelta(days=40))
    assert await partition_of(conn, position) == f"flowsd.{first['name']}"
    result = await append_batch(conn, [old, balance_event(meters[0], 2)])
    assert result.duplicates == 1 and len(result.events) == 1
    assert await partition_of(conn, result.events[0].position) != f"flowsd.{first['name']}"
    with pytest.raises(asyncpg.UniqueViolationError):
        await insert_by_hand(conn, old, await conn.fetchval("SELECT now()"))
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 2


@pytest.mark.parametrize("forget_keys", [False, True], ids=["keys kept", "keys forgotten"])
async def test_detaching_old_partitions_keeps_readers_and_appends(
    conn: asyncpg.Connection, meters: list[uuid.UUID], forget_keys: bool
) -> None:
    first = (await ranges(conn))[0]
    old = [balance_event(meters[0], n) for n in range(4)]
    for event in old:
        await insert_by_hand(conn, event, first["upper_bound"] - timedelta(days=40))
    recent = await append_batch(conn, [balance_event(meters[1], n) for n in range(5)])
    head = await head_position(conn)
    detached = await conn.fetch(
        "SELECT * FROM flowsd.detach_event_log_partitions($1, $2)",
        first["upper_bound"],
        forget_keys,
    )
    assert [r[0] for r in detached] == [f"flowsd.{first['name']}"]
    assert (await ranges(conn))[0]["lower_bound"] == first["upper_bound"]
    # The table stays, to be archived; the log reads on without it.
    assert await conn.fetchval(f"SELECT count(*) FROM flowsd.{first['name']}") == 4
    assert await read_events(conn, 0) == list(recent.events)
    assert await head_position(conn) == head
    # Kept keys: an old observation read again is still a duplicate; forgotten: stored again.
    again = await append_batch(conn, [old[0], balance_event(meters[2], 1)])
    assert again.duplicates == (1 if not forget_keys else 0)
    assert again.events[0].position == head + 1
