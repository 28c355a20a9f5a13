"""Command-line entry point: one sub-command per module in :mod:`flowsd.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed namespace and returning an exit status.
A :class:`flowsd.errors.UserError` (a mistake the user can fix) and a
:class:`flowsd.db.errors.DatabaseUnavailableError` (the database could not be reached or was
lost) become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from flowsd import __version__
from flowsd.db.errors import DatabaseUnavailableError
from flowsd.errors import UserError

# Order is the order of `flowsd --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "flowsd.commands.run",
    "flowsd.commands.demo",
    "flowsd.commands.migrate",
    "flowsd.commands.simulate",
    "flowsd.commands.replay",
    "flowsd.commands.verify",
    "flowsd.commands.projections",
    "flowsd.commands.status",
    "flowsd.commands.meter",
    "flowsd.commands.poll",
    "flowsd.commands.events",
    "flowsd.commands.export",
    "flowsd.commands.emop",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowsd",
        description="Meter-data daemon for Emlite prepayment meters (EMOP) on PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"flowsd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command whose module is not part of this build yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except (UserError, DatabaseUnavailableError) as exc:
        print(f"flowsd {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
