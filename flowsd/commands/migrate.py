"""``flowsd migrate``: create or upgrade the ``flows`` schema (idempotent).

Applies the pending SQL migrations of :mod:`flowsd.db.migrate` to the configured database
(``--database-url``, ``FLOWSD_DATABASE_URL`` or ``[database] url``; without one it says how
to give one), printing a line for each migration as it commits and one saying where the
database stands.
A failing migration is reported in one line naming its file, line and statement; it leaves
nothing of itself behind (each migration is one transaction), and the ones before it stay.

Run it as the owner of schema ``flows`` (in production the role that owns the tables, e.g.
``tsdbadmin``); the first run also needs CREATEROLE to create ``flowsd_writer`` and
``flowsd_reader``, unless an administrator created them beforehand.
"""

from __future__ import annotations

import argparse
import asyncio

from flowsd.commands import add_command
from flowsd.config import load_config, with_database_url
from flowsd.db.connect import connect, resolve_database
from flowsd.db.errors import (
    DATABASE_ERRORS,
    DatabaseUnavailableError,
    describe,
    is_connection_lost,
)
from flowsd.db.migrate import Migration, MigrationReport, migrate
from flowsd.db.urls import redact


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "migrate", "create or upgrade the flows schema (idempotent)", __doc__
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (overrides the configuration)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = with_database_url(load_config(args.config), args.database_url)
    target = resolve_database(config)
    try:
        report = asyncio.run(_migrate(target.url, config.database.connect_timeout_seconds))
    finally:
        target.close()
    if report.applied:
        applied = ", ".join(str(v) for v in report.applied)
        print(f"migrated {redact(target.url)} to version {report.version} (applied {applied})")
    else:
        print(f"{redact(target.url)} is up to date (version {report.version})")
    return 0


def _print_applied(migration: Migration, seconds: float) -> None:
    print(f"applied {migration.file_name} ({seconds:.1f} s)", flush=True)


async def _migrate(url: str, connect_timeout: float) -> MigrationReport:
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        return await migrate(conn, on_applied=_print_applied)
    except DATABASE_ERRORS as exc:
        if not is_connection_lost(exc):
            raise
        raise DatabaseUnavailableError(
            f"lost the connection to {redact(url)} while migrating: {describe(exc)}"
        ) from exc
    finally:
        await conn.close()
