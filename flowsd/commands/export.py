"""``flowsd export intervals``: half-hourly energy as CSV, by meter or ESCO and settlement day.

Settlement days are days of Europe/London: a day runs from local midnight to local
midnight, so it has 48 half hours, 46 on the day the clocks go forward and 50 on the day
they go back. For every register of the chosen meters (``--meter``, serial or id,
repeatable; ``--esco``, code, name or id, repeatable: all its meters) and every half hour
of the days ``--from`` to ``--to`` (inclusive) there is one row, with empty ``kwh`` and
``export_kwh`` where ``flows.register_interval_hh`` holds nothing, so gaps show::

    serial,meter_id,register_id,element,settlement_date,settlement_period,start_utc,kwh,export_kwh
    EML2137580826,5c1f...,8e0a...,A,2026-03-29,1,2026-03-29T00:00:00Z,0.112,

``settlement_period`` counts the day's half hours from 1; ``start_utc`` is the half hour's
start. Rows are ordered by serial, element, register and time, and streamed from the
database (``COPY``) to stdout or ``--output PATH``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import BinaryIO

import asyncpg
import structlog

from flowsd.commands import add_command
from flowsd.commands.replay import with_connection
from flowsd.commands.run import add_common_arguments
from flowsd.db.meter_names import find_meter
from flowsd.errors import UserError
from flowsd.projections.replay import Connect

log = structlog.get_logger("flowsd.commands.export")

SETTLEMENT_TIME_ZONE = "Europe/London"
MAX_DAYS = 3660

COLUMNS = (
    "serial",
    "meter_id",
    "register_id",
    "element",
    "settlement_date",
    "settlement_period",
    "start_utc",
    "kwh",
    "export_kwh",
)

# $1 meters, $2 first day, $3 last day (dates). Registers whose validity overlaps the days.
_INTERVALS = f"""
WITH span AS (
    SELECT ($2::date)::timestamp AT TIME ZONE '{SETTLEMENT_TIME_ZONE}' AS first_start,
           ($3::date + 1)::timestamp AT TIME ZONE '{SETTLEMENT_TIME_ZONE}' AS after_last
),
slot AS (
    SELECT s AS start_utc,
           (s AT TIME ZONE '{SETTLEMENT_TIME_ZONE}')::date AS settlement_date
    FROM span, generate_series(span.first_start, span.after_last - interval '30 minutes',
                               interval '30 minutes') AS s
),
numbered AS (
    SELECT start_utc, settlement_date,
           row_number() OVER (PARTITION BY settlement_date ORDER BY start_utc) AS period
    FROM slot
),
register AS (
    SELECT m.serial, m.id AS meter_id, g.register_id, g.element
    FROM flows.meter_registry m
    JOIN flows.meter_registers g ON g.meter_id = m.id
    CROSS JOIN span
    WHERE m.id = ANY($1::uuid[])
      AND (g.start_time IS NULL OR g.start_time < span.after_last)
      AND (g.end_time IS NULL OR g.end_time > span.first_start)
)
SELECT r.serial, r.meter_id, r.register_id, r.element, n.settlement_date,
       n.period AS settlement_period,
       to_char(n.start_utc AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS start_utc,
       i.kwh, i.export_kwh
FROM register r
CROSS JOIN numbered n
LEFT JOIN flows.register_interval_hh i
  ON i.register_id = r.register_id AND i."timestamp" = n.start_utc
ORDER BY r.serial, r.element, r.register_id, n.start_utc
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export", help="export read tables (intervals: half hours as CSV)", description=__doc__
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    intervals = add_command(
        kinds,
        "intervals",
        "half hours per register as CSV, by settlement day of Europe/London",
        __doc__,
    )
    intervals.add_argument(
        "--meter", metavar="SERIAL", action="append", default=[], help="serial or id (repeatable)"
    )
    intervals.add_argument(
        "--esco", metavar="CODE", action="append", default=[], help="code, name or id (repeatable)"
    )
    intervals.add_argument("--from", dest="first", metavar="DATE", required=True, help="YYYY-MM-DD")
    intervals.add_argument("--to", dest="last", metavar="DATE", required=True, help="YYYY-MM-DD")
    intervals.add_argument("--output", metavar="PATH", help="write here instead of stdout")
    add_common_arguments(intervals)
    intervals.set_defaults(handler=run_intervals)


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option}: not a date (YYYY-MM-DD): {text!r}") from None


async def _esco_meters(conn: asyncpg.Connection, text: str) -> list[uuid.UUID]:
    try:
        esco_id: uuid.UUID | None = uuid.UUID(text)
    except ValueError:
        esco_id = None
    esco = await conn.fetchval(
        "SELECT id FROM flows.escos WHERE id = $1 OR code = $2 OR name = $2 "
        "ORDER BY (id = $1) DESC, (code = $2) DESC LIMIT 1",
        esco_id,
        text,
    )
    if esco is None:
        raise UserError(f"--esco: no ESCO with code, name or id {text!r} in flows.escos")
    rows = await conn.fetch("SELECT id FROM flows.meter_registry WHERE esco = $1", esco)
    return [row["id"] for row in rows]


async def export_intervals(
    conn: asyncpg.Connection, meter_ids: list[uuid.UUID], first: date, last: date, out: BinaryIO
) -> str:
    """Stream the CSV (header included) to ``out``; returns COPY's status (``COPY <rows>``)."""

    async def write(data: bytes) -> None:
        out.write(data)

    status: str = await conn.copy_from_query(
        _INTERVALS, meter_ids, first, last, output=write, format="csv", header=True
    )
    out.flush()
    return status


def run_intervals(args: argparse.Namespace) -> int:
    first, last = _day(args.first, "--from"), _day(args.last, "--to")
    if last < first:
        raise UserError("--to is before --from")
    if (last - first).days >= MAX_DAYS:
        raise UserError(f"at most {MAX_DAYS} days per export")
    if not args.meter and not args.esco:
        raise UserError("name meters with --meter or --esco")

    async def work(conn: asyncpg.Connection, _more: Connect, out: BinaryIO) -> int:
        meters: dict[uuid.UUID, None] = {}
        for text in args.meter:
            meters[(await find_meter(conn, text)).meter_id] = None
        for text in args.esco:
            meters.update(dict.fromkeys(await _esco_meters(conn, text)))
        without = await conn.fetch(
            """SELECT m.id, m.serial FROM flows.meter_registry m
               WHERE m.id = ANY($1::uuid[])
                 AND NOT EXISTS (SELECT FROM flows.meter_registers g WHERE g.meter_id = m.id)""",
            list(meters),
        )
        for row in without:
            log.warning(
                "meter has no registers: no rows",
                meter_serial=row["serial"],
                meter_id=str(row["id"]),
            )
        status = await export_intervals(conn, list(meters), first, last, out)
        log.info("intervals exported", meters=len(meters), rows=int(status.split()[-1]))
        return 0

    if not args.output:
        return with_connection(args, lambda conn, more: work(conn, more, sys.stdout.buffer))
    # Written aside and renamed at the end: a failed export leaves no partial file behind.
    target = Path(args.output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as file:
            status = with_connection(args, lambda conn, more: work(conn, more, file))
        partial.replace(target)
    except OSError as exc:
        raise UserError(f"--output {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return status
