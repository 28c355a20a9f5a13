"""Schema migrations: ordered SQL files applied once each, recorded in ``flowsd.schema_migrations``.

Files are ``flowsd/db/migrations/NNNN_description.sql``, applied in number order (numbers are
unique; gaps are allowed, so parts of flowsd can own ranges). Each one
runs in its own transaction together with the row that records it, under a transaction-scoped
advisory lock, so concurrent migrators of one database take turns and each file is applied
exactly once. A database that records a version this code does not have is refused (it was
migrated by a newer flowsd), and so is one whose recorded checksum differs from the file's
(a migration edited after it shipped).
"""

from __future__ import annotations

import hashlib
import re
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


class SchemaTooNewError(UserError):
    """The database was migrated by a newer flowsd than this one."""


class MigrationChangedError(UserError):
    """An applied migration's file no longer matches what was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


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
        if known[version].checksum != checksum:
            raise MigrationChangedError(
                f"migration {version} ({known[version].name}) differs from the one applied "
                "to this database"
            )


async def migrate(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> MigrationReport:
    """Apply every pending migration, each in its own transaction. Idempotent."""
    plan = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    for migration in plan:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(_BOOTSTRAP)
            applied = await applied_versions(conn)
            check_compatible(applied, plan)
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO flowsd.schema_migrations (version, name, checksum) "
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
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
