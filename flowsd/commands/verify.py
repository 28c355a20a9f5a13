"""``flowsd verify``: rebuild projections aside and compare them with the live tables.

Exit status 0 when every chosen projection equals its rebuild, 1 otherwise (the first
differing rows are printed, marked ``live`` or ``rebuilt``). Live tables are not changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from flowsd.commands.replay import add_database_arguments, add_projection_argument
from flowsd.config import load_config, with_database_url
from flowsd.db.connect import CONNECTION_ERRORS, connect, resolve_database
from flowsd.db.urls import redact
from flowsd.errors import UserError
from flowsd.projections.catalogue import select_projections
from flowsd.projections.verify import Verdict, verify


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="rebuild projections aside and diff them against the live tables",
        description=__doc__.split("\n\n")[0],
    )
    add_projection_argument(parser)
    parser.add_argument(
        "--show", metavar="N", type=int, default=10, help="differing rows to print per projection"
    )
    add_database_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    select_projections(args.projection)  # a bad name fails before connecting
    config = with_database_url(load_config(args.config), args.database_url)
    target = resolve_database(config)
    try:
        verdicts = asyncio.run(_verify(target.url, config.database.connect_timeout_seconds, args))
    finally:
        target.close()
    for verdict in verdicts:
        print(_describe(verdict))
        for row in verdict.first:
            print("  " + json.dumps(row, default=_plain, sort_keys=False))
    return 0 if all(v.equal for v in verdicts) else 1


def _describe(verdict: Verdict) -> str:
    parked = f", {verdict.parked_events} parked events" if verdict.parked_events else ""
    if verdict.equal:
        return f"{verdict.projection}: equal at position {verdict.checkpoint}{parked}"
    return (
        f"{verdict.projection}: {verdict.differences} rows differ at position "
        f"{verdict.checkpoint}{parked}"
    )


def _plain(value: Any) -> str:
    return str(value)


async def _verify(url: str, connect_timeout: float, args: argparse.Namespace) -> list[Verdict]:
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        return await verify(conn, select_projections(args.projection), limit=max(args.show, 0))
    except CONNECTION_ERRORS as exc:
        raise UserError(f"lost the connection to {redact(url)} during verify: {exc}") from exc
    finally:
        await conn.close()
