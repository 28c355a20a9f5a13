"""Connection helpers: URL resolution, pools, one-line errors."""

from __future__ import annotations

import re

import pytest

from flowsd.config import Config, with_database_url
from flowsd.db.connect import connect, create_pool_from_config, resolve_database
from flowsd.db.errors import DatabaseRefusedError, DatabaseUnavailableError
from flowsd.db.urls import with_database
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


async def test_unreachable_server_is_unavailable_without_the_password() -> None:
    with pytest.raises(
        DatabaseUnavailableError, match=r"cannot connect to postgresql://u:\*\*\*@127.0.0.1:9"
    ):
        await connect("postgresql://u:hunter2@127.0.0.1:9/db", connect_timeout=2)


async def test_a_database_that_does_not_exist_is_refused(database_url: str) -> None:
    with pytest.raises(DatabaseRefusedError, match="does not exist"):
        await connect(with_database(database_url, "flowsd_no_such_database"), connect_timeout=5)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@127.0.0.1/db", "not a PostgreSQL URL (scheme mysql)"),
        ("127.0.0.1:5432/db", "not a PostgreSQL URL (scheme none)"),
        ("postgresql://u:pw@127.0.0.1:port/db", "Port could not be cast"),
    ],
)
def test_a_url_of_another_kind_is_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        resolve_database(with_database_url(Config(), url))
    assert "pw" not in str(caught.value)


def test_without_a_url_only_the_demo_may_use_the_embedded_server() -> None:
    with pytest.raises(UserError, match="no database configured: give --database-url"):
        resolve_database(Config())
