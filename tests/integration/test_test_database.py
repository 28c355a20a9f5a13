"""The suite's own PostgreSQL: each test gets a private, empty database."""

from __future__ import annotations

import asyncpg


async def test_database_is_private_and_empty(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert name.startswith("flowsd_test_")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
        assert await conn.fetchval("SHOW server_version_num") >= "150000"
    finally:
        await conn.close()
