"""What the daemon reads from the database before it polls a meter.

* :func:`load_meter_states`: the change detector's last known state per meter. The base is
  the registry and shadow (serial, hardware, firmware, flags, balance: what production's sync
  jobs left there), overlaid by the newest state-change event of each kind in the log, which
  carries the value flowsd last saw.
* :func:`load_resume`: where the engine resumes per meter: the newest stored profile record
  of each log, the meter event-log cursor (the newest stored entry's second and the entries
  at it), and whether the meter was offline when the daemon stopped.

Each is two set-based statements per chunk of meters, probing the log's per-meter index
``(meter_id, event_type, timestamp)`` (migrations 30 and 100; it leaves routine readings out,
so every query states its predicate). A stored state change
whose payload does not decode is logged, counted (:attr:`MeterStates.unreadable`) and left out
of the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec
import structlog

from flowsd.events import types
from flowsd.events.codec import decode_body, decode_payload
from flowsd.events.store import METER_INDEX_PREDICATE
from flowsd.events.types import body_class_for
from flowsd.ingest.detector import MeterState
from flowsd.meters.eventlog import cursor_from_entries
from flowsd.meters.sharing import held_id_objects, shared_text
from flowsd.meters.target import MeterResume

log = structlog.get_logger("flowsd.ingest")

_CHUNK = 2000

_REGISTRY = """
SELECT r.id, r.serial, r.hardware, r.firmware_version, r.prepay_enabled,
       r.daylight_savings_correction_enabled AS dst, s.balance, s.health
FROM flows.meter_registry r
LEFT JOIN flows.meter_shadows s ON s.id = r.id
WHERE r.id = ANY($1::uuid[])
"""

_LATEST_OF_TYPES = f"""
SELECT m.id AS meter_id, t.type AS event_type, e."timestamp", e.payload::text AS payload
FROM unnest($1::uuid[]) AS m(id)
CROSS JOIN unnest($2::integer[]) AS t(type)
CROSS JOIN LATERAL (
    SELECT l."timestamp", l.payload FROM flows.meter_event_log l
    WHERE l.meter_id = m.id AND l.event_type = t.type AND l.{METER_INDEX_PREDICATE}
    ORDER BY l."timestamp" DESC, l.position DESC
    LIMIT 1
) AS e
"""

_NEWEST_NATIVE_ENTRIES = f"""
SELECT m.id AS meter_id, l."timestamp", l.event_type, l.event_set
FROM unnest($1::uuid[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT max(x."timestamp") AS newest FROM flows.meter_event_log x
    WHERE x.meter_id = m.id AND x.event_type BETWEEN 1 AND $2 AND x.{METER_INDEX_PREDICATE}
) AS n
JOIN flows.meter_event_log l
  ON l.meter_id = m.id AND l."timestamp" = n.newest AND l.event_type BETWEEN 1 AND $2
     AND l.{METER_INDEX_PREDICATE}
"""

_STATE_TYPES = [
    cls.TYPE_ID
    for cls in (
        types.BalanceChanged,
        types.FutureTariffChanged,
        types.TariffActivated,
        types.MeterWentOffline,
        types.MeterCameOnline,
        types.HealthChanged,
        types.FirmwareChanged,
        types.HardwareChanged,
        types.SerialChanged,
        types.PrepayModeChanged,
        types.ClockDriftThresholdCrossed,
        types.DaylightSavingsCorrectionChanged,
    )
]
_RESUME_TYPES = [
    types.ProfileLog1Record.TYPE_ID,
    types.ProfileLog2Record.TYPE_ID,
    types.ThreePhaseIntervalRecord.TYPE_ID,
    types.MeterWentOffline.TYPE_ID,
    types.MeterCameOnline.TYPE_ID,
]


def _chunks(ids: Sequence[UUID]) -> list[list[UUID]]:
    return [list(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]


class MeterStates(NamedTuple):
    """The seed, and how many stored state changes were left out of it as unreadable."""

    states: dict[UUID, MeterState]
    unreadable: int


_UNREADABLE = object()


def _body(meter_id: UUID, serial: str | None, type_id: int, payload: str | None) -> object:
    """The stored body; :data:`_UNREADABLE` (logged) when its payload does not decode, so the
    state it carried is unknown and the next reading reports a change from the older one."""
    cls = body_class_for(type_id)
    if cls is None or payload is None:
        return decode_body(type_id, None, payload)
    try:
        return decode_payload(cls, payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning(
            "stored state change unreadable; not seeded",
            meter_serial=serial,
            meter_id=str(meter_id),
            event_type=type_id,
            error=str(exc),
        )
        return _UNREADABLE


def _apply(state: MeterState, body: object) -> MeterState:
    """``state`` with the value a stored state-change event carries."""
    match body:
        case types.BalanceChanged():
            return replace(state, balance=body.balance_gbp)
        case types.FutureTariffChanged():
            return replace(state, future_tariff=body.tariff)
        case types.TariffActivated():
            return replace(state, active_tariff=body.tariff)
        case types.HealthChanged():
            return replace(state, health=body.health)
        case types.FirmwareChanged():
            return replace(state, firmware=body.firmware_version)
        case types.HardwareChanged():
            return replace(state, hardware=body.hardware)
        case types.SerialChanged():
            return replace(state, serial=body.serial)
        case types.PrepayModeChanged():
            return replace(state, prepay_enabled=body.prepay_enabled)
        case types.ClockDriftThresholdCrossed():
            return replace(state, drift_above=body.above)
        case types.DaylightSavingsCorrectionChanged():
            return replace(state, dst_correction=body.enabled)
    return state


async def load_meter_states(conn: asyncpg.Connection, meter_ids: Sequence[UUID]) -> MeterStates:
    """The change detector's seed for these meters (see the module docstring), keyed by the
    caller's id objects (not second copies from the database)."""
    same = held_id_objects(meter_ids)
    states: dict[UUID, MeterState] = {}
    unreadable = 0
    for chunk in _chunks(meter_ids):
        for row in await conn.fetch(_REGISTRY, chunk):
            states[same(row["id"])] = MeterState(
                serial=shared_text(row["serial"]),
                hardware=shared_text(row["hardware"]),
                firmware=shared_text(row["firmware_version"]),
                prepay_enabled=row["prepay_enabled"],
                dst_correction=row["dst"],
                balance=row["balance"],
                health=row["health"],
            )
        online_at: dict[UUID, tuple[datetime, bool]] = {}
        for row in await conn.fetch(_LATEST_OF_TYPES, chunk, _STATE_TYPES):
            meter_id, at = same(row["meter_id"]), row["timestamp"]
            state = states.get(meter_id) or MeterState()
            body = _body(meter_id, state.serial, row["event_type"], row["payload"])
            if body is _UNREADABLE:
                unreadable += 1
                body = None
            if isinstance(body, types.MeterWentOffline | types.MeterCameOnline):
                online = isinstance(body, types.MeterCameOnline)
                if meter_id not in online_at or at > online_at[meter_id][0]:
                    online_at[meter_id] = (at, online)
                continue
            states[meter_id] = _apply(state, body)
        for meter_id, (at, online) in online_at.items():
            state = states.get(meter_id) or MeterState()
            states[meter_id] = replace(state, online=online, offline_since=None if online else at)
    return MeterStates(states, unreadable)


async def load_resume(
    conn: asyncpg.Connection, meter_ids: Sequence[UUID]
) -> dict[UUID, MeterResume]:
    """The engine's resume point for each of these meters (absent: start fresh)."""
    found: dict[UUID, dict[str, Any]] = {}
    for chunk in _chunks(meter_ids):
        online_at: dict[UUID, tuple[datetime, bool]] = {}
        for row in await conn.fetch(_LATEST_OF_TYPES, chunk, _RESUME_TYPES):
            meter_id, type_id, at = row["meter_id"], row["event_type"], row["timestamp"]
            fields = found.setdefault(meter_id, {})
            if type_id == types.ProfileLog1Record.TYPE_ID:
                fields["profile_log_1_last"] = at
            elif type_id == types.ProfileLog2Record.TYPE_ID:
                fields["profile_log_2_last"] = at
            elif type_id == types.ThreePhaseIntervalRecord.TYPE_ID:
                fields["three_phase_interval_last"] = at
            else:
                online = type_id == types.MeterCameOnline.TYPE_ID
                if online:
                    fields["answered"] = True  # it answered at least once
                if meter_id not in online_at or at > online_at[meter_id][0]:
                    online_at[meter_id] = (at, online)
        for meter_id, (at, online) in online_at.items():
            if not online:
                found.setdefault(meter_id, {})["offline_since"] = at
        entries: dict[UUID, list[tuple[datetime, int, int]]] = {}
        native_max = types.NATIVE_TYPE_ID_MAX
        for row in await conn.fetch(_NEWEST_NATIVE_ENTRIES, chunk, native_max):
            entries.setdefault(row["meter_id"], []).append(
                (row["timestamp"], row["event_type"], row["event_set"] or 0)
            )
        for meter_id, rows in entries.items():
            found.setdefault(meter_id, {})["event_log"] = cursor_from_entries(rows)
    return {meter_id: MeterResume(**fields) for meter_id, fields in found.items()}
