"""Shared test helpers: a migrated database, meters to hang events on, sample events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from flowsd.events.types import BalanceRead, Event, MeterLogEntry, RegisterRead

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


async def create_meters(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    """``count`` rows in meter_registry (the event log's foreign key)."""
    ids = [uuid.uuid4() for _ in range(count)]
    await conn.execute(
        "INSERT INTO flows.meter_registry (id, serial) "
        "SELECT id, 'EML' || left(id::text, 8) FROM unnest($1::uuid[]) AS id",
        ids,
    )
    return ids


def balance_event(meter_id: uuid.UUID, n: int) -> Event:
    """A distinct reading for each ``n`` (observed ``n`` seconds after BASE_TIME)."""
    moment = BASE_TIME + timedelta(seconds=n)
    return Event(
        meter_id=meter_id,
        observed_at=moment,
        read_at=moment + timedelta(milliseconds=250),
        body=BalanceRead(balance_gbp=Decimal(n) / 100, emergency_credit_gbp=Decimal("15")),
    )


def register_event(meter_id: uuid.UUID, n: int, element: str = "A") -> Event:
    moment = BASE_TIME + timedelta(seconds=n)
    return Event(
        meter_id=meter_id,
        observed_at=moment,
        read_at=moment,
        body=RegisterRead(
            element="A" if element == "A" else "B",
            import_active_wh=1000 + n,
            export_active_wh=n,
        ),
    )


def native_event(meter_id: uuid.UUID, n: int, emlite_type: int = 33, event_set: int = 1) -> Event:
    moment = BASE_TIME + timedelta(seconds=n)
    return Event(
        meter_id=meter_id,
        observed_at=moment,
        read_at=moment + timedelta(minutes=5),
        body=MeterLogEntry(emlite_type_id=emlite_type, event_set=event_set),
    )
