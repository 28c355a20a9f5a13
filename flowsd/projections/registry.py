"""``meter_registry``: the identity columns meters report about themselves.

Only ``hardware``, ``firmware_version``, ``serial``, ``prepay_enabled`` and
``daylight_savings_correction_enabled`` are written, each from the latest (by position)
:class:`~flowsd.events.types.IdentityRead` / :class:`~flowsd.events.types.FlagsRead` field that
was read (a field not read in a poll sets nothing) or the matching change event. The registry
belongs to operators: a column no event ever set keeps its value, rows are updated in place
(also by ``flowsd replay``), and a row is only written when a value actually changes.
"""

from __future__ import annotations

from typing import Any

from flowsd.events.types import (
    DaylightSavingsCorrectionChanged,
    FirmwareChanged,
    FlagsRead,
    HardwareChanged,
    IdentityRead,
    PrepayModeChanged,
    RecordedEvent,
    SerialChanged,
)
from flowsd.projections.patches import PatchProjection

CASTS: dict[str, str] = {
    "hardware": "{}",
    "firmware_version": "{}",
    "serial": "{}",
    "prepay_enabled": "({})::boolean",
    "daylight_savings_correction_enabled": "({})::boolean",
}


class RegistryProjection(PatchProjection):
    name = "meter_registry"
    table = "flows.meter_registry"
    values = tuple(CASTS)
    casts = CASTS
    event_types = frozenset(
        {
            IdentityRead.TYPE_ID,
            FlagsRead.TYPE_ID,
            HardwareChanged.TYPE_ID,
            FirmwareChanged.TYPE_ID,
            SerialChanged.TYPE_ID,
            PrepayModeChanged.TYPE_ID,
            DaylightSavingsCorrectionChanged.TYPE_ID,
        }
    )

    def contributions(self, event: RecordedEvent) -> dict[str, dict[str, Any]]:
        body = event.body
        found: dict[str, Any] = {}
        if isinstance(body, IdentityRead):
            found = {
                "hardware": body.hardware,
                "firmware_version": body.firmware_version,
                "serial": body.serial,
            }
        elif isinstance(body, FlagsRead):
            found = {
                "prepay_enabled": body.prepay_enabled,
                "daylight_savings_correction_enabled": body.daylight_savings_correction_enabled,
            }
        elif isinstance(body, HardwareChanged):
            found = {"hardware": body.hardware}
        elif isinstance(body, FirmwareChanged):
            found = {"firmware_version": body.firmware_version}
        elif isinstance(body, SerialChanged):
            found = {"serial": body.serial}
        elif isinstance(body, PrepayModeChanged):
            found = {"prepay_enabled": body.prepay_enabled}
        elif isinstance(body, DaylightSavingsCorrectionChanged):
            found = {"daylight_savings_correction_enabled": body.enabled}
        return {column: {column: value} for column, value in found.items() if value is not None}

    def groups_sql(self) -> str:
        def when_read(*columns: str) -> str:
            items = ", ".join(
                f"CASE WHEN e.payload ->> '{c}' IS NOT NULL THEN '{c}' END" for c in columns
            )
            return f"array_remove(ARRAY[{items}], NULL)"

        return f"""(CASE e.event_type
    WHEN {IdentityRead.TYPE_ID} THEN {when_read("hardware", "firmware_version", "serial")}
    WHEN {FlagsRead.TYPE_ID} THEN {
            when_read("prepay_enabled", "daylight_savings_correction_enabled")
        }
    WHEN {HardwareChanged.TYPE_ID} THEN ARRAY['hardware']
    WHEN {FirmwareChanged.TYPE_ID} THEN ARRAY['firmware_version']
    WHEN {SerialChanged.TYPE_ID} THEN ARRAY['serial']
    WHEN {PrepayModeChanged.TYPE_ID} THEN ARRAY['prepay_enabled']
    WHEN {DaylightSavingsCorrectionChanged.TYPE_ID}
        THEN ARRAY['daylight_savings_correction_enabled']
    ELSE ARRAY[]::text[] END)"""
