"""Both ways a batch reaches the log (key lookups, a part of the batch at a time, and a binary
COPY, or one INSERT from unnest for small batches) give the same result, including the rare
paths: an enclosing transaction, positions taken outside the batch, a key stored behind the
lock, an unknown meter, the writer role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from flowsd.events import store
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.events.types import Event
from tests.events.helpers import balance_event, native_event, register_event


@pytest.fixture(params=["copied", "copied in parts", "unnested"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Force every batch through one path, whatever its size ("copied in parts": keyed and
    looked up 3 events at a time, so repeats and stored keys fall in other parts)."""
    monkeypatch.setattr(store, "_COPY_MIN_EVENTS", 10**9 if request.param == "unnested" else 1)
    if request.param == "copied in parts":
        monkeypatch.setattr(store, "_PART_EVENTS", 3)
    yield str(request.param)


def _mixed(meters: list[uuid.UUID], start: int, count: int) -> list[Event]:
    events: list[Event] = []
    for n in range(start, start + count):
        meter = meters[n % len(meters)]
        if n % 3 == 0:
            events.append(register_event(meter, n, "B"))
        elif n % 3 == 1:
            events.append(native_event(meter, n, emlite_type=33, event_set=n % 7))
        else:
            events.append(balance_event(meter, n))
    return events


async def test_positions_follow_batch_order_and_skip_stored_and_repeated_keys(
    path: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    old = _mixed(meters, 0, 40)
    first = await append_batch(conn, old[::2])
    new = _mixed(meters, 100, 30)
    # New events interleaved with stored ones and with repeats inside the batch.
    batch = [e for pair in zip(new, old, strict=False) for e in pair] + new[:7] + old[1::2]
    result = await append_batch(conn, batch)
    seen = {e.idempotency_key() for e in old[::2]}
    expected = []
    for event in batch:
        if event.idempotency_key() not in seen:
            seen.add(event.idempotency_key())
            expected.append(event)
    assert len(expected) == len(new) + len(old[1::2])
    assert result.after_position == first.through_position
    assert [r.position for r in result.events] == list(
        range(result.after_position + 1, result.after_position + 1 + len(expected))
    )
    assert result.through_position == result.events[-1].position
    assert [r.idempotency_key for r in result.events] == [e.idempotency_key() for e in expected]
    assert result.duplicates == len(batch) - len(expected)
    assert len({r.recorded_at for r in result.events}) == 1
    stored = await read_events(conn, first.through_position, 1000)
    assert stored == list(result.events)
    again = await append_batch(conn, batch)
    assert again.events == ()
    assert again.duplicates == len(batch)


async def test_appends_inside_an_enclosing_transaction_stage_only_their_own_batch(
    path: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    async with conn.transaction():
        first = await append_batch(conn, [balance_event(meters[0], n) for n in range(10)])
        second = await append_batch(conn, [balance_event(meters[1], n) for n in range(5)])
    assert len(first.events) == 10
    assert len(second.events) == 5
    assert second.after_position == first.through_position
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 15


async def test_positions_taken_outside_the_batch_are_read_back(
    path: str, conn: asyncpg.Connection, meters: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone calling nextval by hand: the batch's positions are no longer contiguous."""
    stealing = store._BEGIN.replace(
        "now() AS recorded_at",
        "now() AS recorded_at, nextval('flows.meter_event_log_position_seq') AS stolen",
    )
    assert stealing != store._BEGIN
    monkeypatch.setattr(store, "_BEGIN", stealing)
    events = [balance_event(meters[n % 4], n) for n in range(12)]
    result = await append_batch(conn, events)
    assert [r.position for r in result.events] == list(range(2, 14))
    assert [r.idempotency_key for r in result.events] == [e.idempotency_key() for e in events]
    assert await read_events(conn, 0) == list(result.events)


async def test_a_key_stored_behind_the_lock_is_a_duplicate_not_an_error(
    path: str, conn: asyncpg.Connection, meters: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the stored-key filter misses a key (a writer that bypassed the append lock), the
    key claim in flowsd.event_key refuses it and the batch is tried again, keys looked up
    again."""
    stored = [balance_event(meters[0], n) for n in range(5)]
    await append_batch(conn, stored)
    # The first attempt sees no stored keys at all.
    blind_insert = store._INSERT.replace("LIMIT 1) AS hit", "LIMIT 0) AS hit")
    blind_lookup = store._STORED_KEYS.replace("WHERE EXISTS", "WHERE false AND EXISTS")
    blind_any = store._STORED_KEYS_ANY.replace(
        "WHERE idempotency_key", "WHERE false AND idempotency_key"
    )
    assert blind_insert != store._INSERT
    assert blind_lookup != store._STORED_KEYS
    assert blind_any != store._STORED_KEYS_ANY
    seeing = (store._INSERT, store._STORED_KEYS, store._STORED_KEYS_ANY)
    monkeypatch.setattr(store, "_INSERT", blind_insert)
    monkeypatch.setattr(store, "_STORED_KEYS", blind_lookup)
    monkeypatch.setattr(store, "_STORED_KEYS_ANY", blind_any)
    attempt = store._append
    attempts: list[bool] = []

    async def once_blind(*args: Any, **kwargs: Any) -> store.AppendResult:
        if attempts:
            monkeypatch.setattr(store, "_INSERT", seeing[0])
            monkeypatch.setattr(store, "_STORED_KEYS", seeing[1])
            monkeypatch.setattr(store, "_STORED_KEYS_ANY", seeing[2])
        attempts.append(True)
        return await attempt(*args, **kwargs)

    monkeypatch.setattr(store, "_append", once_blind)
    fresh = [balance_event(meters[1], n) for n in range(4)]
    result = await append_batch(conn, [*stored, *fresh])
    assert len(attempts) == 2
    assert [r.idempotency_key for r in result.events] == [e.idempotency_key() for e in fresh]
    assert result.duplicates == 5
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 9
    assert (await read_events(conn, 0))[5:] == list(result.events)


async def test_an_unknown_meter_fails_the_whole_batch(
    path: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """The foreign key still refuses the batch (the appender then sets the event aside)."""
    events = [balance_event(meters[0], n) for n in range(10)]
    events.insert(4, balance_event(uuid.uuid4(), 99))
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await append_batch(conn, events)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 0
    result = await append_batch(conn, events[:4] + events[5:])
    assert len(result.events) == 10


async def test_the_writer_role_appends_on_both_paths(
    path: str, migrated_url: str, conn: asyncpg.Connection, meters: list[uuid.UUID]
) -> None:
    """flowsd_writer may append (the trigger that notes the meters runs with its rights)."""
    role = f"flowsd_writer_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE flowsd_writer")
    try:
        writer = await asyncpg.connect(migrated_url, user=role)
        try:
            result = await append_batch(writer, [balance_event(meters[0], n) for n in range(20)])
            assert [r.position for r in result.events] == list(range(1, 21))
        finally:
            await writer.close()
    finally:
        await conn.execute(f"DROP ROLE {role}")
    noted = await conn.fetch("SELECT meter_id FROM flowsd.event_log_meter")
    assert [row["meter_id"] for row in noted] == [meters[0]]


async def test_an_append_timed_out_while_its_copy_is_sending_ends_cleanly(
    conn: asyncpg.Connection, meters: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout that lands while the COPY's data is still being handed over is reported as
    the timeout, nothing is stored, and the connection takes the next append: the COPY is
    cancelled and waited for before the transaction rolls back (a ROLLBACK sent beside a
    running COPY fails with "another operation is in progress")."""
    monkeypatch.setattr(store, "_COPY_MIN_EVENTS", 1)
    chunks = store._Copy._data

    async def slow_data(self: Any) -> Any:
        async for chunk in chunks(self):
            yield chunk
            await asyncio.sleep(5)

    monkeypatch.setattr(store._Copy, "_data", slow_data)
    batch = _mixed(meters, 0, 20)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(append_batch(conn, batch), 0.5)
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 0
    monkeypatch.setattr(store._Copy, "_data", chunks)
    result = await asyncio.wait_for(append_batch(conn, batch), 10)
    assert len(result.events) == len(batch)


async def test_an_append_timed_out_while_looking_keys_up_ends_cleanly(
    conn: asyncpg.Connection, meters: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout that lands while the server looks keys up is reported as the timeout and
    the connection takes the next append: the lookup is cancelled and waited for before the
    transaction rolls back."""
    monkeypatch.setattr(store, "_COPY_MIN_EVENTS", 1)
    for name in ("_STORED_KEYS_ANY", "_STORED_KEYS"):
        statement = getattr(store, name)
        monkeypatch.setattr(store, name, statement.replace("SELECT", "SELECT pg_sleep(5),", 1))
    batch = _mixed(meters, 0, 20)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(append_batch(conn, batch), 0.5)
    monkeypatch.undo()
    assert await conn.fetchval("SELECT count(*) FROM flows.meter_event_log") == 0
    result = await asyncio.wait_for(append_batch(conn, batch), 10)
    assert len(result.events) == len(batch)
