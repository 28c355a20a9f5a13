"""``meter_prepay_balance``: every balance read, at its observation time.

One row per :class:`~flowsd.events.types.BalanceRead` (balance and emergency credit in GBP,
exact decimals; negative balances are debt). State-change events repeat a read's value and
are not history of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowsd.events.types import BalanceRead, RecordedEvent
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


class PrepayBalanceProjection(RowTableProjection):
    name = "meter_prepay_balance"
    table = "flows.meter_prepay_balance"
    key = ("meter_id", "timestamp")
    values = ("balance", "emergency_credit")
    sql_types = ("uuid", "timestamptz", "numeric", "numeric")
    event_types = frozenset({BalanceRead.TYPE_ID})
    unique_by_event = True

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        found: list[Row] = []
        for e in events:
            if isinstance(e.body, BalanceRead):
                values = (
                    e.meter_id,
                    e.observed_at,
                    e.body.balance_gbp,
                    e.body.emergency_credit_gbp,
                )
                found.append((e.position, values))
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        return f"""
SELECT e.position, e.meter_id, e."timestamp", (e.payload ->> 'balance_gbp')::numeric,
       (e.payload ->> 'emergency_credit_gbp')::numeric
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""
