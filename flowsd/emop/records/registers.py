"""Register reads of elements A and B: four cumulative u32le registers (Wh / varh)."""

from __future__ import annotations

import struct

from flowsd.emop.records.base import PackedRecord
from flowsd.emop.units import kwh

_LAYOUT = struct.Struct("<4I")


class Registers(PackedRecord, frozen=True):
    """``read_element_a`` / ``read_element_b``."""

    import_active: int
    export_active: int
    import_reactive: int
    export_reactive: int
    layout, what = _LAYOUT, "register read"

    def kwh(self) -> dict[str, float]:
        """The four registers in kWh (kvarh for the reactive ones)."""
        return {
            "import_active": kwh(self.import_active),
            "export_active": kwh(self.export_active),
            "import_reactive": kwh(self.import_reactive),
            "export_reactive": kwh(self.export_reactive),
        }
