"""Per-meter time series: one row per reading, at its observation time.

``meter_prepay_balance``, ``meter_voltage``, ``meter_3p_voltage`` and ``meter_csq`` differ only
in their source events and columns, so each is declared by a table and a column -> (body
attribute, SQL type) map. The attribute is also the payload key (the codec writes fields by
name), so the live path (``getattr``) and the rebuild (``payload ->> key``) read the same field;
a source without the attribute gives NULL in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from flowsd.events.types import (
    BalanceRead,
    EventBody,
    MeterWentOffline,
    RecordedEvent,
    SignalQualityRead,
    ThreePhaseVoltageRead,
    VoltageRead,
)
from flowsd.projections.registers import Lookup, RegisterRef
from flowsd.projections.rows import Row, RowTableProjection, latest_per_key, log_range


class SeriesProjection(RowTableProjection):
    key = ("meter_id", "timestamp")
    sources: ClassVar[tuple[type[EventBody], ...]]
    fields: ClassVar[Mapping[str, tuple[str, str]]]  # column -> (body attribute, SQL type)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.values = tuple(cls.fields)
        cls.sql_types = ("uuid", "timestamptz", *(sql for _, sql in cls.fields.values()))
        cls.event_types = frozenset(source.TYPE_ID for source in cls.sources)
        # One source type: its idempotency key (meter, type, time) is the row key.
        cls.unique_by_event = len(cls.sources) == 1

    def rows(
        self, events: Sequence[RecordedEvent], registers: dict[Lookup, RegisterRef]
    ) -> list[Row]:
        attributes = [attribute for attribute, _ in self.fields.values()]
        found: list[Row] = [
            (
                e.position,
                (e.meter_id, e.observed_at, *(getattr(e.body, a, None) for a in attributes)),
            )
            for e in events
            if isinstance(e.body, self.sources)
        ]
        return latest_per_key(found, 2)

    def select_sql(self) -> str:
        values = ", ".join(
            f"(e.payload ->> '{attribute}')::{sql}" for attribute, sql in self.fields.values()
        )
        return f"""
SELECT e.position, e.meter_id, e."timestamp", {values}
FROM flows.meter_event_log e
WHERE {log_range(types=self.event_types)}"""


class PrepayBalanceProjection(SeriesProjection):
    """Every balance read (GBP, exact decimals; negative balances are debt). State-change
    events repeat a read's value and are not history of their own."""

    name = "meter_prepay_balance"
    table = "flows.meter_prepay_balance"
    sources = (BalanceRead,)
    fields: ClassVar[Mapping[str, tuple[str, str]]] = {
        "balance": ("balance_gbp", "numeric"),
        "emergency_credit": ("emergency_credit_gbp", "numeric"),
    }


class VoltageProjection(SeriesProjection):
    """Single-phase voltage (volts). The column is ``real``: both paths hand PostgreSQL the
    exact decimal and let it round once."""

    name = "meter_voltage"
    table = "flows.meter_voltage"
    sources = (VoltageRead,)
    fields: ClassVar[Mapping[str, tuple[str, str]]] = {"voltage": ("voltage_v", "numeric")}


class ThreePhaseVoltageProjection(SeriesProjection):
    """Three-phase voltage (volts; a phase not read is NULL)."""

    name = "meter_3p_voltage"
    table = "flows.meter_3p_voltage"
    sources = (ThreePhaseVoltageRead,)
    fields: ClassVar[Mapping[str, tuple[str, str]]] = {
        "voltage_l1": ("l1_v", "numeric"),
        "voltage_l2": ("l2_v", "numeric"),
        "voltage_l3": ("l3_v", "numeric"),
    }


class CsqProjection(SeriesProjection):
    """Signal quality (0-31), and a NULL row when the meter goes offline, as production writes
    one with every CSQ it sets in the shadow (SCHEMA-NOTES §3.8): ``meter_shadows.csq`` is
    nulled by the same event. The offline views only look at non-NULL rows."""

    name = "meter_csq"
    table = "flows.meter_csq"
    sources = (SignalQualityRead, MeterWentOffline)
    fields: ClassVar[Mapping[str, tuple[str, str]]] = {"csq": ("csq", "integer")}
