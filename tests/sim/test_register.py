"""--register: the documented topology's rows in a migrated flows schema, idempotent on re-run;
another fleet's rows are refused, an older registration's addresses taken over."""

from __future__ import annotations

import asyncpg
import pytest

from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import FleetConflictError, register_fleet
from flowsd.sim.topology import Role, plan_topology

# Seed 1 with this hardware has every role: supply (single- and three-phase, twin-element),
# communal (the first three-phase meter) and generation (the solar B1.w after a supply meter).
HARDWARE = ["C1.w", "P1.ax", "EMA1.w", "B1.w", "P1.cx", "C1.w"]


def _fleet(seed: int = 1) -> SimulatedFleet:
    return SimulatedFleet(len(HARDWARE), seed=seed, base_address="127.77.15.1", hardware=HARDWARE)


async def test_register_writes_the_documented_topology_and_is_idempotent(
    migrated_url: str,
) -> None:
    fleet = _fleet()
    identities = [fleet.state.identity(i) for i in range(len(HARDWARE))]
    topology = plan_topology(identities)
    assert [m.role for m in topology.meters] == [
        Role.SUPPLY, Role.COMMUNAL, Role.SUPPLY, Role.GENERATION, Role.SUPPLY, Role.SUPPLY,
    ]  # fmt: skip
    conn = await asyncpg.connect(migrated_url)
    try:
        first = await register_fleet(conn, fleet.seed, identities)
        second = await register_fleet(conn, fleet.seed, identities)
        hierarchy = await conn.fetch(
            """SELECT e.code, e.name AS esco, e.region, s.name AS site, s.location, p.plot,
                      p.address, p.type, sh.name AS head, m.serial, m.name AS meter,
                      host(m.ip_address) AS ip, m.mode::text AS mode, m.hardware
               FROM flows.meter_registry m
               JOIN flows.escos e ON e.id = m.esco
               JOIN flows.service_head_meter shm ON shm.meter = m.id
               JOIN flows.service_head_registry sh ON sh.id = shm.service_head
               JOIN flows.feeder_registry f ON f.id = sh.feeder AND f.esco = e.id
               LEFT JOIN flows.properties_service_head psh ON psh.service_head = sh.id
               LEFT JOIN flows.properties p ON p.id = psh.property
               LEFT JOIN flows.sites_new s ON s.id = p.site AND s.esco = e.id
               ORDER BY m.ip_address"""
        )
        circuits = await conn.fetch(
            """SELECT m.serial, r.element::text AS element, r.nature::text AS nature,
                      r.direction_reversed, c.type::text AS type, c.name, c.rating_amps,
                      s.name AS site
               FROM flows.circuits c
               JOIN flows.sites_new s ON s.id = c.site
               JOIN flows.circuit_register cr ON cr.circuit = c.id
               JOIN flows.meter_registers r ON r.register_id = cr.register
               JOIN flows.meter_registry m ON m.id = r.meter_id
               ORDER BY m.ip_address, r.element"""
        )
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM flows.{table}")
            for table in (
                "regions", "escos", "sites_new", "feeder_registry", "service_head_registry",
                "service_head_meter", "properties", "properties_service_head", "meter_registry",
                "meter_registers", "circuits", "circuit_register", "meter_shadows",
            )
        }  # fmt: skip
    finally:
        await conn.close()

    assert first == second
    assert (first.meters, first.registers, first.circuits, first.properties) == (6, 8, 8, 4)
    serials = [i.serial for i in identities]
    assert serials[0] == "EML2137580826"  # the documentation's example meter
    assert [tuple(r) for r in hierarchy] == [
        ("WLCE", "Water Lilies Community Energy", "south_west", site, location, plot, address,
         kind, head, serial, meter, identity.ip_address, "active", identity.hardware.value)
        for identity, serial, (site, location, plot, address, kind, head, meter) in zip(
            identities,
            serials,
            [
                ("Water Lilies", "Bristol", "WL-01", "1 Water Lilies Way, Bristol",
                 "residential", "SH-WL-01", "WLCE.Plot-01.C"),
                (None, None, None, None, None, "SH-WL-COMMUNAL", "WLCE.Communal.C"),
                ("Water Lilies", "Bristol", "WL-02", "2 Water Lilies Way, Bristol",
                 "residential", "SH-WL-02", "WLCE.Plot-02.C"),
                ("Water Lilies", "Bristol", "WL-02", "2 Water Lilies Way, Bristol",
                 "residential", "SH-WL-02-2", "WLCE.Plot-02.G"),
                ("Water Lilies", "Bristol", "WL-03", "3 Water Lilies Way, Bristol",
                 "commercial", "SH-WL-03", "WLCE.Plot-03.C"),
                ("Water Lilies", "Bristol", "WL-04", "4 Water Lilies Way, Bristol",
                 "residential", "SH-WL-04", "WLCE.Plot-04.C"),
            ],
            strict=True,
        )
    ]  # fmt: skip
    assert [tuple(r) for r in circuits] == [
        (serials[0], "A", "power", False, "power", "WLCE.Plot-01.C-power", 60, "Water Lilies"),
        (serials[0], "B", "heat", False, "heat", "WLCE.Plot-01.C-heat", 32, "Water Lilies"),
        (serials[1], "SINGLE", "power", False, "power", "WLCE.Communal.C-power", 100,
         "Water Lilies"),
        (serials[2], "SINGLE", "power", False, "power", "WLCE.Plot-02.C-power", 60,
         "Water Lilies"),
        (serials[3], "SINGLE", "solar", True, "solar", "WLCE.Plot-02.G-solar", 16,
         "Water Lilies"),
        (serials[4], "SINGLE", "power", False, "power", "WLCE.Plot-03.C-power", 100,
         "Water Lilies"),
        (serials[5], "A", "power", False, "power", "WLCE.Plot-04.C-power", 60, "Water Lilies"),
        (serials[5], "B", "heat", False, "heat", "WLCE.Plot-04.C-heat", 32, "Water Lilies"),
    ]  # fmt: skip
    assert counts == {
        "regions": 1, "escos": 1, "sites_new": 1, "feeder_registry": 1,
        "service_head_registry": 6, "service_head_meter": 6, "properties": 4,
        "properties_service_head": 5, "meter_registry": 6, "meter_registers": 8,
        "circuits": 8, "circuit_register": 8, "meter_shadows": 6,
    }  # fmt: skip


async def test_another_fleet_is_refused_and_older_rows_give_up_the_addresses(
    migrated_url: str,
) -> None:
    fleet = _fleet()
    identities = [fleet.state.identity(i) for i in range(len(HARDWARE))]
    conn = await asyncpg.connect(migrated_url)
    try:
        # A meter row of an older registration, on the address of this fleet's meter 2.
        await conn.execute(
            "INSERT INTO flows.meter_registry (serial, ip_address, mode) "
            "VALUES ('EML2200000001', $1, 'active')",
            identities[2].ip_address,
        )
        report = await register_fleet(conn, fleet.seed, identities)
        assert report.addresses_taken_over == 1
        assert (
            await conn.fetchval(
                "SELECT ip_address FROM flows.meter_registry WHERE serial = 'EML2200000001'"
            )
            is None
        )
        other = _fleet(seed=2)
        with pytest.raises(FleetConflictError, match="fresh database"):
            await register_fleet(conn, 2, [other.state.identity(i) for i in range(6)])
        assert await conn.fetchval("SELECT count(*) FROM flows.meter_registry") == 7
    finally:
        await conn.close()
