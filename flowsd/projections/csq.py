"""``meter_csq``: every signal-quality read (CSQ 0-31) at its observation time.

A failed poll is history of health (``meter_health_history``), not a CSQ row: the offline
views look for the newest non-NULL CSQ, so a NULL row would add nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowsd.events.types import RecordedEvent, SignalQualityRead
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


class CsqProjection(RowTableProjection):
    name = "meter_csq"
    table = "flows.meter_csq"
    key = ("meter_id", "timestamp")
    values = ("csq",)
    sql_types = ("uuid", "timestamptz", "integer")
    event_types = frozenset({SignalQualityRead.TYPE_ID})
    unique_by_event = True

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        found: list[Row] = [
            (e.position, (e.meter_id, e.observed_at, e.body.csq))
            for e in events
            if isinstance(e.body, SignalQualityRead)
        ]
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        return f"""
SELECT e.position, e.meter_id, e."timestamp", (e.payload ->> 'csq')::integer
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""
