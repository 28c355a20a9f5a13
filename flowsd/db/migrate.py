"""Schema migrations: ordered SQL files applied once each, recorded in ``flowsd.schema_migrations``.

Files are ``flowsd/db/migrations/NNNN_description.sql``, applied in number order (numbers are
unique; gaps are allowed, so parts of flowsd can own ranges). Each one
runs in its own transaction together with the row that records it, under a transaction-scoped
advisory lock, so concurrent migrators of one database take turns and each file is applied
exactly once. A database that records a version this code does not have is refused (it was
migrated by a newer flowsd), and so is one whose recorded checksum differs from the file's
(a migration edited after it shipped), unless that checksum is one of the file's
:data:`SUPERSEDED_CHECKSUMS`.

A file runs statement by statement (split by :func:`split_statements`), so that a failure
names the file, the line and the statement (:class:`MigrationFailedError`, one line).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg

from flowsd.errors import UserError

MIGRATION_LOCK_KEY = 7380396448181125122  # b"flowsd\x00\x02"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS flowsd;
CREATE TABLE IF NOT EXISTS flowsd.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


# Earlier texts of shipped migrations that built the same objects on every server they could
# run on, so databases that recorded them are accepted as they are (nothing is re-applied).
# An edit that changes what a migration builds must be a new migration instead.
SUPERSEDED_CHECKSUMS: dict[int, frozenset[str]] = {
    # 0001 and 0002 as first shipped ran only on PostgreSQL 18 (0002 did not parse below 18).
    # Their later edits (production's column names and order, so that production databases
    # upgrade) change nothing on 18 except what CREATE OR REPLACE cannot redo, which such a
    # database keeps: the column order of meter_shadows_tariffs, meters_offline_recently and
    # meters_offline_all, and the `day` column (now `date`) of the three *_missing views.
    1: frozenset({"7fe551d527a1d288e48818c3a42ab3993b07d78d2c00ae3ed99a1f8d2634d89a"}),
    2: frozenset({"4a97dd9de16e4acb2d75aeae51b9368ad4bc8193e335ae2f01dae115caee28ca"}),
}


class SchemaTooNewError(UserError):
    """The database was migrated by a newer flowsd than this one."""


class MigrationChangedError(UserError):
    """An applied migration's file no longer matches what was applied."""


class MigrationFailedError(UserError):
    """A statement of a migration failed; the message names the file, line and statement."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    def accepts(self, checksum: str) -> bool:
        """True when a database that recorded ``checksum`` has this migration applied."""
        return checksum == self.checksum or checksum in SUPERSEDED_CHECKSUMS.get(
            self.version, frozenset()
        )


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[int, ...]  # versions applied by this run
    version: int  # the database's version afterwards


def load_migrations() -> list[Migration]:
    """The packaged migrations in number order; raises on a duplicate number."""
    directory = resources.files("flowsd.db") / "migrations"
    found: list[Migration] = []
    for entry in directory.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] < 1):
        raise RuntimeError(f"migration numbers must be unique and positive: {versions}")
    return found


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    """Recorded version -> checksum; empty for a database flowsd never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('flowsd.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM flowsd.schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def check_compatible(applied: dict[int, str], migrations: list[Migration]) -> None:
    """Raise unless every applied version (-> checksum) is one of ``migrations``, unchanged."""
    known = {m.version: m for m in migrations}
    newest_known = max(known, default=0)
    unknown = sorted(v for v in applied if v not in known)
    if unknown:
        raise SchemaTooNewError(
            f"the database schema is at version {max(applied)}, newer than this flowsd "
            f"(which knows versions up to {newest_known}): upgrade flowsd"
        )
    for version, checksum in applied.items():
        if not known[version].accepts(checksum):
            raise MigrationChangedError(
                f"migration {version} ({known[version].name}) differs from the one applied "
                "to this database"
            )


async def migrate(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    *,
    on_applied: Callable[[Migration, float], None] | None = None,
) -> MigrationReport:
    """Apply every pending migration, each in its own transaction. Idempotent.

    ``on_applied`` is called after each migration commits, with its duration in seconds.
    """
    plan = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    for migration in plan:
        started = time.monotonic()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(_BOOTSTRAP)
            applied = await applied_versions(conn)
            check_compatible(applied, plan)
            if migration.version in applied:
                continue
            await _apply(conn, migration)
            await conn.execute(
                "INSERT INTO flowsd.schema_migrations (version, name, checksum) "
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        applied_now.append(migration.version)
        if on_applied is not None:
            on_applied(migration, time.monotonic() - started)
    if not plan:
        return MigrationReport((), 0)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        final = await applied_versions(conn)
        check_compatible(final, plan)
        if applied_now and await conn.fetchval(
            "SELECT to_regprocedure('flowsd.apply_grants()') IS NOT NULL"
        ):
            # Tables added by any migration get the roles' privileges.
            await conn.execute("CALL flowsd.apply_grants()")
    return MigrationReport(tuple(applied_now), max(final, default=0))


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    for line, statement in split_statements(migration.sql):
        try:
            await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            raise MigrationFailedError(_failure(migration, line, statement, exc)) from exc


def _failure(migration: Migration, line: int, statement: str, exc: asyncpg.PostgresError) -> str:
    """One line: file, line, the statement's start, the server's message and detail."""
    head = " ".join(statement.split())
    if len(head) > 100:
        head = head[:97] + "..."
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = getattr(exc, "detail", None)
    hint = getattr(exc, "hint", None)
    extra = "".join(f" ({' '.join(str(x).split())})" for x in (detail, hint) if x)
    return (
        f"migration {migration.file_name} failed at line {line} ({head}): {message}{extra}; "
        "nothing of this migration was applied"
    )


# Lexical pieces that may contain a semicolon that does not end a statement.
_TOKEN = re.compile(
    r"""
      (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<string>[EeBbXxUu]?'(?:[^']|'')*')
    | (?P<identifier>"(?:[^"]|"")*")
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$)
    | (?P<semicolon>;)
    """,
    re.VERBOSE | re.DOTALL,
)


def split_statements(sql: str) -> list[tuple[int, str]]:
    """The statements of ``sql`` with the line (1-based) each starts on.

    Semicolons end statements except inside comments, quoted strings and identifiers and
    dollar-quoted bodies. Comment-only pieces are dropped. (Block comments do not nest here;
    the migrations do not use nested ones.)
    """
    statements: list[tuple[int, str]] = []
    start = 0
    position = 0
    while True:
        match = _TOKEN.search(sql, position)
        if match is None:
            break
        if match["dollar"] is not None:
            closing = sql.find(match["dollar"], match.end())
            if closing < 0:
                raise ValueError(f"unterminated dollar quote {match['dollar']}")
            position = closing + len(match["dollar"])
            continue
        if match["semicolon"] is not None:
            _add_statement(statements, sql, start, match.start())
            start = match.end()
        position = match.end()
    _add_statement(statements, sql, start, len(sql))
    return statements


def _add_statement(statements: list[tuple[int, str]], sql: str, start: int, end: int) -> None:
    offset = start
    while offset < end:  # past blank space and comments, to the statement's first line
        if sql[offset].isspace():
            offset += 1
        elif sql.startswith("--", offset):
            newline = sql.find("\n", offset, end)
            offset = end if newline < 0 else newline + 1
        elif sql.startswith("/*", offset):
            closing = sql.find("*/", offset, end)
            offset = end if closing < 0 else closing + 2
        else:
            break
    if offset < end:
        statements.append((sql.count("\n", 0, offset) + 1, sql[offset:end].strip()))
