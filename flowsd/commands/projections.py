"""``flowsd projections``: projector state and parked events.

``flowsd projections status [--json]`` prints each projection's checkpoint, lag behind the log
head and parked events. ``flowsd projections retry-parked [--projection NAME ...] [--meter
SERIAL]`` applies parked events again (oldest first, meter by meter) once their cause is
fixed; it exits 1 when some are still parked. A meter is named by its serial or its id.
``flowsd projections snapshot [--projection NAME ...] [--keep N]`` stores each projection's
rebuild state at the log head (from its previous snapshot, reading only the events since), for
``flowsd replay --from-snapshot`` and ``flowsd verify --from-snapshot``; ``--keep`` drops all
but the newest N snapshots of each.
"""

from __future__ import annotations

import argparse

import asyncpg

from flowsd.commands import add_command
from flowsd.commands.output import print_json
from flowsd.commands.replay import add_projection_argument, with_connection
from flowsd.commands.run import add_common_arguments
from flowsd.db.meter_names import find_meter
from flowsd.errors import UserError
from flowsd.events.reader import head_position
from flowsd.projections.catalogue import select_projections
from flowsd.projections.parking import retry_parked
from flowsd.projections.replay import Connect
from flowsd.projections.snapshot import drop_snapshots, take_snapshots


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "projections", "projector checkpoints and parked events", __doc__
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="checkpoint, lag and parked events per projection")
    add_projection_argument(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")
    add_common_arguments(status)
    status.set_defaults(handler=run_status)
    retry = actions.add_parser("retry-parked", help="apply parked events again")
    add_projection_argument(retry)
    retry.add_argument(
        "--meter", metavar="SERIAL", help="only this meter's parked events (serial or id)"
    )
    add_common_arguments(retry)
    retry.set_defaults(handler=run_retry)
    snapshot = actions.add_parser("snapshot", help="store the projections' state at the head")
    add_projection_argument(snapshot)
    snapshot.add_argument(
        "--keep", metavar="N", type=int, default=0, help="keep only the newest N (0: keep all)"
    )
    add_common_arguments(snapshot)
    snapshot.set_defaults(handler=run_snapshot)


def run_status(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)

    async def work(conn: asyncpg.Connection, _more: Connect) -> int:
        head = await head_position(conn)
        rows = await conn.fetch(
            """SELECT n.name, coalesce(c.position, 0) AS checkpoint,
                      (SELECT count(*) FROM flowsd.projection_parked_event p
                       WHERE p.projection = n.name) AS parked
               FROM unnest($1::text[]) WITH ORDINALITY AS n(name, ordinal)
               LEFT JOIN flowsd.projector_checkpoint c ON c.name = n.name
               ORDER BY n.ordinal""",
            [p.name for p in projections],
        )
        if args.json:
            documents = [
                {
                    "name": row["name"],
                    "position": row["checkpoint"],
                    "lag_events": head - row["checkpoint"],
                    "parked_events": row["parked"],
                }
                for row in rows
            ]
            print_json({"event_log_head": head, "projections": documents})
            return 0
        for row in rows:
            print(
                f"{row['name']:<22} checkpoint {row['checkpoint']:>12}  "
                f"lag {head - row['checkpoint']:>10}  parked {row['parked']}"
            )
        return 0

    return with_connection(args, work)


def run_retry(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)

    async def work(conn: asyncpg.Connection, _more: Connect) -> int:
        meter = (await find_meter(conn, args.meter)).meter_id if args.meter else None
        remaining = 0
        for projection in projections:
            report = await retry_parked(conn, projection, meter)
            if report.applied or report.still_parked:
                print(
                    f"{projection.name}: applied {report.applied}, "
                    f"still parked {report.still_parked}"
                )
            remaining += report.still_parked
        if remaining == 0:
            print("no parked events left")
        return 1 if remaining else 0

    return with_connection(args, work)


def run_snapshot(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)
    if args.keep < 0:
        raise UserError("--keep must be 0 or more")

    async def work(conn: asyncpg.Connection, _more: Connect) -> int:
        for snapshot in await take_snapshots(conn, projections):
            print(f"{snapshot.projection}: snapshot at {snapshot.position} ({snapshot.table})")
            if args.keep:
                older = await conn.fetchval(
                    "SELECT position FROM flowsd.projection_snapshot WHERE projection = $1 "
                    "ORDER BY position DESC OFFSET $2 LIMIT 1",
                    snapshot.projection,
                    args.keep - 1,
                )
                if older is not None:
                    for table in await drop_snapshots(conn, snapshot.projection, older):
                        print(f"{snapshot.projection}: dropped {table}")
        return 0

    return with_connection(args, work)
