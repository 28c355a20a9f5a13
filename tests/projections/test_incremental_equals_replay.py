"""Against PostgreSQL: tables built incrementally, in any batch split, equal a full replay."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsd.events import types as t
from flowsd.events.store import append_batch
from flowsd.projections.catalogue import all_projections
from flowsd.projections.registry import RegistryProjection
from flowsd.projections.replay import replay
from flowsd.projections.shadows import ShadowsProjection
from flowsd.projections.verify import verify
from tests.projections.conftest import add_meter, add_register
from tests.projections.helpers import apply_appended
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


def every_table_once(meter: uuid.UUID) -> list[t.Event]:
    """Events that give every projection a row (or a set column), away from the drawn ones."""
    at = BASE + timedelta(hours=12)
    bodies: list[Any] = [
        t.BalanceRead(balance_gbp=Decimal("12.5"), emergency_credit_gbp=Decimal("5")),
        t.SignalQualityRead(csq=17),
        t.VoltageRead(voltage_v=Decimal("241.2")),
        t.ThreePhaseVoltageRead(l1_v=Decimal("230.1"), l2_v=None, l3_v=Decimal("229.9")),
        t.RegisterRead(element="A", import_active_wh=1_234_000, export_active_wh=56_000),
        t.IdentityRead(hardware="C1.w", firmware_version="3_04_0"),
        t.HealthChanged(previous=None, health="unhealthy", details="timeout"),
    ]
    events = [
        t.Event(meter_id=meter, observed_at=at + timedelta(seconds=i), read_at=at, body=body)
        for i, body in enumerate(bodies)
    ]
    for slot, wh in ((0, 5_000), (1, 5_420)):
        moment = at + slot * timedelta(minutes=30)
        body = t.ProfileLog1Record(status=0x0080, import_a_wh=wh)
        events.append(t.Event(meter_id=meter, observed_at=moment, read_at=moment, body=body))
    return events


def assert_every_table_projected(tables: dict[str, list[Any]]) -> None:
    """A projection that wrote nothing (live and rebuilt alike) would pass the comparisons."""
    for projection in PROJECTIONS:
        width = len(projection.key)
        projected = [
            row for row in tables[projection.name] if any(v is not None for v in row[width:])
        ]
        assert projected, f"{projection.name} holds no projected values"


async def project_in_batches(conn: asyncpg.Connection, batches: list[list[Any]]) -> None:
    for batch in batches:
        await apply_appended(conn, await append_batch(conn, batch), PROJECTIONS)


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
    drawn = data.draw(event_sequences(meters, max_size=50))
    events = data.draw(st.permutations([*drawn, *every_table_once(meters[0])]))
    batches = split(events, split_points(data.draw, len(events)))
    await project_in_batches(conn, batches)

    verdicts = await verify(conn, PROJECTIONS)
    assert [(v.projection, v.first) for v in verdicts if not v.equal] == []

    before = await snapshot(conn)
    assert_every_table_projected(before)
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
