"""End to end: the daemon polls a registered simulated fleet (real sockets, real PostgreSQL)
and the event log agrees with the simulator's ground truth."""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import asyncpg

from flowsd.config import PollConfig
from flowsd.events import types
from flowsd.events.reader import iter_batches
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from tests.integration.daemon import (
    FROZEN_AT,
    daemon_config,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)
from tests.support import wait_until

METERS = 60
B = TypeVar("B")


async def all_events(url: str) -> list[types.RecordedEvent]:
    conn = await asyncpg.connect(url)
    try:
        return [e async for batch in iter_batches(conn, 0, batch_size=5000) for e in batch]
    finally:
        await conn.close()


async def test_a_day_of_polling_agrees_with_the_simulator(
    migrated_url: str, tmp_path: Path
) -> None:
    clock = SimClock(FROZEN_AT, speed=0.0)
    async with registered_fleet(migrated_url, METERS, clock=clock) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=PollConfig()), fleet)
        async with running_daemon(config, migrated_url, wall_clock=sim_wall_clock(clock)) as d:
            # Every cadence (half-hourly, hourly, daily) comes due once.
            clock.advance(days=1, minutes=1)
            await wait_until(lambda: d.supervisor.statistics().polls >= METERS)
            await wait_until(lambda: d.supervisor.status(top=0).polls_running == 0)
            await d.appender.flush()
        at = clock.now_datetime()
        events = await all_events(migrated_url)
        by_serial = await _meter_ids(migrated_url)
        per_meter: dict[uuid.UUID, list[types.RecordedEvent]] = defaultdict(list)
        for event in events:
            per_meter[event.meter_id].append(event)
        checked_intervals = 0
        for meter in fleet.meters:
            truth = fleet.truth(meter.index, at)
            mine = per_meter[by_serial[meter.serial]]
            bodies = [e.body for e in mine]
            assert any(isinstance(b, types.MeterCameOnline) for b in bodies), meter.serial
            if meter.three_phase:
                totals = _only(bodies, types.ThreePhaseRegisterRead)
                assert truth.three_phase_totals is not None
                assert totals.active_import == truth.three_phase_totals["active_import"]
                assert totals.active_export == truth.three_phase_totals["active_export"]
                continue
            balance = _only(bodies, types.BalanceRead)
            assert truth.balance_gbp is not None
            assert balance.balance_gbp == truth.balance_gbp
            registers = {b.element: b for b in bodies if isinstance(b, types.RegisterRead)}
            first = registers["A" if meter.twin_element else "SINGLE"]
            assert first.import_active_wh == truth.element_a.import_active
            assert first.export_active_wh == truth.element_a.export_active
            if meter.twin_element:
                assert registers["B"].import_active_wh == truth.element_b.import_active
            tariff = _only(bodies, types.ActiveTariffRead).tariff
            assert truth.active_tariff is not None
            assert (
                tariff.standing_charge_gbp == Decimal(truth.active_tariff.standing_charge) / 10**5
            )
            checked_intervals += _check_intervals(fleet, meter.index, mine)
        assert checked_intervals >= (METERS * 3 // 5) * 11
        if d.projectors is not None:
            await _check_projections(migrated_url, fleet, by_serial, at)


async def _check_projections(
    url: str, fleet: SimulatedFleet, ids: dict[str, uuid.UUID], at: datetime
) -> None:
    """The read tables the projectors built agree with the simulator too."""
    conn = await asyncpg.connect(url)
    try:
        balances = {
            row["id"]: row["balance"]
            for row in await conn.fetch("SELECT id, balance FROM flows.meter_shadows")
        }
        hh = await conn.fetch(
            """SELECT r.meter_id, r.element::text AS element, r.direction_reversed,
                      h."timestamp", h.kwh
               FROM flows.register_interval_hh h
               JOIN flows.meter_registers r ON r.register_id = h.register_id"""
        )
    finally:
        await conn.close()
    intervals: dict[uuid.UUID, dict[datetime, Decimal]] = defaultdict(dict)
    # A generation meter's register is reversed: its kwh is the meter's export.
    reversed_meters = set()
    for row in hh:
        if row["element"] in ("A", "SINGLE"):
            intervals[row["meter_id"]][row["timestamp"]] = row["kwh"]
            if row["direction_reversed"]:
                reversed_meters.add(row["meter_id"])
    compared = three_phase_compared = 0
    for meter in fleet.meters:
        meter_id = ids[meter.serial]
        if not meter.three_phase:
            assert balances[meter_id] == fleet.truth(meter.index, at).balance_gbp
        # Three-phase half hours come from the interval profile's demand: the same energy.
        mine = intervals[meter_id]
        assert mine, meter.serial
        last = max(mine) + timedelta(minutes=30)
        truths = {t.start: t for t in fleet.intervals(meter.index, min(mine), last)}
        for start, kwh in mine.items():
            truth = truths[start]
            wh = truth.export_a if meter_id in reversed_meters else truth.import_a
            assert kwh == Decimal(wh) / 1000, (meter.serial, start)
            compared += 1
            three_phase_compared += meter.three_phase
    assert compared >= (METERS * 3 // 5) * 10
    assert three_phase_compared >= 10 * sum(m.three_phase for m in fleet.meters)


def _only(bodies: list[types.AnyBody | types.UnknownBody], kind: type[B]) -> B:
    found = [b for b in bodies if isinstance(b, kind)]
    assert len(found) == 1, (kind, len(found))
    return found[0]


def _check_intervals(fleet: SimulatedFleet, index: int, events: list[types.RecordedEvent]) -> int:
    """Profile log 1 registers and half-hour energies equal the simulator's; returns how many
    half hours were compared."""
    records = sorted(
        (e for e in events if isinstance(e.body, types.ProfileLog1Record)),
        key=lambda e: e.observed_at,
    )
    assert len(records) >= 12
    start, end = records[0].observed_at - timedelta(minutes=30), records[-1].observed_at
    truths = {t.end: t for t in fleet.intervals(index, start, end)}
    for event in records:
        body = event.body
        assert isinstance(body, types.ProfileLog1Record)
        assert body.import_a_wh == truths[event.observed_at].registers_at_end[0]
    for before, after in itertools.pairwise(records):
        assert after.observed_at - before.observed_at == timedelta(minutes=30)
        energy = after.body.import_a_wh - before.body.import_a_wh  # type: ignore[union-attr]
        assert energy == truths[after.observed_at].import_a
    return len(records) - 1


async def _meter_ids(url: str) -> dict[str, uuid.UUID]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT serial, id FROM flows.meter_registry")
        return {row["serial"]: row["id"] for row in rows}
    finally:
        await conn.close()
