"""Builders of engine observations for the ingest tests (no sockets needed)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from flowsd.emop import by_name
from flowsd.emop.records import Record
from flowsd.events import types
from flowsd.meters import observations as obs

METER = uuid.UUID(int=42)
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(name: str, record: Record, t: float = 0.0, meter: uuid.UUID = METER) -> obs.Reading:
    return obs.Reading(
        meter_id=meter,
        serial="EML0000000001",
        read_at=at(t),
        object_name=name,
        object_id=by_name(name).id,
        record=record,
        latency_seconds=0.01,
    )


def outcome(
    *,
    ok: bool,
    online: bool,
    t: float = 0.0,
    requests: int = 1,
    failed: int = 0,
    failures: int = 0,
    reason: obs.FailureReason | None = None,
    detail: str = "",
    meter: uuid.UUID = METER,
) -> obs.SessionOutcome:
    return obs.SessionOutcome(
        meter_id=meter,
        serial="EML0000000001",
        read_at=at(t),
        kind="poll",
        cadences=("hourly",),
        ok=ok,
        reason=reason,
        detail=detail,
        requests=requests,
        failed_requests=failed,
        consecutive_failures=failures,
        state="online" if online else "offline",
        duration_seconds=0.5,
    )


def event(body: types.AnyBody, t: float = 0.0, meter: uuid.UUID = METER) -> types.Event:
    return types.Event(meter_id=meter, observed_at=at(t), read_at=at(t), body=body)


def bodies(events: Sequence[types.Event]) -> list[types.AnyBody]:
    return [e.body for e in events]


def of_type(events: Sequence[types.Event], kind: type[types.EventBody]) -> list[types.Event]:
    return [e for e in events if isinstance(e.body, kind)]
