"""``--register``: the rows a real deployment has for its meters, written for a simulated fleet.

Creates an ESCO, a site, feeders, one service head and property per meter, the meters
(``mode = 'active'``, serial, IP, hardware), their registers (A/B for twin-element meters,
SINGLE otherwise) and one circuit per register. Every id is a UUIDv5 of the fleet's seed and
the row's natural key, and every insert is ``ON CONFLICT DO UPDATE``/``DO NOTHING``, so a
re-run changes nothing and a fleet can be re-registered after a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from flowsd.sim.clock import from_emop
from flowsd.sim.identity import MeterIdentity

_NAMESPACE = uuid.UUID("6f1d1c52-4a53-5bb6-9c0e-2f8f1a4f7d10")
METERS_PER_FEEDER = 50


def _id(seed: int, kind: str, key: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"flowsd-sim/{seed}/{kind}/{key}")


@dataclass(frozen=True, slots=True)
class RegistrationReport:
    """How many rows of each kind the fleet has in the database."""

    esco_code: str
    meters: int
    registers: int
    circuits: int


def esco_code(seed: int) -> str:
    return f"sim{seed}"


def _registers(identity: MeterIdentity) -> list[tuple[str, str]]:
    """(element, nature) of a meter's registers."""
    if identity.hardware.twin_element:
        return [("A", "power"), ("B", "heat")]
    return [("SINGLE", "power")]


async def register_fleet(
    conn: asyncpg.Connection, seed: int, identities: Iterable[MeterIdentity]
) -> RegistrationReport:
    """Insert or refresh the fleet's rows in one transaction (the schema must exist)."""
    code = esco_code(seed)
    esco = _id(seed, "esco", code)
    prefix = f"SIM{seed}"
    site = _id(seed, "site", prefix)
    feeders: dict[int, tuple[uuid.UUID, str]] = {}
    heads, properties, meters, registers, circuits = [], [], [], [], []
    for identity in identities:
        number = identity.index + 1
        feeder_number = identity.index // METERS_PER_FEEDER + 1
        feeder_name = f"{prefix}.Feeder-{feeder_number:03d}"
        feeder = feeders.setdefault(feeder_number, (_id(seed, "feeder", feeder_name), feeder_name))
        name = f"{prefix}.Plot-{number:05d}"
        head = _id(seed, "service_head", name)
        meter = _id(seed, "meter", identity.serial)
        three_phase = identity.hardware.three_phase
        heads.append((head, name, feeder[0], 3 if three_phase else 1, 100 if three_phase else 60))
        properties.append((_id(seed, "property", name), f"Plot-{number:05d}", head))
        meters.append(
            (meter, identity.serial, identity.ip_address, f"{name}.{identity.hardware.value}",
             identity.hardware.value, esco, site, head)
        )  # fmt: skip
        start = from_emop(identity.commissioned_at)
        for element, nature in _registers(identity):
            register = _id(seed, "register", f"{identity.serial}/{element}")
            registers.append((register, meter, nature, element, start))
            circuit = _id(seed, "circuit", f"{identity.serial}/{element}")
            circuits.append((circuit, nature, f"{name}-{nature}", register, start))
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO flows.escos (id, name, code) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, code = EXCLUDED.code""",
            esco, f"Simulated ESCO (seed {seed})", code,
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO flows.sites_new (id, name, code, esco) VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO NOTHING""",
            site, f"Simulated site (seed {seed})", prefix, esco,
        )  # fmt: skip
        await conn.executemany(
            """INSERT INTO flows.feeder_registry (id, name, esco) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO NOTHING""",
            [(fid, fname, esco) for fid, fname in feeders.values()],
        )
        await conn.executemany(
            """INSERT INTO flows.service_head_registry (id, name, feeder, phase, fuse_rating, type)
               VALUES ($1, $2, $3, $4, $5, 'network_owned')
               ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase""",
            heads,
        )
        await conn.executemany(
            """INSERT INTO flows.properties (id, plot) VALUES ($1, $2)
               ON CONFLICT (id) DO NOTHING""",
            [(pid, plot) for pid, plot, _ in properties],
        )
        await conn.executemany(
            """INSERT INTO flows.properties_service_head (property, service_head) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            [(pid, head) for pid, _, head in properties],
        )
        await conn.executemany(
            """INSERT INTO flows.meter_registry
                   (id, serial, ip_address, name, hardware, mode, esco, site)
               VALUES ($1, $2, $3::inet, $4, $5, 'active', $6, $7)
               ON CONFLICT (id) DO UPDATE SET
                   serial = EXCLUDED.serial, ip_address = EXCLUDED.ip_address,
                   hardware = EXCLUDED.hardware, mode = 'active', esco = EXCLUDED.esco""",
            [row[:7] for row in meters],
        )
        await conn.executemany(
            """INSERT INTO flows.service_head_meter (service_head, meter) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            [(row[7], row[0]) for row in meters],
        )
        await conn.executemany(
            """INSERT INTO flows.meter_registers
                   (register_id, meter_id, nature, element, start_time)
               VALUES ($1, $2, $3::flows.register_nature_enum,
                       $4::flows.meter_register_element, $5)
               ON CONFLICT (register_id) DO NOTHING""",
            registers,
        )
        await conn.executemany(
            """INSERT INTO flows.circuits (id, type, name)
               VALUES ($1, $2::flows.circuit_type_enum, $3) ON CONFLICT (id) DO NOTHING""",
            [(cid, nature, cname) for cid, nature, cname, _, _ in circuits],
        )
        await conn.executemany(
            """INSERT INTO flows.circuit_register (circuit, register, start_time)
               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
            [(cid, register, start) for cid, _, _, register, start in circuits],
        )
    return RegistrationReport(code, len(meters), len(registers), len(circuits))
