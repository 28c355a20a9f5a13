"""``meter_shadows``: the latest known state of each meter, from its readings and changes.

Columns and their sources (the last event by position wins within each group):

==============================================  ============================================
``balance``, ``balance_updated_at``             BalanceRead, BalanceChanged (GBP, observed at)
``emergency_credit``                            BalanceRead
``csq``                                         SignalQualityRead; NULL on MeterWentOffline
``voltage`` / ``3p_voltage_l1..3``              VoltageRead / ThreePhaseVoltageRead (volts)
``clock_time_diff_seconds``, ``..._synced_at``  ClockRead: |drift| rounded, read time
``import_a``, ``export_a`` / ``_b``             RegisterRead per element (kWh); three-phase
                                                totals go to ``_a``
``tariffs_active`` / ``tariffs_future``         tariff reads and TariffActivated /
                                                FutureTariffChanged (production JSON)
``backlight``, ``load_switch``                  their reads (production setting names)
``health``, ``health_details``                  HealthChanged, MeterWentOffline (error text),
                                                MeterCameOnline
``last_healthy_at``                             when the meter last answered: the read time of
                                                any reading, or a change back to healthy
``updated_at``                                  newest observation time of the events above
==============================================  ============================================

Rows are created by ``meter_registry``'s trigger; this projection only updates them. A full
rebuild clears the columns above that no event sets, and keeps ``created_at`` and
``emnify_connectivity_status`` (not derived from events).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from flowsd.events.types import (
    ActiveTariffRead,
    BacklightRead,
    BalanceChanged,
    BalanceRead,
    ClockRead,
    FlagsRead,
    FutureTariffChanged,
    FutureTariffRead,
    HealthChanged,
    IdentityRead,
    LoadSwitchRead,
    MeterCameOnline,
    MeterWentOffline,
    RecordedEvent,
    RegisterRead,
    SignalQualityRead,
    TariffActivated,
    ThreePhaseRegisterRead,
    ThreePhaseVoltageRead,
    VoltageRead,
)
from flowsd.projections.base import type_of
from flowsd.projections.patches import PatchProjection
from flowsd.projections.tariffs import active_tariff_json, future_tariff_json

NUMERIC = "({})::numeric"
REAL = "({})::numeric::real"
TIME = "({})::timestamptz"
TEXT = "{}"

CASTS: dict[str, str] = {
    "balance": NUMERIC,
    "balance_updated_at": TIME,
    "emergency_credit": NUMERIC,
    "csq": "({})::integer",
    "voltage": NUMERIC,
    "3p_voltage_l1": REAL,
    "3p_voltage_l2": REAL,
    "3p_voltage_l3": REAL,
    "clock_time_diff_seconds": "({})::integer",
    "clock_time_diff_synced_at": TIME,
    "import_a": REAL,
    "export_a": REAL,
    "import_b": REAL,
    "export_b": REAL,
    "tariffs_active": "nullif({json}, 'null'::jsonb)",
    "tariffs_future": "nullif({json}, 'null'::jsonb)",
    "backlight": TEXT,
    "load_switch": TEXT,
    "health": "({})::flows.health_check_status",
    "health_details": TEXT,
    "last_healthy_at": TIME,
}

# Groups each event type sets, except the payload-dependent ones (RegisterRead's element,
# HealthChanged's health) handled in both contributions() and groups_sql().
_GROUPS: dict[int, tuple[str, ...]] = {
    BalanceRead.TYPE_ID: ("balance", "emergency_credit", "healthy"),
    BalanceChanged.TYPE_ID: ("balance",),
    SignalQualityRead.TYPE_ID: ("csq", "healthy"),
    MeterWentOffline.TYPE_ID: ("csq", "health"),
    VoltageRead.TYPE_ID: ("voltage", "healthy"),
    ThreePhaseVoltageRead.TYPE_ID: ("voltage_3p", "healthy"),
    ClockRead.TYPE_ID: ("clock", "healthy"),
    ThreePhaseRegisterRead.TYPE_ID: ("registers_a", "healthy"),
    ActiveTariffRead.TYPE_ID: ("tariffs_active", "healthy"),
    TariffActivated.TYPE_ID: ("tariffs_active",),
    FutureTariffRead.TYPE_ID: ("tariffs_future", "healthy"),
    FutureTariffChanged.TYPE_ID: ("tariffs_future",),
    IdentityRead.TYPE_ID: ("healthy",),
    FlagsRead.TYPE_ID: ("healthy",),
    BacklightRead.TYPE_ID: ("backlight", "healthy"),
    LoadSwitchRead.TYPE_ID: ("load_switch", "healthy"),
    MeterCameOnline.TYPE_ID: ("health", "healthy"),
}


def _kwh(count: int | None, per_kwh: int) -> Decimal | None:
    return None if count is None else Decimal(count) / Decimal(per_kwh)


def drift_seconds(drift: float) -> int:
    """|drift| to the nearest second (halves away from zero), from the float's shortest text."""
    return int(Decimal(repr(drift)).copy_abs().quantize(Decimal(1), rounding=ROUND_HALF_UP))


class ShadowsProjection(PatchProjection):
    name = "meter_shadows"
    table = "flows.meter_shadows"
    values = tuple(CASTS)
    casts = CASTS
    tracks_updated_at = True
    reset_unset = True
    event_types = frozenset({*_GROUPS, RegisterRead.TYPE_ID, HealthChanged.TYPE_ID})

    def contributions(self, event: RecordedEvent) -> dict[str, dict[str, Any]]:
        body = event.body
        at = event.observed_at
        found: dict[str, dict[str, Any]] = {}
        if isinstance(body, BalanceRead):
            found["balance"] = {"balance": body.balance_gbp, "balance_updated_at": at}
            found["emergency_credit"] = {"emergency_credit": body.emergency_credit_gbp}
        elif isinstance(body, BalanceChanged):
            found["balance"] = {"balance": body.balance_gbp, "balance_updated_at": at}
        elif isinstance(body, SignalQualityRead):
            found["csq"] = {"csq": body.csq}
        elif isinstance(body, MeterWentOffline):
            found["csq"] = {"csq": None}
            found["health"] = {"health": "unhealthy", "health_details": body.last_error}
        elif isinstance(body, VoltageRead):
            found["voltage"] = {"voltage": body.voltage_v}
        elif isinstance(body, ThreePhaseVoltageRead):
            found["voltage_3p"] = {
                "3p_voltage_l1": body.l1_v,
                "3p_voltage_l2": body.l2_v,
                "3p_voltage_l3": body.l3_v,
            }
        elif isinstance(body, ClockRead):
            found["clock"] = {
                "clock_time_diff_seconds": drift_seconds(body.drift_seconds),
                "clock_time_diff_synced_at": at,
            }
        elif isinstance(body, RegisterRead):
            suffix = "b" if body.element == "B" else "a"
            found[f"registers_{suffix}"] = {
                f"import_{suffix}": _kwh(body.import_active_wh, 1000),
                f"export_{suffix}": _kwh(body.export_active_wh, 1000),
            }
        elif isinstance(body, ThreePhaseRegisterRead):
            found["registers_a"] = {
                "import_a": _kwh(body.active_import, body.counts_per_kwh),
                "export_a": _kwh(body.active_export, body.counts_per_kwh),
            }
        elif isinstance(body, ActiveTariffRead | TariffActivated):
            found["tariffs_active"] = {"tariffs_active": active_tariff_json(body.tariff)}
        elif isinstance(body, FutureTariffRead | FutureTariffChanged):
            found["tariffs_future"] = {"tariffs_future": future_tariff_json(body.tariff)}
        elif isinstance(body, BacklightRead):
            found["backlight"] = {"backlight": body.setting}
        elif isinstance(body, LoadSwitchRead):
            found["load_switch"] = {"load_switch": body.setting}
        elif isinstance(body, MeterCameOnline):
            found["health"] = {"health": "healthy", "health_details": ""}
        elif isinstance(body, HealthChanged):
            found["health"] = {"health": body.health, "health_details": body.details}
        if isinstance(body, HealthChanged | MeterCameOnline):
            if isinstance(body, MeterCameOnline) or body.health == "healthy":
                found["healthy"] = {"last_healthy_at": at}
        elif "healthy" in _GROUPS.get(type_of(event), ()) or isinstance(body, RegisterRead):
            found["healthy"] = {"last_healthy_at": event.read_at or at}
        return found

    def groups_sql(self) -> str:
        cases = "\n".join(
            f"    WHEN {type_id} THEN ARRAY[{', '.join(repr(g) for g in groups)}]"
            for type_id, groups in sorted(_GROUPS.items())
        )
        return f"""(CASE e.event_type
{cases}
    WHEN {RegisterRead.TYPE_ID} THEN ARRAY[CASE WHEN e.payload ->> 'element' = 'B'
                                    THEN 'registers_b' ELSE 'registers_a' END, 'healthy']
    WHEN {HealthChanged.TYPE_ID} THEN CASE WHEN e.payload ->> 'health' = 'healthy'
                                   THEN ARRAY['health', 'healthy'] ELSE ARRAY['health'] END
    ELSE ARRAY[]::text[] END)"""
