"""The daemon refuses a database whose schema it cannot run on: one clear error at once,
where an unreachable database would be waited for."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest

from flowsd.app import Daemon
from flowsd.db.migrate import MigrationChangedError
from flowsd.errors import UserError
from tests.integration.daemon import (
    daemon_config,
)
from tests.support import WAIT_SECONDS


async def _run(url: str, tmp_path: Path) -> int:
    daemon = Daemon(daemon_config(tmp_path, url), url, handle_signals=False)
    with anyio.fail_after(WAIT_SECONDS):
        return await daemon.run()


async def test_an_unmigrated_database_is_refused(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"lacks migrations .*: run `flowsd migrate`"):
        await _run(database_url, tmp_path)


async def test_a_migration_changed_since_it_was_applied_is_refused(
    migrated_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        await conn.execute(
            "UPDATE flowsd.schema_migrations SET checksum = 'edited' WHERE version = 30"
        )
    finally:
        await conn.close()
    with pytest.raises(MigrationChangedError, match=r"migration 30 .* differs"):
        await _run(migrated_url, tmp_path)
