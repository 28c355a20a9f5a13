"""The command table's claim is fenced by the lease epochs (flowsd.control.table.claim_rows):
only rows of meters whose lease row names the claiming daemon, unexpired, at the epoch it
holds are claimed; the others are left pending and reported with their holder (or as
lapsed), and a claim is ordered with a change of hands in flight. Appends are fenced the same
way."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import pytest

from flowsd.control.table import Claim, claim_rows
from flowsd.events.store import APPEND_LOCK_KEY, append_batch
from tests.events.helpers import balance_event, create_meters

_LEASE = """
INSERT INTO flowsd.meter_lease (meter_id, daemon, epoch, expires_at)
VALUES ($1, $2, nextval('flowsd.meter_lease_epoch_seq'), now() + make_interval(secs => $3))
RETURNING epoch
"""
_MOVE = """
UPDATE flowsd.meter_lease SET daemon = $2, epoch = nextval('flowsd.meter_lease_epoch_seq')
WHERE meter_id = $1
"""


@pytest.fixture
def conn(migrated_conn: asyncpg.Connection) -> asyncpg.Connection:
    """Every test here wants a migrated database (not the empty one of tests/db/conftest.py)."""
    return migrated_conn


async def _pending(conn: asyncpg.Connection, meter_ids: list[uuid.UUID]) -> int:
    for meter_id in meter_ids:
        await conn.execute(
            "INSERT INTO flowsd.meter_command (idempotency_key, serial, kind) "
            "SELECT $1, serial, 'poll' FROM flows.meter_registry WHERE id = $2",
            str(uuid.uuid4()),
            meter_id,
        )
    return len(meter_ids)


async def test_only_meters_held_at_the_believed_epoch_are_claimed(
    conn: asyncpg.Connection,
) -> None:
    held_now, taken_over, taken_again, expired, free = await create_meters(conn, 5)
    believed = {
        held_now: await conn.fetchval(_LEASE, held_now, "a", 60.0),
        taken_over: await conn.fetchval(_LEASE, taken_over, "a", 60.0),
        taken_again: await conn.fetchval(_LEASE, taken_again, "a", 60.0),
        expired: await conn.fetchval(_LEASE, expired, "a", -1.0),
        free: await conn.fetchval(_LEASE, free, "a", 60.0),
    }
    # While "a" was paused: "b" took one meter, one went around and back to "a" under a new
    # epoch, one was handed back (nobody holds it).
    await conn.execute(_MOVE, taken_over, "b")
    await conn.execute(_MOVE, taken_again, "a")
    await conn.execute("UPDATE flowsd.meter_lease SET daemon = NULL WHERE meter_id = $1", free)
    meters = list(believed)
    await _pending(conn, meters)

    claim = await claim_rows(conn, meters, believed, instance="a", run_id=uuid.uuid4(), limit=10)
    assert [row.meter_id for row in claim.rows] == [held_now]
    assert claim.fenced == {taken_over: "b", taken_again: "a", free: None}
    assert claim.lapsed == [expired]  # still "a"'s, not renewed in time: not fenced
    statuses = await conn.fetch(
        "SELECT meter_id, status, claimed_by FROM flowsd.meter_command ORDER BY id"
    )
    assert [(r["status"], r["claimed_by"]) for r in statuses] == [("running", "a")] + [
        ("pending", None)
    ] * 4

    # The new holder claims its row; a daemon without leases claims whatever it is offered.
    current = await conn.fetchval(
        "SELECT epoch FROM flowsd.meter_lease WHERE meter_id = $1", taken_over
    )
    claim = await claim_rows(
        conn, [taken_over], {taken_over: current}, instance="b", run_id=uuid.uuid4(), limit=10
    )
    assert [row.meter_id for row in claim.rows] == [taken_over] and claim.fenced == {}
    claim = await claim_rows(conn, meters, None, instance="c", run_id=uuid.uuid4(), limit=10)
    assert {row.meter_id for row in claim.rows} == {taken_again, expired, free}
    assert claim.fenced == {}


async def test_a_claim_waits_for_a_change_of_hands_in_flight_and_sees_it(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    (meter,) = await create_meters(conn, 1)
    believed = {meter: await conn.fetchval(_LEASE, meter, "a", 60.0)}
    await _pending(conn, [meter])
    claims: list[Claim] = []

    async def claim() -> None:
        run_id = uuid.uuid4()
        claims.append(
            await claim_rows(conn, [meter], believed, instance="a", run_id=run_id, limit=1)
        )

    taker = await asyncpg.connect(migrated_url)
    try:
        change = taker.transaction()
        await change.start()
        # As Ownership._take does: the append lock, then the new holder and epoch.
        await taker.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
        await taker.execute(_MOVE, meter, "b")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                await anyio.sleep(0.5)
                assert claims == []  # queued behind the change of hands
                await change.commit()
    finally:
        await taker.close()
    assert claims == [Claim([], {meter: "b"})]
    assert await conn.fetchval("SELECT status FROM flowsd.meter_command") == "pending"


async def test_events_of_a_meter_whose_lease_moved_on_are_fenced(conn: asyncpg.Connection) -> None:
    """The append's own fence (flowsd.begin_fenced_event_append, under the append lock): a
    batch carrying a stale epoch for one meter stores the other meters' events only."""
    kept, moved, unleased = await create_meters(conn, 3)
    epochs = {
        kept: await conn.fetchval(_LEASE, kept, "a", 60.0),
        moved: await conn.fetchval(_LEASE, moved, "a", 60.0),
    }
    await conn.execute(_MOVE, moved, "b")
    # A meter without a lease row among the epochs is fenced too: nobody granted it.
    epochs[unleased] = 1
    batch = [balance_event(meter, n) for n, meter in enumerate((kept, moved, unleased, kept))]

    result = await append_batch(conn, batch, epochs=epochs)

    assert result.fenced == {moved, unleased} and result.fenced_events == 2
    stored = await conn.fetch("SELECT meter_id FROM flows.meter_event_log ORDER BY position")
    assert [row["meter_id"] for row in stored] == [kept, kept]
    # Without epochs (one daemon, no leases) nothing is fenced.
    assert (await append_batch(conn, [balance_event(moved, 9)])).fenced_events == 0
