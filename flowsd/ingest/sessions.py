"""Per-meter session state and the daemon's heartbeat, for operators (``flowsd status``).

The engine's per-meter detail stays out of Prometheus (no per-meter labels). Instead the
:class:`SessionTracker` keeps one compact row per meter in memory, updated at every poll
outcome and failed request, and :func:`flush` upserts the rows that changed since the last
flush in one statement (every ``[daemon] state_flush_seconds``, never per request), together
with this daemon's row in ``flowsd.daemon_heartbeat``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from flowsd import __version__
from flowsd.meters.observations import CommandOutcome, ReadFailure, SessionOutcome
from flowsd.meters.sharing import held_id_objects, shared_text


@dataclass(slots=True)
class SessionRow:
    """One meter's row of ``flowsd.meter_session_state``.

    ``online`` only once the meter has answered; ``answered_at`` is the last time it answered
    anything (None: never, as far as flowsd knows); ``not_dialled`` the reason flowsd does not
    dial this active meter at all (no or an unusable address, a duplicate), else None.
    """

    meter_id: UUID
    serial: str | None
    online: bool = False
    consecutive_failures: int = 0
    last_poll_at: datetime | None = None
    last_poll_seconds: float | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    offline_since: datetime | None = None
    polls: int = 0
    failed_polls: int = 0
    answered_at: datetime | None = None
    not_dialled: str | None = None


@dataclass
class SessionTracker:
    """In-memory rows plus the set of meters whose row changed since the last flush."""

    rows: dict[UUID, SessionRow] = field(default_factory=dict)
    dirty: set[UUID] = field(default_factory=set)
    rows_written: int = 0  # rows upserted by flush()
    write_errors: int = 0  # failed flushes (their rows stay dirty)

    def _row(self, meter_id: UUID, serial: str | None) -> SessionRow:
        row = self.rows.get(meter_id)
        if row is None:
            row = self.rows[meter_id] = SessionRow(meter_id, serial)
        self.dirty.add(meter_id)
        return row

    def poll_finished(self, outcome: SessionOutcome) -> None:
        row = self._row(outcome.meter_id, outcome.serial)
        row.serial = outcome.serial
        row.not_dialled = None
        row.online = outcome.online
        row.consecutive_failures = outcome.consecutive_failures
        if outcome.kind != "commands":  # a run of commands only is not a poll
            row.last_poll_at = outcome.read_at
            row.last_poll_seconds = outcome.duration_seconds
            row.polls += 1
        if outcome.ok or outcome.requests > outcome.failed_requests:
            row.answered_at = outcome.read_at
        if outcome.ok:
            row.last_success_at = outcome.read_at
        else:
            row.failed_polls += outcome.kind != "commands"
            row.last_failure_at = outcome.read_at
            reason = outcome.reason or "failed"
            row.last_error = f"{reason}: {outcome.detail}" if outcome.detail else reason
        if outcome.offline and row.offline_since is None:
            row.offline_since = outcome.read_at
        elif not outcome.offline:
            row.offline_since = None

    def read_failed(self, failure: ReadFailure) -> None:
        row = self._row(failure.meter_id, failure.serial)
        row.last_failure_at = failure.read_at
        row.last_error = f"{failure.object_name}: {failure.reason}: {failure.detail}"

    def command_failed(self, outcome: CommandOutcome) -> None:
        row = self._row(outcome.meter_id, outcome.serial)
        row.last_failure_at = outcome.read_at
        what = outcome.nak or outcome.reason or "failed"
        row.last_error = f"command {outcome.operation}: {what}: {outcome.detail}"

    def not_dialled(self, meter_id: UUID, serial: str | None, reason: str) -> None:
        """An active meter flowsd does not dial, and why (shown by ``flowsd status``)."""
        row = self.rows.get(meter_id)
        if row is not None and row.not_dialled == reason and row.serial == serial:
            return
        row = self._row(meter_id, serial)
        row.serial = serial
        row.not_dialled = reason
        row.online = False
        row.offline_since = None

    def forget(self, meter_id: UUID) -> None:
        self.rows.pop(meter_id, None)
        self.dirty.discard(meter_id)

    def take_dirty(self) -> list[SessionRow]:
        taken = [self.rows[m] for m in self.dirty if m in self.rows]
        self.dirty = set()
        return taken


class Heartbeat(msgspec.Struct, kw_only=True):
    """This daemon's row of ``flowsd.daemon_heartbeat``."""

    instance: str
    started_at: datetime
    meters: int
    online: int
    offline: int
    never_answered: int
    queue_depth: int
    spilled_events: int
    events_appended: int
    database_up: bool
    status: str
    stopped: bool


# SessionRow's fields are the table's columns; their SQL types, for the unnest() arrays.
_SQL_TYPES = {
    "meter_id": "uuid",
    "serial": "text",
    "online": "boolean",
    "consecutive_failures": "integer",
    "last_poll_at": "timestamptz",
    "last_poll_seconds": "real",
    "last_success_at": "timestamptz",
    "last_failure_at": "timestamptz",
    "last_error": "text",
    "offline_since": "timestamptz",
    "polls": "bigint",
    "failed_polls": "bigint",
    "answered_at": "timestamptz",
    "not_dialled": "text",
}
_COLUMNS = tuple(f.name for f in fields(SessionRow))
_UPSERT_ROWS = f"""
INSERT INTO flowsd.meter_session_state AS s ({", ".join(_COLUMNS)}, instance, updated_at)
SELECT r.*, ${len(_COLUMNS) + 1}, now()
FROM unnest({", ".join(f"${i}::{_SQL_TYPES[c]}[]" for i, c in enumerate(_COLUMNS, 1))}) AS r
ON CONFLICT (meter_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS[1:], "instance"))}, updated_at = now()
"""

_UPSERT_HEARTBEAT = """
INSERT INTO flowsd.daemon_heartbeat AS h
    (instance, pid, version, started_at, heartbeat_at, stopped_at, meters, online, offline,
     queue_depth, spilled_events, events_appended, database_up, status, never_answered)
VALUES ($1, $2, $3, $4, now(), CASE WHEN $5 THEN now() END, $6, $7, $8, $9, $10, $11, $12, $13,
        $14)
ON CONFLICT (instance) DO UPDATE SET
    pid = EXCLUDED.pid, version = EXCLUDED.version, started_at = EXCLUDED.started_at,
    heartbeat_at = now(), stopped_at = EXCLUDED.stopped_at, meters = EXCLUDED.meters,
    online = EXCLUDED.online, offline = EXCLUDED.offline,
    never_answered = EXCLUDED.never_answered, queue_depth = EXCLUDED.queue_depth,
    spilled_events = EXCLUDED.spilled_events, events_appended = EXCLUDED.events_appended,
    database_up = EXCLUDED.database_up, status = EXCLUDED.status
"""


async def load_rows(conn: asyncpg.Connection, meter_ids: list[UUID]) -> dict[UUID, SessionRow]:
    """Stored rows of these meters (counters continue across restarts), keyed by and holding
    the caller's id objects (not second copies from the database)."""
    rows = await conn.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM flowsd.meter_session_state "
        "WHERE meter_id = ANY($1::uuid[])",
        meter_ids,
    )
    same = held_id_objects(meter_ids)
    found: dict[UUID, SessionRow] = {}
    for row in rows:
        stored = dict(row)
        meter_id = stored["meter_id"] = same(row["meter_id"])
        stored["serial"] = shared_text(row["serial"])
        found[meter_id] = SessionRow(**stored)
    return found


async def flush(conn: asyncpg.Connection, tracker: SessionTracker, heartbeat: Heartbeat) -> int:
    """Upsert the changed rows and the heartbeat in one transaction; returns rows written.

    On failure the rows are marked changed again, so the next flush retries them.
    """
    rows = tracker.take_dirty()
    try:
        async with conn.transaction():
            if rows:
                columns = ([getattr(r, c) for r in rows] for c in _COLUMNS)
                await conn.execute(_UPSERT_ROWS, *columns, heartbeat.instance)
            await conn.execute(
                _UPSERT_HEARTBEAT,
                heartbeat.instance,
                os.getpid(),
                __version__,
                heartbeat.started_at,
                heartbeat.stopped,
                heartbeat.meters,
                heartbeat.online,
                heartbeat.offline,
                heartbeat.queue_depth,
                heartbeat.spilled_events,
                heartbeat.events_appended,
                heartbeat.database_up,
                heartbeat.status,
                heartbeat.never_answered,
            )
    except BaseException:
        tracker.dirty.update(r.meter_id for r in rows)
        tracker.write_errors += 1
        raise
    tracker.rows_written += len(rows)
    return len(rows)
