"""Meters by name: serial to id for commands, id to serial for log lines.

Operators know meters by serial (``EML2137580826``), the log and the tables by UUID. Every
command that names a meter takes either (:func:`find_meter`), and every log line about a
meter carries its serial next to its id; code that holds only ids asks :func:`serials_of`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from flowsd.errors import UserError


@dataclass(frozen=True)
class MeterName:
    """One meter of ``flows.meter_registry``."""

    meter_id: uuid.UUID
    serial: str | None

    def __str__(self) -> str:
        return self.serial or str(self.meter_id)


async def find_meter(conn: asyncpg.Connection, text: str) -> MeterName:
    """The meter whose serial (case-insensitive) or id is ``text``; a :class:`UserError`
    when there is none."""
    wanted = text.strip()
    try:
        meter_id: uuid.UUID | None = uuid.UUID(wanted)
    except ValueError:
        meter_id = None
    if meter_id is not None:
        row = await conn.fetchrow(
            "SELECT id, serial FROM flows.meter_registry WHERE id = $1", meter_id
        )
    else:
        rows = await conn.fetch(
            "SELECT id, serial FROM flows.meter_registry WHERE upper(serial) = upper($1)",
            wanted,
        )
        # Serials are unique; two spellings differing only in case would be ambiguous.
        exact = [r for r in rows if r["serial"] == wanted]
        row = exact[0] if exact else (rows[0] if len(rows) == 1 else None)
    if row is None:
        raise UserError(f"no meter with serial or id {text!r} in flows.meter_registry")
    return MeterName(row["id"], row["serial"])


async def serials_of(
    conn: asyncpg.Connection, meter_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str | None]:
    """Serial of each of ``meter_ids`` (None for a meter without one or not registered)."""
    ids = list(set(meter_ids))
    found: dict[uuid.UUID, str | None] = dict.fromkeys(ids)
    if ids:
        rows = await conn.fetch(
            "SELECT id, serial FROM flows.meter_registry WHERE id = ANY($1::uuid[])", ids
        )
        found.update({row["id"]: row["serial"] for row in rows})
    return found
