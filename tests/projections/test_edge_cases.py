"""Units and edge cases, applied through the live path and checked against a rebuild."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from flowsd.events import types as t
from flowsd.events.store import append_batch
from flowsd.projections.catalogue import all_projections
from flowsd.projections.verify import verify
from tests.projections.conftest import add_meter, add_register
from tests.projections.helpers import apply_appended
from tests.projections.strategies import BASE

SLOT = timedelta(minutes=30)
VALID, POWER_FAIL, RESET = 0x0080, 0x0040, 0x0100


async def project(conn: asyncpg.Connection, events: Sequence[t.Event]) -> None:
    """Append ``events`` and apply them with every projection, then check against a rebuild."""
    await apply_appended(conn, await append_batch(conn, events), all_projections())
    differing = [v.projection for v in await verify(conn, all_projections()) if not v.equal]
    assert differing == []


def log1(meter: uuid.UUID, slot: int, wh: int, status: int = VALID) -> t.Event:
    at = BASE + slot * SLOT
    body = t.ProfileLog1Record(status=status, import_a_wh=wh)
    return t.Event(meter_id=meter, observed_at=at, read_at=at, body=body)


def log2(meter: uuid.UUID, slot: int, wh: int, status: int = VALID) -> t.Event:
    at = BASE + slot * SLOT
    body = t.ProfileLog2Record(
        status=status, export_a_wh=wh, reactive_import_a_varh=0, reactive_export_a_varh=0
    )
    return t.Event(meter_id=meter, observed_at=at, read_at=at, body=body)


async def half_hours(conn: asyncpg.Connection, register: uuid.UUID) -> dict[int, Any]:
    rows = await conn.fetch(
        'SELECT "timestamp", kwh, export_kwh FROM flows.register_interval_hh '
        'WHERE register_id = $1 ORDER BY "timestamp"',
        register,
    )
    return {int((r["timestamp"] - BASE) / SLOT): (r["kwh"], r["export_kwh"]) for r in rows}


async def test_wh_deltas_across_reset_power_fail_and_missing_half_hour(
    conn: asyncpg.Connection,
) -> None:
    meter = await add_meter(conn)
    register = await add_register(conn, meter, "A")
    imports = [
        log1(meter, 0, 10_000),
        log1(meter, 1, 10_250),  # 0.250 kWh in slot 0
        log1(meter, 2, 40, RESET | VALID),  # register reset: slot 1 unknown
        log1(meter, 3, 540, POWER_FAIL | VALID),  # outage inside slot 2: still counted
        log1(meter, 4, 900),
        # slot 5 missing: slots 4 and 5 unknown
        log1(meter, 6, 1_500),
        log1(meter, 7, 1_400),  # went backwards: slot 6 unknown
        log1(meter, 8, 1_450, 0),  # not valid: slots 7 and 8 unknown
        log1(meter, 9, 1_500),
    ]
    exports = [log2(meter, 0, 5), log2(meter, 1, 7)]
    # Backfill order: newest first, in two batches.
    await project(conn, list(reversed(imports[5:])))
    await project(conn, list(reversed(imports[:5])) + exports)
    assert await half_hours(conn, register) == {
        0: (Decimal("0.250"), Decimal("0.002")),
        2: (Decimal("0.500"), None),
        3: (Decimal("0.360"), None),
    }


def interval(
    meter: uuid.UUID,
    slot: int,
    values: dict[str, int],
    *,
    counts_per_kwh: int = 1000,
    status: int = VALID,
    minutes: int = 30,
    profile: int = 0,
) -> t.Event:
    at = BASE + slot * SLOT  # three-phase records carry their interval's start
    body = t.ThreePhaseIntervalRecord(
        profile=profile,
        interval_minutes=minutes,
        status=status,
        counts_per_kwh=counts_per_kwh,
        values=values,
    )
    return t.Event(meter_id=meter, observed_at=at, read_at=at, body=body)


async def test_three_phase_demand_is_half_hour_energy(conn: asyncpg.Connection) -> None:
    """Average W over 30 minutes (0.1 W on P1.cx) is Wh × 2: each record is its half hour."""
    ax, cx, reversed_meter = [await add_meter(conn) for _ in range(3)]
    ax_register = await add_register(conn, ax, "SINGLE")
    cx_register = await add_register(conn, cx, "SINGLE")
    reversed_register = await add_register(conn, reversed_meter, "SINGLE", reversed_=True)
    imports, exports = "d79600", "d79601"
    await project(
        conn,
        [
            interval(ax, 0, {imports: 1_001, exports: 40}),  # 500.5 Wh in, 20 Wh out
            interval(ax, 1, {imports: 2_000}),  # no export channel: export unknown
            interval(ax, 2, {imports: 900}, status=POWER_FAIL | VALID),  # still counted
            interval(ax, 3, {imports: 900}, status=0),  # not valid
            interval(ax, 4, {imports: 900}, minutes=15),  # not a half hour
            interval(ax, 5, {imports: 900}, profile=1),  # not profile 0
            interval(cx, 0, {imports: 25_000, exports: 0}, counts_per_kwh=10_000),
            interval(reversed_meter, 0, {imports: 100, exports: 6_000}),
            interval(reversed_meter, 1, {imports: 100}),  # reversed: its import is unknown
        ],
    )
    assert await half_hours(conn, ax_register) == {
        0: (Decimal("0.5005"), Decimal("0.02")),
        1: (Decimal("1"), None),
        2: (Decimal("0.45"), None),
    }
    assert await half_hours(conn, cx_register) == {0: (Decimal("1.25"), Decimal("0"))}
    assert await half_hours(conn, reversed_register) == {0: (Decimal("3"), Decimal("0.05"))}


async def test_direction_reversed_swaps_import_and_export(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn)
    register = await add_register(conn, meter, "SINGLE", reversed_=True)
    read = t.RegisterRead(element="A", import_active_wh=12_000, export_active_wh=345_000)
    events = [
        log1(meter, 0, 1_000),
        log1(meter, 1, 1_100),
        log2(meter, 0, 20_000),
        log2(meter, 1, 21_500),
        t.Event(meter_id=meter, observed_at=BASE, read_at=BASE, body=read),
    ]
    await project(conn, events)
    assert await half_hours(conn, register) == {0: (Decimal("1.500"), Decimal("0.100"))}
    imported = await conn.fetchval(
        "SELECT read FROM flows.register_import WHERE register_id = $1", register
    )
    exported = await conn.fetchval(
        "SELECT read FROM flows.register_export WHERE register_id = $1", register
    )
    assert (imported, exported) == (345.0, 12.0)


async def test_negative_balance_is_debt(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn, serial="EMLNEG")
    read = t.BalanceRead(balance_gbp=Decimal("-12.34567"), emergency_credit_gbp=Decimal("15"))
    at = BASE + timedelta(hours=1)
    await project(conn, [t.Event(meter_id=meter, observed_at=at, read_at=at, body=read)])
    row = await conn.fetchrow(
        "SELECT balance, emergency_credit, balance_updated_at FROM flows.meter_shadows "
        "WHERE id = $1",
        meter,
    )
    assert row is not None
    assert (row["balance"], row["emergency_credit"], row["balance_updated_at"]) == (
        Decimal("-12.34567"),
        Decimal("15"),
        at,
    )
    assert await conn.fetchval(
        "SELECT balance FROM flows.meter_prepay_balance WHERE meter_id = $1", meter
    ) == Decimal("-12.34567")
    assert (
        await conn.fetchval("SELECT count(*) FROM flows.meters_low_balance WHERE id = $1", meter)
        == 1
    )


async def test_tariff_activation_sets_the_production_json(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn, serial="EMLTARIFF")
    await conn.execute("UPDATE flows.meter_registry SET hardware = 'C1.w' WHERE id = $1", meter)
    old = t.ActiveTariff(
        standing_charge_gbp=Decimal("0.5"),
        unit_rate_a_gbp=Decimal("0.25"),
        unit_rate_b_gbp=Decimal("0.25"),
        emergency_credit_gbp=Decimal("15"),
        ecredit_availability_gbp=Decimal("5"),
        debt_recovery_rate_gbp=Decimal("0.5"),
        threshold_mask=(False,) * 8,
        threshold_values=(0,) * 7,
    )
    new = t.ActiveTariff(
        standing_charge_gbp=Decimal("0.51082"),
        unit_rate_a_gbp=Decimal("0.2843"),
        unit_rate_b_gbp=Decimal("0.2843"),
        emergency_credit_gbp=Decimal("15"),
        ecredit_availability_gbp=Decimal("5"),
        debt_recovery_rate_gbp=Decimal("0.5"),
        threshold_mask=(False,) * 8,
        threshold_values=(0,) * 7,
        block_rate=2,
        tou_rate=3,
    )
    first, later = BASE, BASE + timedelta(days=1)
    await project(
        conn,
        [
            t.Event(
                meter_id=meter,
                observed_at=first,
                read_at=first,
                body=t.ActiveTariffRead(tariff=old),
            ),
            t.Event(
                meter_id=meter,
                observed_at=later,
                read_at=later,
                body=t.TariffActivated(previous=old, tariff=new),
            ),
        ],
    )
    raw = await conn.fetchval("SELECT tariffs_active FROM flows.meter_shadows WHERE id = $1", meter)
    active = json.loads(raw)
    assert active["standing_charge"] == "0.51082"
    assert active["unit_rate_element_a"] == "0.2843"
    assert active["threshold_mask"] == {f"rate{i}": False for i in range(1, 9)}
    assert active["threshold_values"] == {f"th{i}": 0 for i in range(1, 8)}
    assert active["pricings"] is None and "gas" in active
    assert (active["block_rate"], active["tou_rate"]) == (2, None)  # TOU rate: not stored
    rate = await conn.fetchval(
        "SELECT active_unit_rate_a FROM flows.meter_shadows_tariffs WHERE id = $1", meter
    )
    assert rate == Decimal("0.2843")


async def test_meter_replaced_mid_day_feeds_one_circuit(conn: asyncpg.Connection) -> None:
    old_meter, new_meter = await add_meter(conn), await add_meter(conn)
    swap = BASE + 4 * SLOT
    old_register = await add_register(conn, old_meter, "A", end=swap, status="replaced")
    new_register = await add_register(conn, new_meter, "A", start=swap)
    circuit = await conn.fetchval(
        "INSERT INTO flows.circuits (type, name) VALUES ('power', 'plot-1') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO flows.circuit_register (circuit, register, start_time, end_time) "
        "VALUES ($1, $2, $3, $4), ($1, $5, $4, NULL)",
        circuit,
        old_register,
        BASE,
        swap,
        new_register,
    )
    # The old meter keeps logging after it was replaced: those half hours have no register.
    old = [log1(old_meter, s, 1_000 + 100 * s) for s in range(7)]
    new = [log1(new_meter, s, 50 + 200 * (s - 4)) for s in range(4, 9)]
    await project(conn, old + new)
    assert set(await half_hours(conn, old_register)) == {0, 1, 2, 3}
    assert set(await half_hours(conn, new_register)) == {4, 5, 6, 7}
    rows = await conn.fetch(
        'SELECT "timestamp", kwh FROM flows.circuit_interval_hh WHERE circuit_id = $1 '
        'ORDER BY "timestamp"',
        circuit,
    )
    assert [r["kwh"] for r in rows] == [Decimal("0.100")] * 4 + [Decimal("0.200")] * 4


async def test_register_replaced_on_the_same_meter_splits_the_day(
    conn: asyncpg.Connection,
) -> None:
    meter = await add_meter(conn)
    swap = BASE + 2 * SLOT
    before = await add_register(conn, meter, "B", end=swap, status="replaced")
    after = await add_register(conn, meter, "B", start=swap)
    await add_register(conn, meter, "B", status="replaced")  # replaced without an end: never used
    events = []
    for s in range(5):
        at = BASE + s * SLOT
        body = t.ProfileLog1Record(status=VALID, import_a_wh=0, import_b_wh=1_000 * s)
        events.append(t.Event(meter_id=meter, observed_at=at, read_at=at, body=body))
    await project(conn, events)
    assert set(await half_hours(conn, before)) == {0, 1}
    assert set(await half_hours(conn, after)) == {2, 3}


async def test_health_and_identity(conn: asyncpg.Connection) -> None:
    meter = await add_meter(conn, serial="EMLOLD")
    at = BASE
    events = [
        t.Event(
            meter_id=meter,
            observed_at=at,
            read_at=at,
            body=t.IdentityRead(serial="EMLNEW", firmware_version="3_03_2"),
        ),
        t.Event(
            meter_id=meter,
            observed_at=at + SLOT,
            read_at=None,
            body=t.MeterWentOffline(consecutive_failures=3, last_error="connect_timeout"),
        ),
    ]
    await project(conn, events)
    registry = await conn.fetchrow(
        "SELECT serial, firmware_version, hardware FROM flows.meter_registry WHERE id = $1", meter
    )
    assert tuple(registry or ()) == ("EMLNEW", "3_03_2", None)
    shadow = await conn.fetchrow(
        "SELECT health, health_details, csq, last_healthy_at, updated_at "
        "FROM flows.meter_shadows WHERE id = $1",
        meter,
    )
    assert shadow is not None
    assert (shadow["health"], shadow["health_details"], shadow["csq"]) == (
        "unhealthy",
        "connect_timeout",
        None,
    )
    assert shadow["last_healthy_at"] == at
    history = await conn.fetch(
        "SELECT health, reason FROM flows.meter_health_history WHERE meter_id = $1", meter
    )
    assert [tuple(r) for r in history] == [("unhealthy", "connect_timeout")]
    csq = await conn.fetch(
        'SELECT "timestamp", csq FROM flows.meter_csq WHERE meter_id = $1', meter
    )
    assert [tuple(r) for r in csq] == [(at + SLOT, None)]  # as the shadow's csq: nulled
