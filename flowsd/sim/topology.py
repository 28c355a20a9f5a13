"""Where each simulated meter sits in the Flows topology, as the documentation describes it.

A simulated fleet is the documentation's example community: ESCO ``WLCE`` ('Water Lilies
Community Energy') with one site, Water Lilies in Bristol, whose properties (plots ``WL-01``,
``WL-02``, ...) reach their meters through service heads, and whose circuits (power, heat,
solar) are fed by the meters' registers. The plan is a pure function of the meters'
identities, in fleet order; :mod:`flowsd.sim.register` writes it, tests read it to know what
the documented queries must return. Each meter has one of three roles:

* **supply**: the meter of a property of its own (the next plot), through service head
  ``SH-WL-NN``. A twin-element C1.w has register A on a power circuit and B on a heat circuit
  (the documentation's EML2137580826); any other meter one register (SINGLE) on a power
  circuit. Three-phase supply meters serve commercial units, single-phase ones homes.
* **generation**: a single-element, single-phase meter with solar panels that directly
  follows a supply meter measures that property's panels, through a second service head
  ``SH-WL-NN-2`` (the documentation's "multiple meters per property"). Its register is SINGLE
  with ``direction_reversed``: the meter's export, the panels' output, is the solar circuit's
  energy.
* **communal**: the fleet's first three-phase meter supplies the site's shared areas (service
  head ``SH-WL-COMMUNAL``, a power circuit) and belongs to no property: the documentation's
  "meters without properties".

Names follow production's conventions where the documentation gives none: meters
``WLCE.Plot-01.C`` (supply) and ``WLCE.Plot-01.G`` (generation), circuits ``<meter>-power``,
``-heat``, ``-solar``, feeders ``WLCE Feeder 1`` (50 meters each). Addresses are invented.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from flowsd.sim.identity import MeterIdentity

ESCO_CODE = "WLCE"
ESCO_NAME = "Water Lilies Community Energy"
REGION = ("south_west", "South West")
SITE_CODE = "WL"
SITE_NAME = "Water Lilies"
SITE_LOCATION = "Bristol"
METERS_PER_FEEDER = 50


class Role(enum.StrEnum):
    SUPPLY = "supply"
    GENERATION = "generation"
    COMMUNAL = "communal"


@dataclass(frozen=True, slots=True)
class CircuitPlan:
    """One register of a meter and the circuit it feeds (circuit type = register nature)."""

    element: str  # A, B or SINGLE
    type: str  # power, heat or solar
    direction_reversed: bool
    name: str
    rating_amps: int


@dataclass(frozen=True, slots=True)
class PropertyPlan:
    plot: str
    address: str
    type: str  # residential or commercial


@dataclass(frozen=True, slots=True)
class MeterPlan:
    index: int
    serial: str
    hardware: str
    role: Role
    name: str
    plot: str | None  # None: communal
    service_head: str
    phase: int
    fuse_rating: int
    feeder: str
    circuits: tuple[CircuitPlan, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    properties: tuple[PropertyPlan, ...]
    meters: tuple[MeterPlan, ...]

    @property
    def feeders(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.feeder for m in self.meters))

    def meters_of(self, plot: str) -> list[MeterPlan]:
        return [m for m in self.meters if m.plot == plot]

    def circuits(self) -> list[tuple[MeterPlan, CircuitPlan]]:
        return [(m, c) for m in self.meters for c in m.circuits]


def _circuit(meter_name: str, element: str, kind: str, fuse: int) -> CircuitPlan:
    rating = {"power": fuse, "heat": 32, "solar": 16}[kind]
    return CircuitPlan(element, kind, kind == "solar", f"{meter_name}-{kind}", rating)


def plan_topology(identities: Iterable[MeterIdentity]) -> Topology:
    """The topology of a fleet whose meters are ``identities`` in index order."""
    properties: list[PropertyPlan] = []
    meters: list[MeterPlan] = []
    communal_taken = False
    for identity in identities:
        hardware = identity.hardware
        feeder = f"{ESCO_CODE} Feeder {identity.index // METERS_PER_FEEDER + 1}"
        fuse = 100 if hardware.three_phase else 60
        phase = 3 if hardware.three_phase else 1
        previous = meters[-1] if meters else None
        if (
            identity.solar
            and not hardware.three_phase
            and not hardware.twin_element
            and previous is not None
            and previous.role is Role.SUPPLY
        ):
            assert previous.plot is not None
            number = previous.plot.removeprefix(f"{SITE_CODE}-")
            name = f"{ESCO_CODE}.Plot-{number}.G"
            meters.append(
                MeterPlan(
                    identity.index, identity.serial, hardware.value, Role.GENERATION, name,
                    previous.plot, f"SH-{previous.plot}-2", phase, fuse, feeder,
                    (_circuit(name, "SINGLE", "solar", fuse),),
                )
            )  # fmt: skip
            continue
        if hardware.three_phase and not communal_taken:
            communal_taken = True
            name = f"{ESCO_CODE}.Communal.C"
            meters.append(
                MeterPlan(
                    identity.index, identity.serial, hardware.value, Role.COMMUNAL, name, None,
                    f"SH-{SITE_CODE}-COMMUNAL", phase, fuse, feeder,
                    (_circuit(name, "SINGLE", "power", fuse),),
                )
            )  # fmt: skip
            continue
        number = f"{len(properties) + 1:02d}"
        plot = f"{SITE_CODE}-{number}"
        properties.append(
            PropertyPlan(
                plot,
                f"{len(properties) + 1} Water Lilies Way, {SITE_LOCATION}",
                "commercial" if hardware.three_phase else "residential",
            )
        )
        name = f"{ESCO_CODE}.Plot-{number}.C"
        circuits: tuple[CircuitPlan, ...]
        if hardware.twin_element:
            circuits = (_circuit(name, "A", "power", fuse), _circuit(name, "B", "heat", fuse))
        else:
            circuits = (_circuit(name, "SINGLE", "power", fuse),)
        meters.append(
            MeterPlan(
                identity.index, identity.serial, hardware.value, Role.SUPPLY, name, plot,
                f"SH-{plot}", phase, fuse, feeder, circuits,
            )
        )  # fmt: skip
    return Topology(tuple(properties), tuple(meters))
