"""``flowsd poll SERIAL``: have the daemon that polls the meter poll it now, whole.

The request goes through ``flowsd.meter_command`` (kind ``poll``), so it reaches whichever
daemon holds the meter; the answer comes when that poll has ended (exit status 0 when it
succeeded, 1 when it failed or no daemon took it in time).
"""

from __future__ import annotations

import argparse

from flowsd.commands.meter import add_waiting_arguments, run_command
from flowsd.commands.run import add_common_arguments


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "poll", help="poll one meter now, through the running daemon", description=__doc__
    )
    parser.add_argument("serial", metavar="SERIAL", help="the meter's serial")
    add_common_arguments(parser)
    add_waiting_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda _: ("poll", {}))
