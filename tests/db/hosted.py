"""Databases as hosted PostgreSQL gives them, on the test server, touching nothing else.

:func:`hosted_database` creates roles of its own (uniquely named; never superusers) and a
database owned by the first of them, as a hosting platform hands an admin role that owns its
database but is not a superuser (Timescale's ``tsdbadmin``, Supabase's ``postgres``). Only
what it created is dropped afterwards, so it is safe on a server other test runs share.

:func:`build_production` loads the production-shaped schema of an era with its rows (see
``production/*.sql``), as the owner.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from flowsd.db.migrate import split_statements
from flowsd.db.urls import with_database

PRODUCTION = Path(__file__).parent / "production"

# Production before flows-db's regions migration (as dumped on 2026-01-07), and after it.
Era = Literal["2026-01", "regions"]
ERAS: tuple[Era, ...] = ("2026-01", "regions")


def with_user(url: str, user: str) -> str:
    """``url`` connecting as ``user`` (no password: the test servers trust local users)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}@{host}"))


@dataclass(frozen=True)
class HostedDatabase:
    url: str  # as the owner
    admin_url: str  # the same database as the test server's administrator
    owner: str
    app: str  # production's `flows`: reads and writes every table
    reader: str  # production's grafanareader, tableau, ...: reads


@asynccontextmanager
async def hosted_database(
    pg_admin_url: str, *, createrole: bool = True
) -> AsyncIterator[HostedDatabase]:
    """A new database owned by a new non-superuser role; both dropped at the end."""
    tag = uuid.uuid4().hex[:12]
    owner, app, reader = (f"flowsd_t{tag}_{r}" for r in ("owner", "app", "reader"))
    name = f"flowsd_test_{tag}"
    admin = await asyncpg.connect(pg_admin_url)
    created: list[str] = []
    try:
        power = "CREATEROLE" if createrole else "NOCREATEROLE"
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOCREATEDB {power}')
        created.append(owner)
        for role in (app, reader):
            await admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
            created.append(role)
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        database_url = with_database(pg_admin_url, name)
        yield HostedDatabase(with_user(database_url, owner), database_url, owner, app, reader)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in reversed(created):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def production_sql(file: str, database: HostedDatabase) -> str:
    text = (PRODUCTION / file).read_text(encoding="utf-8")
    for placeholder, role in (
        ("@OWNER@", database.owner),
        ("@APP@", database.app),
        ("@READER@", database.reader),
    ):
        text = text.replace(placeholder, f'"{role}"')
    return text


async def build_production(conn: asyncpg.Connection, database: HostedDatabase, era: Era) -> None:
    """Production's schema and rows of ``era``, created by the owner (``conn``)."""
    await conn.execute(production_sql("schema_2026_01.sql", database))
    # One statement at a time: production's triggers stamp history with statement time.
    for _, statement in split_statements(production_sql("rows.sql", database)):
        await conn.execute(statement)
    if era == "regions":
        await conn.execute(production_sql("regions_0004_0006.sql", database))


async def fingerprints(
    conn: asyncpg.Connection, columns: dict[str, list[str]] | None = None
) -> dict[str, tuple[list[str], int, str]]:
    """Per table of schema ``flows``: its columns, row count and an md5 of its sorted rows.

    With ``columns`` (an earlier result's), only those tables and columns are read, so rows
    can be compared across a migration that adds columns.
    """
    if columns is None:
        rows = await conn.fetch(
            "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) AS columns "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = 'flows' AND c.relkind IN ('r', 'p') GROUP BY c.relname"
        )
        columns = {r["relname"]: list(r["columns"]) for r in rows}
    result = {}
    for table, names in sorted(columns.items()):
        listed = ", ".join(f'"{c}"' for c in names)
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), "
            f"'')) AS digest FROM (SELECT {listed} FROM flows.{table}) AS t"
        )
        assert row is not None
        result[table] = (names, row["n"], row["digest"])
    return result
