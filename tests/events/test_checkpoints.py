"""Projector checkpoints: compare-and-set, inside the projector's own transaction."""

from __future__ import annotations

import asyncpg
import pytest

from flowsd.events.checkpoints import (
    CheckpointConflictError,
    advance_checkpoint,
    read_checkpoint,
)


async def test_a_new_projector_starts_at_zero_and_advances(conn: asyncpg.Connection) -> None:
    assert await read_checkpoint(conn, "shadows") == 0
    async with conn.transaction():
        await advance_checkpoint(conn, "shadows", expected=0, new=10)
    async with conn.transaction():
        await advance_checkpoint(conn, "shadows", expected=10, new=25)
    assert await read_checkpoint(conn, "shadows") == 25
    assert await read_checkpoint(conn, "other") == 0


async def test_a_stale_expected_value_conflicts(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await advance_checkpoint(conn, "shadows", expected=0, new=10)
    for stale in (0, 5):
        with pytest.raises(CheckpointConflictError, match="is at 10"):
            async with conn.transaction():
                await advance_checkpoint(conn, "shadows", expected=stale, new=30)
    assert await read_checkpoint(conn, "shadows") == 10


async def test_checkpoint_moves_with_the_projection_or_not_at_all(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE projected (n int)")
    with pytest.raises(RuntimeError, match="boom"):
        async with conn.transaction():
            await conn.execute("INSERT INTO projected VALUES (1)")
            await advance_checkpoint(conn, "p", expected=0, new=1)
            raise RuntimeError("boom")
    assert await read_checkpoint(conn, "p") == 0
    assert await conn.fetchval("SELECT count(*) FROM projected") == 0


async def test_two_instances_of_one_projector_cannot_both_apply(
    migrated_url: str, conn: asyncpg.Connection
) -> None:
    other = await asyncpg.connect(migrated_url)
    try:
        async with conn.transaction():
            await advance_checkpoint(conn, "p", expected=0, new=5)
        with pytest.raises(CheckpointConflictError):
            async with other.transaction():
                await advance_checkpoint(other, "p", expected=0, new=7)
    finally:
        await other.close()
    assert await read_checkpoint(conn, "p") == 5


async def test_outside_a_transaction_or_backwards_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(RuntimeError, match="inside"):
        await advance_checkpoint(conn, "p", expected=0, new=1)
    with pytest.raises(ValueError, match="back"):
        async with conn.transaction():
            await advance_checkpoint(conn, "p", expected=3, new=1)
