"""``flowsd status``: fleet, daemon and projector state, read from the database.

Works whether or not a daemon is running (it reads what the daemons persist: the heartbeat
rows and the per-meter session state, written every few seconds), so an operator sees per-meter
detail without Prometheus: online/offline counts, the meters that never answered (shown apart:
a meter is online only once it has answered), the active meters flowsd does not dial and why
(no or an unusable address, a second row for one device), the slowest meters, the last error
of each failing meter, the appender queue and the projectors' lag behind the event log, and
which daemon's connection runs each projection (the backend pid holding its advisory lock,
:mod:`flowsd.projections.leadership`).
With several daemons sharing the fleet (migration 110), the lease holders: each daemon's
lease heartbeat, whether it is live, and its share (meters whose lease it holds), and the
meters nobody holds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg

from flowsd.commands import add_command
from flowsd.commands.output import print_json
from flowsd.commands.run import add_common_arguments, database_url, load
from flowsd.db.connect import close_quietly, connect
from flowsd.db.urls import redact
from flowsd.errors import UserError
from flowsd.events.reader import head_position
from flowsd.projections.leadership import holders

# Session-state rows of active meters (removed or passive meters keep their last row).
_ACTIVE = "JOIN flows.meter_registry r ON r.id = s.meter_id AND r.mode = 'active'"
_POLLED = f"{_ACTIVE} AND s.not_dialled IS NULL"

# A heartbeat older than this (seconds) means the daemon is gone (it writes every few seconds).
STALE_AFTER_SECONDS = 60


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "status", "fleet and projector state, from the database", __doc__
    )
    add_common_arguments(parser)
    parser.add_argument("--top", type=int, default=10, metavar="N", help="meters per list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    with database_url(config) as url:
        report = asyncio.run(
            gather(url, top=args.top, connect_timeout=config.database.connect_timeout_seconds)
        )
    if args.json:
        print_json(report)
    else:
        sys.stdout.write(render(report, redact(url)))
    return 0


async def gather(url: str, *, top: int = 10, connect_timeout: float = 10.0) -> dict[str, Any]:
    """Everything ``flowsd status`` shows, as plain data."""
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        exists = await conn.fetchval("SELECT to_regclass('flowsd.meter_session_state') IS NOT NULL")
        if not exists:
            raise UserError("the database has no flowsd schema yet: run `flowsd migrate`")
        return await _gather(conn, top)
    finally:
        await close_quietly(conn)


async def _gather(conn: asyncpg.Connection, top: int) -> dict[str, Any]:
    now: datetime = await conn.fetchval("SELECT now()")
    daemons = [
        dict(row)
        for row in await conn.fetch(
            """SELECT instance, pid, version, started_at, heartbeat_at, stopped_at, meters,
                      online, offline, never_answered, queue_depth, spilled_events,
                      events_appended, database_up, status
               FROM flowsd.daemon_heartbeat ORDER BY heartbeat_at DESC"""
        )
    ]
    for daemon in daemons:
        age = (now - daemon["heartbeat_at"]).total_seconds()
        daemon["heartbeat_age_seconds"] = round(age, 1)
        if daemon["stopped_at"] is not None:
            daemon["state"] = "stopped"
        else:
            daemon["state"] = "running" if age <= STALE_AFTER_SECONDS else "not responding"
    counts = await conn.fetchrow(
        f"""SELECT count(*) AS meters, count(*) FILTER (WHERE online) AS online,
                  count(*) FILTER (WHERE NOT online AND offline_since IS NOT NULL) AS offline,
                  count(*) FILTER (WHERE answered_at IS NULL) AS never_answered,
                  count(*) FILTER (WHERE NOT online AND offline_since IS NULL)
                      AS awaiting_first_answer
           FROM flowsd.meter_session_state s {_POLLED}"""
    )
    registry = await conn.fetchval(
        "SELECT count(*) FROM flows.meter_registry WHERE mode = 'active'"
    )
    not_dialled = [
        dict(row)
        for row in await conn.fetch(
            f"""SELECT meter_id, s.serial, s.not_dialled AS reason
               FROM flowsd.meter_session_state s {_ACTIVE}
               WHERE s.not_dialled IS NOT NULL
               ORDER BY s.serial NULLS LAST, meter_id"""
        )
    ]
    unseen = await conn.fetchval(
        """SELECT count(*) FROM flows.meter_registry r
           WHERE r.mode = 'active' AND NOT EXISTS (
               SELECT FROM flowsd.meter_session_state s WHERE s.meter_id = r.id)"""
    )
    slowest = [
        dict(row)
        for row in await conn.fetch(
            f"""SELECT meter_id, s.serial, last_poll_seconds, last_poll_at
               FROM flowsd.meter_session_state s {_POLLED}
               WHERE last_poll_seconds IS NOT NULL
               ORDER BY last_poll_seconds DESC LIMIT $1""",
            top,
        )
    ]
    failing = [
        dict(row)
        for row in await conn.fetch(
            f"""SELECT meter_id, s.serial, online, consecutive_failures, offline_since,
                      last_failure_at, last_success_at, last_error,
                      answered_at IS NULL AS never_answered
               FROM flowsd.meter_session_state s {_POLLED}
               WHERE offline_since IS NOT NULL OR consecutive_failures > 0
               ORDER BY online, consecutive_failures DESC, last_failure_at DESC NULLS LAST
               LIMIT $1""",
            top,
        )
    ]
    head = await head_position(conn)
    rows = await conn.fetch(
        "SELECT name, position, updated_at FROM flowsd.projector_checkpoint ORDER BY name"
    )
    run_by = await holders(conn, [row["name"] for row in rows])
    projectors = [
        {"name": row["name"], "position": row["position"], "lag_events": head - row["position"],
         "updated_at": row["updated_at"], "run_by_backend": run_by.get(row["name"])}
        for row in rows
    ]  # fmt: skip
    leases = await _leases(conn)
    return {
        "at": now,
        "daemons": daemons,
        "leases": leases,
        "registry_meters": registry,
        "meters": dict(counts)
        if counts
        else {
            "meters": 0,
            "online": 0,
            "offline": 0,
            "never_answered": 0,
            "awaiting_first_answer": 0,
        },
        "not_dialled": not_dialled,
        "not_seen_by_a_daemon": unseen,
        "slowest": slowest,
        "failing": failing,
        "event_log_head": head,
        "projectors": projectors,
    }


_LEASE_HOLDERS = """
SELECT d.name, d.host, d.pid, d.started_at, d.heartbeat_at, d.lease_seconds, d.stopped_at,
       d.stopped_at IS NULL AND d.heartbeat_at > now() - make_interval(secs => d.lease_seconds)
           AS live,
       count(l.meter_id) FILTER (WHERE l.expires_at > now()) AS meters,
       count(l.meter_id) FILTER (WHERE l.expires_at <= now()) AS expired
FROM flowsd.daemon d LEFT JOIN flowsd.meter_lease l ON l.daemon = d.name
GROUP BY d.name ORDER BY d.name
"""
_UNHELD = """
SELECT count(*) FROM flows.meter_registry r
LEFT JOIN flowsd.meter_lease l ON l.meter_id = r.id
WHERE r.mode = 'active' AND r.ip_address IS NOT NULL
  AND (l.daemon IS NULL OR l.expires_at <= now())
"""


async def _leases(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """The lease holders and their shares (None before migration 110)."""
    if not await conn.fetchval("SELECT to_regclass('flowsd.meter_lease') IS NOT NULL"):
        return None
    return {
        "daemons": [dict(row) for row in await conn.fetch(_LEASE_HOLDERS)],
        "unheld": await conn.fetchval(_UNHELD),
    }


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def render(report: dict[str, Any], where: str) -> str:
    """The text form of :func:`gather`'s report."""
    now: datetime = report["at"] or datetime.now(UTC)
    lines = [f"flowsd status of {where}"]
    if not report["daemons"]:
        lines.append("daemons: none has run against this database")
    for d in report["daemons"]:
        lines.append(
            f"daemon {d['instance']}: {d['state']} (pid {d['pid']}, flowsd {d['version']}, "
            f"heartbeat {_ago(d['heartbeat_at'], now)})"
        )
        database = "up" if d["database_up"] else "DOWN"
        never = f" ({d['never_answered']} never answered)" if d["never_answered"] else ""
        lines.append(
            f"  meters {d['online']}/{d['meters']} online{never}, queue {d['queue_depth']}, "
            f"spilled {d['spilled_events']}, events appended {d['events_appended']}, "
            f"database {database}"
        )
    leases = report.get("leases")
    if leases and leases["daemons"]:
        live = sum(1 for d in leases["daemons"] if d["live"])
        lines.append(f"leases: {live} live daemons share the fleet; {leases['unheld']} unheld")
        for d in leases["daemons"]:
            state = "live" if d["live"] else ("stopped" if d["stopped_at"] else "silent")
            expired = f", {d['expired']} expired" if d["expired"] else ""
            lines.append(
                f"  {d['name']} on {d['host']} (pid {d['pid']}): {state}, "
                f"heartbeat {_ago(d['heartbeat_at'], now)}, lease {d['lease_seconds']:g} s, "
                f"holds {d['meters']} meters{expired}"
            )
    m = report["meters"]
    lines.append(
        f"meters: {report['registry_meters']} active in the registry; {m['meters']} polled, "
        f"{m['online']} online, {m['offline']} offline, "
        f"{m['awaiting_first_answer']} waiting for a first answer; "
        f"{m['never_answered']} never answered; {len(report['not_dialled'])} not dialled"
    )
    if report["not_seen_by_a_daemon"]:
        lines.append(f"  {report['not_seen_by_a_daemon']} active meters not seen by a daemon yet")
    if report["not_dialled"]:
        lines.append("not dialled (fix the registry row):")
        for row in report["not_dialled"]:
            lines.append(f"  {row['serial'] or row['meter_id']}  {row['reason']}")
    if report["slowest"]:
        lines.append("slowest meters (duration of the last poll):")
        for row in report["slowest"]:
            lines.append(f"  {row['serial'] or row['meter_id']}  {row['last_poll_seconds']:.1f}s")
    if report["failing"]:
        lines.append("failing meters:")
        for row in report["failing"]:
            if row["offline_since"] is not None:
                state = f"offline since {_ago(row['offline_since'], now)}"
            else:
                state = "online" if row["online"] else "waiting for a first answer"
            if row["never_answered"]:
                state += ", never answered"
            lines.append(
                f"  {row['serial'] or row['meter_id']}  {state}, "
                f"{row['consecutive_failures']} consecutive failures, "
                f"last error {_ago(row['last_failure_at'], now)}: {row['last_error']}"
            )
    lines.append(f"event log head: position {report['event_log_head']}")
    if report["projectors"]:
        for p in report["projectors"]:
            pid = p["run_by_backend"]
            by = f"run by the daemon of backend {pid}" if pid else "run by no daemon"
            lines.append(
                f"projector {p['name']}: position {p['position']}, "
                f"lag {p['lag_events']} events, {by}"
            )
    else:
        lines.append("projectors: none has run")
    return "\n".join(lines) + "\n"
