"""--register: the fleet's rows in a migrated flows schema, idempotent on re-run."""

from __future__ import annotations

import asyncpg

from flowsd.db.migrate import migrate
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import register_fleet


async def test_register_creates_the_rows_a_deployment_has_and_is_idempotent(
    database_url: str,
) -> None:
    fleet = SimulatedFleet(
        6, seed=41, base_address="127.77.15.1", hardware=["C1.w", "EMA1.w", "P1.cx"]
    )
    identities = [fleet.state.identity(i) for i in range(6)]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        first = await register_fleet(conn, fleet.seed, identities)
        second = await register_fleet(conn, fleet.seed, identities)
        meters = await conn.fetch(
            """SELECT m.serial, host(m.ip_address) AS ip, m.hardware, m.mode::text AS mode,
                      e.code AS esco
               FROM flows.meter_registry m JOIN flows.escos e ON e.id = m.esco
               ORDER BY m.ip_address"""
        )
        registers = await conn.fetch(
            """SELECT m.serial, r.element::text AS element, r.nature::text AS nature
               FROM flows.meter_registers r JOIN flows.meter_registry m ON m.id = r.meter_id
               ORDER BY m.ip_address, r.element"""
        )
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM flows.{table}")
            for table in (
                "escos", "sites_new", "feeder_registry", "service_head_registry",
                "service_head_meter", "properties", "properties_service_head", "meter_registry",
                "meter_registers", "circuits", "circuit_register", "meter_shadows",
            )
        }  # fmt: skip
        navigable = await conn.fetchval(
            """SELECT count(*) FROM flows.meter_registry m
               JOIN flows.service_head_meter shm ON shm.meter = m.id
               JOIN flows.service_head_registry sh ON sh.id = shm.service_head
               JOIN flows.feeder_registry f ON f.id = sh.feeder
               JOIN flows.properties_service_head ps ON ps.service_head = sh.id
               JOIN flows.circuit_register cr ON cr.register IN (
                   SELECT register_id FROM flows.meter_registers WHERE meter_id = m.id)
               WHERE f.esco = m.esco"""
        )
    finally:
        await conn.close()

    assert first == second
    assert (first.meters, first.registers, first.circuits) == (6, 8, 8)
    assert [(r["serial"], r["ip"], r["hardware"], r["mode"], r["esco"]) for r in meters] == [
        (i.serial, i.ip_address, i.hardware.value, "active", "sim41") for i in identities
    ]
    twin = identities[0].serial
    assert [(r["element"], r["nature"]) for r in registers if r["serial"] == twin] == [
        ("A", "power"), ("B", "heat"),
    ]  # fmt: skip
    assert {
        r["element"]
        for r in registers
        if r["serial"] != twin and r["serial"] != identities[3].serial
    } == {"SINGLE"}
    assert counts == {
        "escos": 1, "sites_new": 1, "feeder_registry": 1, "service_head_registry": 6,
        "service_head_meter": 6, "properties": 6, "properties_service_head": 6,
        "meter_registry": 6, "meter_registers": 8, "circuits": 8, "circuit_register": 8,
        "meter_shadows": 6,
    }  # fmt: skip
    assert navigable == 8
