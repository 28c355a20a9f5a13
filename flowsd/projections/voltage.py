"""``meter_voltage``: single-phase voltage reads (volts) at their observation time.

The column is ``real``; both paths hand PostgreSQL the exact decimal and let it round once.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowsd.events.types import RecordedEvent, VoltageRead
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


class VoltageProjection(RowTableProjection):
    name = "meter_voltage"
    table = "flows.meter_voltage"
    key = ("meter_id", "timestamp")
    values = ("voltage",)
    sql_types = ("uuid", "timestamptz", "numeric")
    event_types = frozenset({VoltageRead.TYPE_ID})
    unique_by_event = True

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        found: list[Row] = [
            (e.position, (e.meter_id, e.observed_at, e.body.voltage_v))
            for e in events
            if isinstance(e.body, VoltageRead)
        ]
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        return f"""
SELECT e.position, e.meter_id, e."timestamp", (e.payload ->> 'voltage_v')::numeric
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""
