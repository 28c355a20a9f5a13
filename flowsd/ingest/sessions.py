"""Per-meter session state and the daemon's heartbeat, for operators (``flowsd status``).

The engine's per-meter detail stays out of Prometheus (no per-meter labels). Instead the
:class:`SessionTracker` keeps one compact row per meter in memory, updated at every poll
outcome and failed request, and :func:`flush` upserts the rows that changed since the last
flush in one statement (every ``[daemon] state_flush_seconds``, never per request), together
with this daemon's row in ``flowsd.daemon_heartbeat``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import msgspec

from flowsd import __version__
from flowsd.ingest import metrics
from flowsd.meters.observations import ReadFailure, SessionOutcome


@dataclass(slots=True)
class SessionRow:
    """One meter's row of ``flowsd.meter_session_state``."""

    meter_id: UUID
    serial: str | None
    online: bool = True
    consecutive_failures: int = 0
    last_poll_at: datetime | None = None
    last_poll_seconds: float | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    offline_since: datetime | None = None
    polls: int = 0
    failed_polls: int = 0


@dataclass
class SessionTracker:
    """In-memory rows plus the set of meters whose row changed since the last flush."""

    rows: dict[UUID, SessionRow] = field(default_factory=dict)
    dirty: set[UUID] = field(default_factory=set)

    def _row(self, meter_id: UUID, serial: str | None) -> SessionRow:
        row = self.rows.get(meter_id)
        if row is None:
            row = self.rows[meter_id] = SessionRow(meter_id, serial)
        self.dirty.add(meter_id)
        return row

    def poll_finished(self, outcome: SessionOutcome) -> None:
        row = self._row(outcome.meter_id, outcome.serial)
        row.serial = outcome.serial
        row.online = outcome.online
        row.consecutive_failures = outcome.consecutive_failures
        row.last_poll_at = outcome.read_at
        row.last_poll_seconds = outcome.duration_seconds
        row.polls += 1
        if outcome.ok:
            row.last_success_at = outcome.read_at
        else:
            row.failed_polls += 1
            row.last_failure_at = outcome.read_at
            reason = outcome.reason or "failed"
            row.last_error = f"{reason}: {outcome.detail}" if outcome.detail else reason
        if not outcome.online and row.offline_since is None:
            row.offline_since = outcome.read_at
        elif outcome.online:
            row.offline_since = None

    def read_failed(self, failure: ReadFailure) -> None:
        row = self._row(failure.meter_id, failure.serial)
        row.last_failure_at = failure.read_at
        row.last_error = f"{failure.object_name}: {failure.reason}: {failure.detail}"

    def forget(self, meter_id: UUID) -> None:
        self.rows.pop(meter_id, None)
        self.dirty.discard(meter_id)

    def take_dirty(self) -> list[SessionRow]:
        taken = [self.rows[m] for m in self.dirty if m in self.rows]
        self.dirty = set()
        return taken

    def counts(self) -> tuple[int, int]:
        """(online, offline) among the meters seen so far."""
        online = sum(1 for row in self.rows.values() if row.online)
        return online, len(self.rows) - online


class Heartbeat(msgspec.Struct, kw_only=True):
    """This daemon's row of ``flowsd.daemon_heartbeat``."""

    instance: str
    started_at: datetime
    meters: int = 0
    online: int = 0
    offline: int = 0
    queue_depth: int = 0
    spilled_events: int = 0
    events_appended: int = 0
    database_up: bool = True
    status: str = "starting"
    stopped: bool = False


_UPSERT_ROWS = """
INSERT INTO flowsd.meter_session_state AS s
    (meter_id, serial, online, consecutive_failures, last_poll_at, last_poll_seconds,
     last_success_at, last_failure_at, last_error, offline_since, polls, failed_polls,
     instance, updated_at)
SELECT r.*, $13, now()
FROM unnest($1::uuid[], $2::text[], $3::boolean[], $4::integer[], $5::timestamptz[],
            $6::real[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::timestamptz[],
            $11::bigint[], $12::bigint[]) AS r
ON CONFLICT (meter_id) DO UPDATE SET
    serial = EXCLUDED.serial, online = EXCLUDED.online,
    consecutive_failures = EXCLUDED.consecutive_failures, last_poll_at = EXCLUDED.last_poll_at,
    last_poll_seconds = EXCLUDED.last_poll_seconds, last_success_at = EXCLUDED.last_success_at,
    last_failure_at = EXCLUDED.last_failure_at, last_error = EXCLUDED.last_error,
    offline_since = EXCLUDED.offline_since, polls = EXCLUDED.polls,
    failed_polls = EXCLUDED.failed_polls, instance = EXCLUDED.instance, updated_at = now()
"""

_UPSERT_HEARTBEAT = """
INSERT INTO flowsd.daemon_heartbeat AS h
    (instance, pid, version, started_at, heartbeat_at, stopped_at, meters, online, offline,
     queue_depth, spilled_events, events_appended, database_up, status)
VALUES ($1, $2, $3, $4, now(), CASE WHEN $5 THEN now() END, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (instance) DO UPDATE SET
    pid = EXCLUDED.pid, version = EXCLUDED.version, started_at = EXCLUDED.started_at,
    heartbeat_at = now(), stopped_at = EXCLUDED.stopped_at, meters = EXCLUDED.meters,
    online = EXCLUDED.online, offline = EXCLUDED.offline, queue_depth = EXCLUDED.queue_depth,
    spilled_events = EXCLUDED.spilled_events, events_appended = EXCLUDED.events_appended,
    database_up = EXCLUDED.database_up, status = EXCLUDED.status
"""


async def load_rows(conn: asyncpg.Connection, meter_ids: list[UUID]) -> dict[UUID, SessionRow]:
    """Stored rows of these meters (counters continue across restarts)."""
    rows = await conn.fetch(
        "SELECT * FROM flowsd.meter_session_state WHERE meter_id = ANY($1::uuid[])", meter_ids
    )
    return {
        row["meter_id"]: SessionRow(
            meter_id=row["meter_id"],
            serial=row["serial"],
            online=row["online"],
            consecutive_failures=row["consecutive_failures"],
            last_poll_at=row["last_poll_at"],
            last_poll_seconds=row["last_poll_seconds"],
            last_success_at=row["last_success_at"],
            last_failure_at=row["last_failure_at"],
            last_error=row["last_error"],
            offline_since=row["offline_since"],
            polls=row["polls"],
            failed_polls=row["failed_polls"],
        )
        for row in rows
    }


async def flush(conn: asyncpg.Connection, tracker: SessionTracker, heartbeat: Heartbeat) -> int:
    """Upsert the changed rows and the heartbeat in one transaction; returns rows written.

    On failure the rows are marked changed again, so the next flush retries them.
    """
    rows = tracker.take_dirty()
    try:
        async with conn.transaction():
            if rows:
                await conn.execute(
                    _UPSERT_ROWS,
                    [r.meter_id for r in rows],
                    [r.serial for r in rows],
                    [r.online for r in rows],
                    [r.consecutive_failures for r in rows],
                    [r.last_poll_at for r in rows],
                    [r.last_poll_seconds for r in rows],
                    [r.last_success_at for r in rows],
                    [r.last_failure_at for r in rows],
                    [r.last_error for r in rows],
                    [r.offline_since for r in rows],
                    [r.polls for r in rows],
                    [r.failed_polls for r in rows],
                    heartbeat.instance,
                )
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
            )
    except BaseException:
        tracker.dirty.update(r.meter_id for r in rows)
        metrics.SESSION_STATE_ERRORS.inc()
        raise
    metrics.SESSION_STATE_WRITES.inc(len(rows))
    return len(rows)


def utc_now() -> datetime:
    return datetime.now(UTC)
