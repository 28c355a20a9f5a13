"""``meter_3p_voltage``: three-phase voltage reads (volts; a phase not read is NULL)."""

from __future__ import annotations

from collections.abc import Sequence

from flowsd.events.types import RecordedEvent, ThreePhaseVoltageRead
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


class ThreePhaseVoltageProjection(RowTableProjection):
    name = "meter_3p_voltage"
    table = "flows.meter_3p_voltage"
    key = ("meter_id", "timestamp")
    values = ("voltage_l1", "voltage_l2", "voltage_l3")
    sql_types = ("uuid", "timestamptz", "numeric", "numeric", "numeric")
    event_types = frozenset({ThreePhaseVoltageRead.TYPE_ID})
    unique_by_event = True

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        found: list[Row] = []
        for e in events:
            if isinstance(e.body, ThreePhaseVoltageRead):
                b = e.body
                found.append((e.position, (e.meter_id, e.observed_at, b.l1_v, b.l2_v, b.l3_v)))
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        return f"""
SELECT e.position, e.meter_id, e."timestamp", (e.payload ->> 'l1_v')::numeric,
       (e.payload ->> 'l2_v')::numeric, (e.payload ->> 'l3_v')::numeric
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""
