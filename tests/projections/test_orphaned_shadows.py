"""Shadow tables of a replay or verify that died are dropped by the next one; live ones stay.

A replay whose process is killed, or whose server goes away part-way, cannot drop its unlogged
shadow tables. Their names carry the backend pid that built them, so the next rebuild drops
those whose backend no longer exists and leaves a concurrent rebuild's shadows alone.
"""

from __future__ import annotations

import asyncpg

from flowsd.projections.catalogue import all_projections
from flowsd.projections.verify import verify

# Above any pid Linux hands out (pid_max is at most 2**22), so never a live backend.
DEAD_PID = 2_000_000_000


async def _shadow_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'flowsd' AND relname ~ '^(replay|verify)_[0-9]+_'"
    )
    return {r["relname"] for r in rows}


async def test_verify_drops_orphaned_shadows_and_keeps_live_ones(
    conn: asyncpg.Connection, migrated_url: str
) -> None:
    other = await asyncpg.connect(migrated_url)
    try:
        live_pid = await other.fetchval("SELECT pg_backend_pid()")
        orphans = {f"replay_{DEAD_PID}_meter_csq", f"verify_{DEAD_PID}_meter_voltage"}
        live = f"replay_{live_pid}_meter_csq"
        for name in [*orphans, live]:
            await conn.execute(f'CREATE UNLOGGED TABLE flowsd."{name}" (x int)')

        csq = [p for p in all_projections() if p.name == "meter_csq"]
        verdicts = await verify(conn, csq)

        assert [v.equal for v in verdicts] == [True]
        assert await _shadow_tables(conn) == {live}
    finally:
        await other.close()
