"""``flowsd projections``: projector state and parked events.

``flowsd projections status`` prints each projection's checkpoint, lag behind the log head and
parked events. ``flowsd projections retry-parked [--projection NAME ...] [--meter UUID]``
applies parked events again (oldest first, meter by meter) once their cause is fixed; it exits
1 when some are still parked.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import asyncpg

from flowsd.commands.replay import add_database_arguments, add_projection_argument
from flowsd.config import load_config, with_database_url
from flowsd.db.connect import CONNECTION_ERRORS, connect, resolve_database
from flowsd.db.urls import redact
from flowsd.errors import UserError
from flowsd.projections.catalogue import select_projections
from flowsd.projections.parking import retry_parked


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "projections",
        help="projector checkpoints and parked events",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="checkpoint, lag and parked events per projection")
    add_projection_argument(status)
    add_database_arguments(status)
    status.set_defaults(handler=run_status)
    retry = actions.add_parser("retry-parked", help="apply parked events again")
    add_projection_argument(retry)
    retry.add_argument("--meter", metavar="UUID", help="only this meter's parked events")
    add_database_arguments(retry)
    retry.set_defaults(handler=run_retry)


def _run(args: argparse.Namespace, work: object) -> int:
    config = with_database_url(load_config(args.config), args.database_url)
    target = resolve_database(config)
    try:
        return asyncio.run(
            _with_connection(target.url, config.database.connect_timeout_seconds, work)
        )
    finally:
        target.close()


async def _with_connection(url: str, connect_timeout: float, work: object) -> int:
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        result: int = await work(conn)  # type: ignore[operator]
        return result
    except CONNECTION_ERRORS as exc:
        raise UserError(f"lost the connection to {redact(url)}: {exc}") from exc
    finally:
        await conn.close()


def run_status(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)

    async def work(conn: asyncpg.Connection) -> int:
        head: int = await conn.fetchval(
            "SELECT coalesce(max(position), 0) FROM flows.meter_event_log"
        )
        for projection in projections:
            row = await conn.fetchrow(
                """SELECT coalesce((SELECT position FROM flowsd.projector_checkpoint
                                    WHERE name = $1), 0) AS checkpoint,
                          (SELECT count(*) FROM flowsd.projection_parked_event
                           WHERE projection = $1) AS parked""",
                projection.name,
            )
            assert row is not None
            print(
                f"{projection.name:<22} checkpoint {row['checkpoint']:>12}  "
                f"lag {head - row['checkpoint']:>10}  parked {row['parked']}"
            )
        return 0

    return _run(args, work)


def run_retry(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)
    try:
        meter = uuid.UUID(args.meter) if args.meter else None
    except ValueError:
        raise UserError(f"--meter: not a UUID: {args.meter!r}") from None

    async def work(conn: asyncpg.Connection) -> int:
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

    return _run(args, work)
