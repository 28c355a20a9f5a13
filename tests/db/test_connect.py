"""Connection helpers: URL resolution, pools, one-line errors."""

from __future__ import annotations

import pytest

from flowsd.config import Config, with_database_url
from flowsd.db.connect import connect, create_pool_from_config, resolve_database
from flowsd.errors import UserError


async def test_configured_url_is_used_as_is_and_pools_connect(database_url: str) -> None:
    config = with_database_url(Config(), database_url)
    target = resolve_database(config)
    assert target.url == database_url
    assert target.embedded is None
    pool = await create_pool_from_config(config, target.url)
    try:
        assert await pool.fetchval("SELECT current_setting('application_name')") == "flowsd"
    finally:
        await pool.close()


async def test_unreachable_server_is_a_user_error_without_the_password() -> None:
    with pytest.raises(UserError, match=r"cannot connect to postgresql://u:\*\*\*@127.0.0.1:9"):
        await connect("postgresql://u:hunter2@127.0.0.1:9/db", connect_timeout=2)
