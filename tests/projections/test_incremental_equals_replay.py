"""Against PostgreSQL: tables built incrementally, in any batch split, equal a full replay."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsd.events.store import append_batch
from flowsd.projections.catalogue import all_projections
from flowsd.projections.projector import apply_batch
from flowsd.projections.registry import RegistryProjection
from flowsd.projections.replay import replay
from flowsd.projections.shadows import ShadowsProjection
from flowsd.projections.verify import verify
from tests.projections.conftest import add_meter, add_register
from tests.projections.strategies import BASE, event_sequences, split, split_points

PROJECTIONS = all_projections()
LIVE_TABLES = [p.table for p in PROJECTIONS]


async def fresh_meters(conn: asyncpg.Connection) -> list[uuid.UUID]:
    """Three meters: twin-element, single-element (reversed), and one replaced mid-range."""
    meters = [await add_meter(conn) for _ in range(3)]
    await add_register(conn, meters[0], "A")
    await add_register(conn, meters[0], "B")
    await add_register(conn, meters[1], "SINGLE", reversed_=True)
    switch = BASE + timedelta(hours=2)
    await add_register(conn, meters[2], "A", end=switch, status="replaced")
    await add_register(conn, meters[2], "A", start=switch)
    return meters


async def project_in_batches(conn: asyncpg.Connection, batches: list[list[Any]]) -> None:
    for batch in batches:
        result = await append_batch(conn, batch)
        for projection in PROJECTIONS:
            expected: int = await conn.fetchval(
                "SELECT coalesce((SELECT position FROM flowsd.projector_checkpoint "
                "WHERE name = $1), 0)",
                projection.name,
            )
            await apply_batch(
                conn, projection, result.events, expected=expected, through=result.through_position
            )


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    found = {}
    for projection in PROJECTIONS:
        cols = ", ".join(f'"{c}"' for c in projection.columns)
        rows = await conn.fetch(f"SELECT {cols} FROM {projection.table} ORDER BY {cols}")
        found[projection.name] = [tuple(r) for r in rows]
    return found


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_batch_split_equals_a_replay(conn: asyncpg.Connection, data: Any) -> None:
    meters = await fresh_meters(conn)
    events = data.draw(event_sequences(meters, max_size=50))
    batches = split(events, split_points(data.draw, len(events)))
    await project_in_batches(conn, batches)

    verdicts = await verify(conn, PROJECTIONS)
    assert [(v.projection, v.first) for v in verdicts if not v.equal] == []

    before = await snapshot(conn)
    await replay(conn, PROJECTIONS)
    assert await snapshot(conn) == before


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_sql_groups_are_the_twins_of_the_python_contributions(
    conn: asyncpg.Connection, data: Any
) -> None:
    """The state tables' rebuild selects events by the SQL groups: they must match exactly."""
    meters = await fresh_meters(conn)
    result = await append_batch(conn, data.draw(event_sequences(meters, max_size=60)))
    for projection in (ShadowsProjection(), RegistryProjection()):
        rows = await conn.fetch(
            f"SELECT e.position, {projection.groups_sql()} AS groups "
            "FROM flows.meter_event_log e WHERE e.position > $1 AND e.position <= $2",
            result.after_position,
            result.through_position,
        )
        in_sql = {row["position"]: sorted(row["groups"]) for row in rows}
        in_python = {e.position: sorted(projection.contributions(e)) for e in result.events}
        assert in_sql == in_python, projection.name
