"""``--register``: the rows a real deployment has for its meters, written for a simulated fleet.

Writes the fleet's topology (:mod:`flowsd.sim.topology`): the region, the ESCO ``WLCE``, its
site (with location), feeders, properties (plot, address, type, site), service heads and
their links to properties and meters, the meters themselves (``mode = 'active'``, serial, IP,
hardware, name), their registers, and the circuits (type, name, site, rating) those registers
feed through ``circuit_register``. Every id is a UUIDv5 of the fleet's seed and the row's
natural key, and every insert is ``ON CONFLICT DO UPDATE``/``DO NOTHING``, so a re-run changes
nothing and a fleet can be re-registered after a restart.

A database holds one simulated fleet: registering a fleet of another seed where ESCO ``WLCE``
already exists is refused. Meter rows of other ESCOs that hold one of the fleet's loopback
addresses (a fleet registered by an older flowsd) lose the address, so the daemon dials each
simulated meter under one id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from flowsd.errors import UserError
from flowsd.sim.clock import from_emop
from flowsd.sim.identity import MeterIdentity
from flowsd.sim.topology import (
    ESCO_CODE,
    ESCO_NAME,
    REGION,
    SITE_CODE,
    SITE_LOCATION,
    SITE_NAME,
    plan_topology,
)

_NAMESPACE = uuid.UUID("6f1d1c52-4a53-5bb6-9c0e-2f8f1a4f7d10")


def _id(seed: int, kind: str, key: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"flowsd-sim/{seed}/{kind}/{key}")


def meter_id(seed: int, serial: str) -> uuid.UUID:
    """The ``meter_registry.id`` a registered simulated meter gets."""
    return _id(seed, "meter", serial)


class FleetConflictError(UserError):
    """The database's ESCO WLCE is not this fleet's."""


@dataclass(frozen=True, slots=True)
class RegistrationReport:
    """How many rows of each kind the fleet has in the database."""

    esco_code: str
    meters: int
    registers: int
    circuits: int
    properties: int
    addresses_taken_over: int


def _iso_week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


async def register_fleet(
    conn: asyncpg.Connection, seed: int, identities: Iterable[MeterIdentity]
) -> RegistrationReport:
    """Insert or refresh the fleet's rows in one transaction (the schema must exist)."""
    identities = list(identities)
    topology = plan_topology(identities)
    by_index = {i.index: i for i in identities}
    esco = _id(seed, "esco", ESCO_CODE)
    site = _id(seed, "site", SITE_CODE)
    feeders = {name: _id(seed, "feeder", name) for name in topology.feeders}
    properties = {p.plot: _id(seed, "property", p.plot) for p in topology.properties}
    heads, head_links, meters, registers, circuits = [], [], [], [], []
    for plan in topology.meters:
        identity = by_index[plan.index]
        meter = meter_id(seed, plan.serial)
        head = _id(seed, "service_head", plan.service_head)
        heads.append((head, plan.service_head, feeders[plan.feeder], plan.phase, plan.fuse_rating))
        if plan.plot is not None:
            head_links.append((properties[plan.plot], head))
        start = from_emop(identity.commissioned_at)
        meters.append(
            (meter, plan.serial, identity.ip_address, plan.name, plan.hardware, esco, site,
             _iso_week(start), head)
        )  # fmt: skip
        for circuit in plan.circuits:
            key = f"{plan.serial}/{circuit.element}"
            register = _id(seed, "register", key)
            registers.append(
                (register, meter, circuit.type, circuit.element, start, circuit.direction_reversed)
            )
            circuits.append(
                (_id(seed, "circuit", key), circuit.type, circuit.name, circuit.rating_amps,
                 register, start)
            )  # fmt: skip
    async with conn.transaction():
        existing = await conn.fetchval("SELECT id FROM flows.escos WHERE code = $1", ESCO_CODE)
        if existing is not None and existing != esco:
            raise FleetConflictError(
                f"ESCO {ESCO_CODE} in this database is not simulated fleet seed {seed}'s "
                "(another --seed, or real data): register into a fresh database"
            )
        await conn.execute(
            "INSERT INTO flows.regions (code, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            *REGION,
        )
        await conn.execute(
            """INSERT INTO flows.escos (id, name, code, region) VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, code = EXCLUDED.code,
                   region = EXCLUDED.region""",
            esco, ESCO_NAME, ESCO_CODE, REGION[0],
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO flows.sites_new (id, name, code, esco, location)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, location = EXCLUDED.location""",
            site, SITE_NAME, SITE_CODE, esco, SITE_LOCATION,
        )  # fmt: skip
        await conn.executemany(
            """INSERT INTO flows.feeder_registry (id, name, esco, substation)
               VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING""",
            [(fid, name, esco, SITE_NAME) for name, fid in feeders.items()],
        )
        await conn.executemany(
            """INSERT INTO flows.service_head_registry (id, name, feeder, phase, fuse_rating, type)
               VALUES ($1, $2, $3, $4, $5, 'network_owned')
               ON CONFLICT (id) DO UPDATE SET feeder = EXCLUDED.feeder, phase = EXCLUDED.phase,
                   fuse_rating = EXCLUDED.fuse_rating""",
            heads,
        )
        await conn.executemany(
            """INSERT INTO flows.properties (id, plot, site, address, type)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (id) DO UPDATE SET plot = EXCLUDED.plot, site = EXCLUDED.site,
                   address = EXCLUDED.address, type = EXCLUDED.type""",
            [(properties[p.plot], p.plot, site, p.address, p.type) for p in topology.properties],
        )
        await conn.executemany(
            """INSERT INTO flows.properties_service_head (property, service_head) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            head_links,
        )
        taken_over = await conn.fetchval(
            """WITH freed AS (
                   UPDATE flows.meter_registry SET ip_address = NULL
                   WHERE ip_address = ANY ($1::inet[]) AND id <> ALL ($2::uuid[])
                   RETURNING 1)
               SELECT count(*) FROM freed""",
            [row[2] for row in meters],
            [row[0] for row in meters],
        )
        await conn.executemany(
            """INSERT INTO flows.meter_registry
                   (id, serial, ip_address, name, hardware, mode, esco, site,
                    installation_status, commissioned_iso_week_date)
               VALUES ($1, $2, $3::inet, $4, $5, 'active', $6, $7, 'enabled', $8)
               ON CONFLICT (id) DO UPDATE SET
                   serial = EXCLUDED.serial, ip_address = EXCLUDED.ip_address,
                   name = EXCLUDED.name, hardware = EXCLUDED.hardware, mode = 'active',
                   esco = EXCLUDED.esco, site = EXCLUDED.site""",
            [row[:8] for row in meters],
        )
        await conn.executemany(
            """INSERT INTO flows.service_head_meter (service_head, meter) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            [(row[8], row[0]) for row in meters],
        )
        await conn.executemany(
            """INSERT INTO flows.meter_registers
                   (register_id, meter_id, nature, element, start_time, direction_reversed)
               VALUES ($1, $2, $3::flows.register_nature_enum,
                       $4::flows.meter_register_element, $5, $6)
               ON CONFLICT (register_id) DO UPDATE SET nature = EXCLUDED.nature,
                   direction_reversed = EXCLUDED.direction_reversed""",
            registers,
        )
        await conn.executemany(
            """INSERT INTO flows.circuits (id, type, name, site, rating_amps)
               VALUES ($1, $2::flows.circuit_type_enum, $3, $4, $5)
               ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, name = EXCLUDED.name,
                   site = EXCLUDED.site, rating_amps = EXCLUDED.rating_amps""",
            [(cid, kind, name, site, rating) for cid, kind, name, rating, _, _ in circuits],
        )
        await conn.executemany(
            """INSERT INTO flows.circuit_register (circuit, register, start_time)
               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
            [(cid, register, start) for cid, _, _, _, register, start in circuits],
        )
    return RegistrationReport(
        ESCO_CODE, len(meters), len(registers), len(circuits), len(properties), taken_over
    )
