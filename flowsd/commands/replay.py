"""``flowsd replay``: rebuild projections from the event log and swap them in atomically.

``--projection NAME`` (repeatable) chooses projections, all by default. ``--from-position N``
or ``--since TIME`` rebuilds the time-series tables from that point only (rows from earlier
events are kept); ``meter_shadows`` and ``meter_registry`` are always recomputed whole.
``--from-snapshot`` starts every chosen projection from its newest snapshot (``flowsd
projections snapshot``) and reads only the events after it; the tables are replaced whole,
as by a replay from position 1, without reading the log below the snapshot.
On a terminal a progress bar is drawn on stderr, below the log lines (which follow
``[logging]``); otherwise progress is logged every few seconds. The result is printed on
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from flowsd.commands import add_command
from flowsd.commands.run import add_common_arguments, database_url, load
from flowsd.db.connect import close_quietly, connect
from flowsd.db.errors import DatabaseUnavailableError, describe, lost_connection_in
from flowsd.db.urls import redact
from flowsd.errors import UserError
from flowsd.ops.logs import configure_logging
from flowsd.projections.catalogue import PROJECTION_NAMES, select_projections
from flowsd.projections.replay import Connect, ReplayReport, position_since, replay

T = TypeVar("T")


def add_projection_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--projection",
        metavar="NAME",
        action="append",
        default=[],
        help=f"projection to process (repeatable; default all): {', '.join(PROJECTION_NAMES)}",
    )


def add_from_snapshot_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--from-snapshot",
        action="store_true",
        help="start from each projection's newest snapshot (flowsd projections snapshot), "
        "not from position 0",
    )


def add_since_argument(parser: argparse._ActionsContainer, what: str) -> None:
    """``--since TIME``, read by :func:`parse_time`."""
    parser.add_argument(
        "--since",
        metavar="TIME",
        help=f"{what} recorded at or after TIME (ISO 8601; UTC when no offset)",
    )


def with_connection(
    args: argparse.Namespace, work: Callable[[asyncpg.Connection, Connect], Awaitable[T]]
) -> T:
    """Run ``work`` on a connection to the configured database (and a way to open more);
    losing the database on the way is one line (:class:`DatabaseUnavailableError`), and a
    replay cut short that way changed nothing (its swap is one transaction)."""
    config = load(args)
    # Log lines and the progress bar to stderr, as [logging] says; results alone on stdout.
    configure_logging(config.logging.level, fmt=config.logging.format, cache=False)
    timeout = config.database.connect_timeout_seconds
    with database_url(config) as url:

        def open_connection() -> Awaitable[asyncpg.Connection]:
            return connect(url, connect_timeout=timeout)

        async def main() -> T:
            conn = await open_connection()
            try:
                return await work(conn, open_connection)
            except Exception as exc:
                lost = lost_connection_in(exc)
                if lost is None:
                    raise
                raise DatabaseUnavailableError(
                    f"lost the connection to {redact(url)}: {describe(lost)}"
                ) from exc
            finally:
                await close_quietly(conn)

        return asyncio.run(main())


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "replay", "rebuild projections from the event log and swap them in", __doc__
    )
    add_projection_argument(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-position", metavar="N", type=int, help="rebuild from events after position N"
    )
    add_from_snapshot_argument(start)
    add_since_argument(start, "rebuild from events")
    add_common_arguments(parser)
    parser.set_defaults(handler=run)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since: not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)  # a bad name fails before connecting
    if args.from_position is not None and args.from_position < 0:
        raise UserError("--from-position must be 0 or more")
    since = parse_time(args.since) if args.since else None

    async def work(conn: asyncpg.Connection, more: Connect) -> ReplayReport:
        start = args.from_position or 0
        if since is not None:
            start = await position_since(conn, since)
        return await replay(
            conn,
            projections,
            from_position=start,
            connect=more,
            workers=min(os.cpu_count() or 1, 4),
            from_snapshot=args.from_snapshot,
        )

    report = with_connection(args, work)
    rate = report.events * len(report.projections) / max(report.seconds, 1e-6)
    print(
        f"replayed {', '.join(report.projections)}: {report.events:,} log positions in "
        f"{report.seconds:.1f} s ({rate:,.0f} event-projections/s); "
        f"checkpoints at {max(report.checkpoint.values(), default=0)}"
    )
    return 0
