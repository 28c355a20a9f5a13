"""Against PostgreSQL: a replay or verify from a projection snapshot equals one from position 0,
also once the log's partitions before the snapshot are detached."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsd.errors import UserError
from flowsd.events.checkpoints import read_checkpoint
from flowsd.events.codec import to_staged_rows
from flowsd.events.reader import read_events
from flowsd.events.store import append_batch
from flowsd.projections.projector import apply_batch
from flowsd.projections.replay import replay
from flowsd.projections.snapshot import newest_snapshot, take_snapshots
from flowsd.projections.verify import verify
from tests.projections.helpers import apply_appended
from tests.projections.strategies import event_sequences
from tests.projections.test_incremental_equals_replay import (
    PROJECTIONS,
    assert_every_table_projected,
    every_table_once,
    fresh_meters,
    snapshot,
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_a_replay_from_a_snapshot_equals_the_live_tables(
    conn: asyncpg.Connection, data: Any
) -> None:
    """Live tables equal a replay from position 0 (test_incremental_equals_replay); here a
    replay from a snapshot taken part-way (chained on the previous example's snapshots, which
    share the database) must give them too, and verify from it must find them equal."""
    meters = await fresh_meters(conn)
    events = data.draw(event_sequences(meters, max_size=40)) + every_table_once(meters[0])
    cut = data.draw(st.integers(0, len(events)))
    for part in (events[:cut], events[cut:]):
        await apply_appended(conn, await append_batch(conn, part), PROJECTIONS)
        if part is not events[cut:]:
            await take_snapshots(conn, PROJECTIONS)
    live = await snapshot(conn)
    verdicts = await verify(conn, PROJECTIONS, from_snapshot=True)
    assert [(v.projection, v.first) for v in verdicts if not v.equal] == []
    await replay(conn, PROJECTIONS, from_snapshot=True)
    assert await snapshot(conn) == live


async def test_after_detaching_the_log_before_a_snapshot_replay_and_verify_start_from_it(
    conn: asyncpg.Connection,
) -> None:
    meters = await fresh_meters(conn)
    first = await conn.fetchrow(
        "SELECT name, upper_bound FROM flowsd.event_log_partition "
        "WHERE detached_at IS NULL ORDER BY upper_bound LIMIT 1"
    )
    assert first is not None
    # A month-old history, recorded in the oldest partition, projected live.
    for row in to_staged_rows(every_table_once(meters[0])):
        await conn.execute(
            'INSERT INTO flows.meter_event_log (meter_id, "timestamp", event_type, event_set, '
            "read_at, payload, idempotency_key, recorded_at) "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
            *row[1:],
            first["upper_bound"] - timedelta(days=40),
        )
    old = await read_events(conn, 0)
    for projection in PROJECTIONS:
        await apply_batch(
            conn,
            projection,
            old,
            expected=await read_checkpoint(conn, projection.name),
            through=old[-1].position,
        )
    with pytest.raises(UserError, match="no snapshot"):
        await replay(conn, PROJECTIONS, from_snapshot=True)
    await take_snapshots(conn, PROJECTIONS)
    taken = await newest_snapshot(conn, PROJECTIONS[0].name)
    assert taken is not None and taken.position == old[-1].position
    recent = every_table_once(meters[1])
    await apply_appended(conn, await append_batch(conn, recent), PROJECTIONS)
    live = await snapshot(conn)
    assert_every_table_projected(live)

    detached = await conn.fetch(
        "SELECT * FROM flowsd.detach_event_log_partitions($1)", first["upper_bound"]
    )
    assert [r[0] for r in detached] == [f"flowsd.{first['name']}"]
    assert len(await read_events(conn, 0)) == len(recent)

    verdicts = await verify(conn, PROJECTIONS, from_snapshot=True)
    assert [(v.projection, v.first) for v in verdicts if not v.equal] == []
    assert {v.since for v in verdicts} == {old[-1].position}
    await replay(conn, PROJECTIONS, from_snapshot=True)
    assert await snapshot(conn) == live
    # From position 0 the detached month is missing: that is what the snapshot is for.
    whole = await verify(conn, PROJECTIONS)
    assert not all(v.equal for v in whole)
