"""``register_import`` / ``register_export``: cumulative register reads in kWh.

Sources: :class:`~flowsd.events.types.RegisterRead` (one element, Wh) and
:class:`~flowsd.events.types.ThreePhaseRegisterRead` (meter totals in raw counts, scale
``counts_per_kwh``; booked on the ``A``/``SINGLE`` register). The row goes to the register valid
at the read's time (:mod:`flowsd.projections.registers`); a register with
``direction_reversed`` gets the meter's export as its import and vice versa. Reads with no
matching register are not stored (as production's triggers do).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Literal

from flowsd.events.types import RecordedEvent, RegisterRead, ThreePhaseRegisterRead
from flowsd.projections.registers import (
    Lookup,
    RegisterRef,
    candidate_registers_sql,
)
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range

Direction = Literal["import", "export"]
WH_PER_KWH = 1000


def register_values(event: RecordedEvent) -> tuple[str, int | None, int | None, int] | None:
    """(element, import count, export count, counts per kWh) of a register read."""
    body = event.body
    if isinstance(body, RegisterRead):
        return body.element, body.import_active_wh, body.export_active_wh, WH_PER_KWH
    if isinstance(body, ThreePhaseRegisterRead):
        return "A", body.active_import, body.active_export, body.counts_per_kwh
    return None


class RegisterReadProjection(RowTableProjection):
    key = ("register_id", "timestamp")
    values = ("read",)
    sql_types = ("uuid", "timestamptz", "numeric")
    needs_registers = True
    event_types = frozenset({RegisterRead.TYPE_ID, ThreePhaseRegisterRead.TYPE_ID})

    def __init__(self, direction: Direction) -> None:
        self.direction: Direction = direction
        self.name = f"register_{direction}"
        self.table = f"flows.register_{direction}"

    def register_lookups(self, events: Sequence[RecordedEvent]) -> Iterable[Lookup]:
        for e in events:
            found = register_values(e)
            if found is not None:
                yield (e.meter_id, found[0], e.observed_at)

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        rows: list[Row] = []
        for e in events:
            found = register_values(e)
            if found is None:
                continue
            element, imported, exported, per_kwh = found
            register = registers.get((e.meter_id, element, e.observed_at))
            if register is None:
                continue
            import_side = (self.direction == "import") != register.direction_reversed
            count = imported if import_side else exported
            if count is None:
                continue
            kwh = Decimal(count) / Decimal(per_kwh)
            rows.append((e.position, (register.register_id, e.observed_at, kwh)))
        return latest_per_key(rows, 2)

    def select_sql(self) -> str:
        imported, exported = ("imported", "exported")
        if self.direction == "export":
            imported, exported = exported, imported
        value = f"CASE WHEN reg.direction_reversed THEN r.{exported} ELSE r.{imported} END"
        return f"""
WITH reading AS (
    SELECT e.position, e.meter_id, e."timestamp" AS at,
           CASE WHEN e.event_type = {RegisterRead.TYPE_ID} THEN e.payload ->> 'element'
                ELSE 'A' END AS element,
           CASE WHEN e.event_type = {RegisterRead.TYPE_ID}
                THEN (e.payload ->> 'import_active_wh')::bigint
                ELSE (e.payload ->> 'active_import')::bigint END AS imported,
           CASE WHEN e.event_type = {RegisterRead.TYPE_ID}
                THEN (e.payload ->> 'export_active_wh')::bigint
                ELSE (e.payload ->> 'active_export')::bigint END AS exported,
           CASE WHEN e.event_type = {RegisterRead.TYPE_ID} THEN {WH_PER_KWH}
                ELSE (e.payload ->> 'counts_per_kwh')::bigint END AS per_kwh
    FROM flows.meter_event_log e
    WHERE {log_range(types=self.event_types)}
)
SELECT r.position, reg.register_id, r.at, ({value})::numeric / r.per_kwh
FROM reading r
{candidate_registers_sql("r", "r.element", "r.at")}
  AND ({value}) IS NOT NULL"""
