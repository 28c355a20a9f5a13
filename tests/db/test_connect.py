"""Connection helpers: URL resolution, pools, one-line errors, the daemon's session settings."""

from __future__ import annotations

import re
import time

import anyio
import asyncpg
import pytest

from flowsd.config import Config, DatabaseConfig, with_database_url
from flowsd.db.connect import (
    close_quietly,
    connect,
    create_pool_from_config,
    daemon_settings,
    resolve_database,
)
from flowsd.db.errors import (
    DATABASE_ERRORS,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    is_connection_lost,
)
from flowsd.db.urls import with_database
from flowsd.errors import UserError
from flowsd.events.store import append_batch
from tests.events.helpers import balance_event, create_meters


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


_IDLE = "SELECT current_setting('idle_in_transaction_session_timeout')"


async def test_only_the_daemons_sessions_are_ended_when_idle_in_a_transaction(
    database_url: str,
) -> None:
    config = with_database_url(
        Config(database=DatabaseConfig(idle_in_transaction_timeout_seconds=1.5)), database_url
    )
    assert daemon_settings(config) == {"idle_in_transaction_session_timeout": "1500ms"}
    pool = await create_pool_from_config(config, database_url)
    try:
        assert await pool.fetchval(_IDLE) == "1500ms"
    finally:
        await pool.close()
    daemon = await connect(database_url, settings=daemon_settings(config))
    # A one-shot command (replay, verify, export) may dwell between two statements.
    one_shot = await connect(database_url)
    try:
        assert await daemon.fetchval(_IDLE) == "1500ms"
        assert await one_shot.fetchval(_IDLE) == "0"
    finally:
        await daemon.close()
        await one_shot.close()
    off = Config(database=DatabaseConfig(idle_in_transaction_timeout_seconds=0))
    assert daemon_settings(off) == {}  # the server's (or role's) own setting stands


async def test_a_daemon_session_stalled_in_a_fenced_append_is_ended_and_its_retry_stores_once(
    migrated_url: str,
) -> None:
    """The daemon's connection factory and append path: a session that began a fenced append
    (the append lock held) and then went quiet, as a frozen process does, is ended by the
    server after the timeout; another writer gets through meanwhile; the stalled writer sees
    a lost connection (the database-unavailable family) and its batch, appended again on a
    new connection, is stored once."""
    timeout = 1.0
    config = with_database_url(
        Config(database=DatabaseConfig(idle_in_transaction_timeout_seconds=timeout)),
        migrated_url,
    )
    admin = await asyncpg.connect(migrated_url)
    try:
        mine, other = await create_meters(admin, 2)
        epoch = await admin.fetchval(
            "INSERT INTO flowsd.meter_lease (meter_id, daemon, epoch, expires_at) "
            "VALUES ($1, 'a', nextval('flowsd.meter_lease_epoch_seq'), now() + interval '1 hour')"
            " RETURNING epoch",
            mine,
        )
    finally:
        await admin.close()
    batch = [balance_event(mine, n) for n in range(3)]
    stalled = await connect(migrated_url, settings=daemon_settings(config))
    writer = await connect(migrated_url, settings=daemon_settings(config))
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.fetchrow(
            "SELECT * FROM flowsd.begin_fenced_event_append($1::uuid[], $2::bigint[])",
            [mine],
            [epoch],
        )
        stalled_at = time.monotonic()
        with anyio.fail_after(timeout + 5):
            result = await append_batch(writer, [balance_event(other, 1)])
        waited = time.monotonic() - stalled_at
        assert len(result.events) == 1
        assert timeout - 0.2 < waited < timeout + 1.0, waited
        with pytest.raises(DATABASE_ERRORS) as lost:
            await stalled.fetchval("SELECT 1")
        assert is_connection_lost(lost.value), repr(lost.value)
        await close_quietly(stalled)

        retried = await connect(migrated_url, settings=daemon_settings(config))
        try:
            again = await append_batch(retried, batch, epochs={mine: epoch})
        finally:
            await retried.close()
        assert (len(again.events), again.duplicates, again.fenced_events) == (3, 0, 0)
        stored = await writer.fetchval(
            "SELECT count(*) FROM flows.meter_event_log WHERE meter_id = $1", mine
        )
        assert stored == 3
    finally:
        await close_quietly(stalled)
        await writer.close()
