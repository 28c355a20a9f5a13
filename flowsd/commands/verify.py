"""``flowsd verify``: rebuild projections aside and compare them with the live tables.

Exit status 0 when every chosen projection equals its rebuild, 1 otherwise (the first
differing rows are printed, marked ``live`` or ``rebuilt``). Live tables are not changed.
``--json`` prints one document instead: ``{"ok": ..., "projections": [{"name", "equal",
"position", "differences", "parked_events", "first": [rows]}]}``. Progress and log lines go
to stderr. ``--from-snapshot`` rebuilds from each projection's newest snapshot (``flowsd
projections snapshot``) instead of position 0: equality over the log after the snapshot
(``"since"`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from flowsd.commands import add_command
from flowsd.commands.output import print_json
from flowsd.commands.replay import (
    add_from_snapshot_argument,
    add_projection_argument,
    with_connection,
)
from flowsd.commands.run import add_common_arguments
from flowsd.projections.catalogue import select_projections
from flowsd.projections.replay import Connect
from flowsd.projections.verify import Verdict, verify


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "verify",
        "rebuild projections aside and diff them against the live tables",
        __doc__,
    )
    add_projection_argument(parser)
    parser.add_argument(
        "--show", metavar="N", type=int, default=10, help="differing rows to print per projection"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_from_snapshot_argument(parser)
    add_common_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    projections = select_projections(args.projection)  # a bad name fails before connecting

    async def work(conn: asyncpg.Connection, _more: Connect) -> list[Verdict]:
        return await verify(
            conn, projections, limit=max(args.show, 0), from_snapshot=args.from_snapshot
        )

    verdicts = with_connection(args, work)
    ok = all(v.equal for v in verdicts)
    if args.json:
        print_json({"ok": ok, "projections": [_document(v) for v in verdicts]})
        return 0 if ok else 1
    for verdict in verdicts:
        print(_describe(verdict))
        for row in verdict.first:
            print("  " + json.dumps(row, default=str))
    return 0 if ok else 1


def _document(verdict: Verdict) -> dict[str, Any]:
    return {
        "name": verdict.projection,
        "equal": verdict.equal,
        "position": verdict.checkpoint,
        "since": verdict.since,
        "differences": verdict.differences,
        "parked_events": verdict.parked_events,
        "first": list(verdict.first),
    }


def _describe(verdict: Verdict) -> str:
    parked = f", {verdict.parked_events} parked events" if verdict.parked_events else ""
    if verdict.since:
        parked += f" (rebuilt from the snapshot at {verdict.since})"
    if verdict.equal:
        return f"{verdict.projection}: equal at position {verdict.checkpoint}{parked}"
    return (
        f"{verdict.projection}: {verdict.differences} rows differ at position "
        f"{verdict.checkpoint}{parked}"
    )
