"""Register reads of elements A and B: four cumulative u32le registers (Wh / varh)."""

from __future__ import annotations

import struct
from typing import Self

from flowsd.emop.records.base import Record, pack, unpack
from flowsd.emop.units import kwh

_LAYOUT = struct.Struct("<4I")


class Registers(Record, frozen=True):
    """``read_element_a`` / ``read_element_b``."""

    import_active: int
    export_active: int
    import_reactive: int
    export_reactive: int

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(*unpack(_LAYOUT, payload, "register read"))

    def encode(self) -> bytes:
        values = (self.import_active, self.export_active, self.import_reactive)
        return pack(_LAYOUT, "register read", *values, self.export_reactive)

    def kwh(self) -> dict[str, float]:
        """The four registers in kWh (kvarh for the reactive ones)."""
        return {
            "import_active": kwh(self.import_active),
            "export_active": kwh(self.export_active),
            "import_reactive": kwh(self.import_reactive),
            "export_reactive": kwh(self.export_reactive),
        }
