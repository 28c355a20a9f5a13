"""Helpers shared by every test package: a bounded wait for a condition, the migration of a
test database, and the value of one Prometheus sample (flowsd itself never reads its registry
back: components expose ``statistics()``). Fixtures built on them live in ``tests/conftest.py``.

Waits are for conditions, bounded by :data:`WAIT_SECONDS`, far above what they take on an
idle machine: the suite shares a small machine with other heavy tests, and a wait that runs
out fails the test rather than hanging it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import asyncpg

from flowsd.db.migrate import migrate
from flowsd.ops.metrics import REGISTRY

# Upper bound of any wait for a condition (start-up, a stop, N polls, a commit).
WAIT_SECONDS = 90.0


async def wait_until(predicate: Callable[[], Any], seconds: float = WAIT_SECONDS) -> None:
    """Check a (sync or async) predicate every 20 ms; fail the test if it does not hold
    within ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await anyio.sleep(0.02)


async def migrate_database(url: str) -> None:
    """Apply every flowsd migration to the database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample of flowsd's registry (0.0 when absent)."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
