"""What a meter's hardware name says about reading it, decided in one place.

The name comes from ``flows.meter_registry.hardware`` (``C1.w``, ``EMA1.w``, ``B1.w``,
``P1.ax``, ``P1.cx``, production's ``AX``/``CX``) or, for a meter whose row has none yet, from
its answer to ``hardware_version`` (a NAK means three-phase: ``THREE_PHASE_UNKNOWN``). A
:class:`Hardware` value carries the consequences: the poll plan's family, how many register
elements the meter has (element B on twin-element C1.w meters, which also use the wide
profile-log-2 layout) and the scale of three-phase totals (0.1 Wh counts on CT-operated
meters). The daemon, the ingest mapping and the simulator all ask it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import msgspec

HardwareFamily = Literal["single_phase", "three_phase"]

THREE_PHASE_NAMES = frozenset({"P1.ax", "P1.cx", "AX", "CX", "THREE_PHASE_UNKNOWN"})
TWIN_ELEMENT_NAMES = frozenset({"C1.w"})
CT_OPERATED_NAMES = frozenset({"P1.cx", "CX"})


class Hardware(msgspec.Struct, frozen=True):
    """One hardware name and what follows from it (see the module docstring)."""

    name: str
    family: HardwareFamily
    elements: int  # register elements: 2 (A and B) on twin-element meters, else 1
    counts_per_kwh: int  # three-phase totals: counts per kWh (Wh, or 0.1 Wh if CT-operated)

    @property
    def three_phase(self) -> bool:
        return self.family == "three_phase"

    @property
    def twin_element(self) -> bool:
        return self.elements == 2

    @staticmethod
    def named(name: str) -> Hardware:
        """The hardware a (non-empty) name stands for; unknown names are single-phase."""
        return _named(name)


@lru_cache(maxsize=1024)
def _named(name: str) -> Hardware:
    return Hardware(
        name=name,
        family="three_phase" if name in THREE_PHASE_NAMES else "single_phase",
        elements=2 if name in TWIN_ELEMENT_NAMES else 1,
        counts_per_kwh=10_000 if name in CT_OPERATED_NAMES else 1000,
    )


def hardware_of(name: str | None) -> Hardware | None:
    """The hardware of a registry value; None while it is not known (NULL or empty)."""
    return _named(name) if name else None
