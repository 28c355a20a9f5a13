"""``flowsd replay``: rebuild projections from the event log and swap them in atomically.

``--projection NAME`` (repeatable) chooses projections, all by default. ``--from-position N``
or ``--since TIME`` rebuilds the time-series tables from that point only (rows from earlier
events are kept); ``meter_shadows`` and ``meter_registry`` are always recomputed whole.
A progress bar is drawn on a terminal, log lines are written otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime

from flowsd.config import load_config, with_database_url
from flowsd.db.connect import CONNECTION_ERRORS, connect, resolve_database
from flowsd.db.urls import redact
from flowsd.errors import UserError
from flowsd.projections.catalogue import PROJECTION_NAMES, select_projections
from flowsd.projections.replay import ReplayReport, position_since, replay


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (overrides the configuration)"
    )


def add_projection_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--projection",
        metavar="NAME",
        action="append",
        default=[],
        help=f"projection to process (repeatable; default all): {', '.join(PROJECTION_NAMES)}",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="rebuild projections from the event log and swap them in",
        description=__doc__.split("\n\n")[0],
    )
    add_projection_argument(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-position", metavar="N", type=int, help="rebuild from events after position N"
    )
    start.add_argument(
        "--since",
        metavar="TIME",
        help="rebuild from events recorded at or after TIME (ISO 8601; UTC when no offset)",
    )
    add_database_arguments(parser)
    parser.set_defaults(handler=run)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since: not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    select_projections(args.projection)  # a bad name fails before connecting
    if args.from_position is not None and args.from_position < 0:
        raise UserError("--from-position must be 0 or more")
    since = parse_time(args.since) if args.since else None
    config = with_database_url(load_config(args.config), args.database_url)
    target = resolve_database(config)
    try:
        report = asyncio.run(
            _replay(target.url, config.database.connect_timeout_seconds, args, since)
        )
    finally:
        target.close()
    rate = report.events * len(report.projections) / max(report.seconds, 1e-6)
    print(
        f"replayed {', '.join(report.projections)}: {report.events:,} log positions in "
        f"{report.seconds:.1f} s ({rate:,.0f} event-projections/s); "
        f"checkpoints at {max(report.checkpoint.values(), default=0)}"
    )
    return 0


async def _replay(
    url: str, connect_timeout: float, args: argparse.Namespace, since: datetime | None
) -> ReplayReport:
    projections = select_projections(args.projection)
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        start = args.from_position or 0
        if since is not None:
            start = await position_since(conn, since)
        return await replay(
            conn,
            projections,
            from_position=start,
            connect=lambda: connect(url, connect_timeout=connect_timeout),
            workers=min(os.cpu_count() or 1, 4),
        )
    except CONNECTION_ERRORS as exc:
        raise UserError(f"lost the connection to {redact(url)} during the replay: {exc}") from exc
    finally:
        await conn.close()
