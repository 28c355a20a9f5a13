"""``meter_health_history``: health transitions at their observation time.

Sources: :class:`~flowsd.events.types.HealthChanged` (health and its details),
:class:`~flowsd.events.types.MeterWentOffline` (unhealthy, the last error as ``reason``) and
:class:`~flowsd.events.types.MeterCameOnline` (healthy). Two of them at the same instant give
one row: the later event wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowsd.events.types import HealthChanged, MeterCameOnline, MeterWentOffline, RecordedEvent
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


def health_of(event: RecordedEvent) -> tuple[str, str | None] | None:
    """(health, reason) an event reports, or None when it says nothing about health."""
    body: Any = event.body
    if isinstance(body, HealthChanged):
        return body.health, body.details or None
    if isinstance(body, MeterWentOffline):
        return "unhealthy", body.last_error or None
    if isinstance(body, MeterCameOnline):
        return "healthy", None
    return None


HEALTH_SQL = f"""CASE e.event_type WHEN {HealthChanged.TYPE_ID} THEN e.payload ->> 'health'
                         WHEN {MeterWentOffline.TYPE_ID} THEN 'unhealthy' ELSE 'healthy' END"""
REASON_SQL = f"""CASE e.event_type
           WHEN {HealthChanged.TYPE_ID} THEN nullif(e.payload ->> 'details', '')
           WHEN {MeterWentOffline.TYPE_ID} THEN nullif(e.payload ->> 'last_error', '') END"""


class HealthHistoryProjection(RowTableProjection):
    name = "meter_health_history"
    table = "flows.meter_health_history"
    key = ("meter_id", "timestamp")
    values = ("health", "reason")
    sql_types = ("uuid", "timestamptz", "flows.health_check_status", "text")
    event_types = frozenset(
        {HealthChanged.TYPE_ID, MeterWentOffline.TYPE_ID, MeterCameOnline.TYPE_ID}
    )

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        found: list[Row] = []
        for e in events:
            health = health_of(e)
            if health is not None:
                found.append((e.position, (e.meter_id, e.observed_at, *health)))
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        return f"""
SELECT e.position, e.meter_id, e."timestamp", ({HEALTH_SQL})::flows.health_check_status,
       {REASON_SQL}
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""
