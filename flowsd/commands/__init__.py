"""Sub-commands of the ``flowsd`` command line, one module each (see :mod:`flowsd.cli`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    doc: str | None,
    **options: Any,
) -> argparse.ArgumentParser:
    """The sub-command ``name``: ``summary`` in ``flowsd --help``, the first paragraph of its
    module's ``doc`` atop its own help."""
    description = doc.split("\n\n")[0] if doc else None
    return subparsers.add_parser(name, help=summary, description=description, **options)
