"""Projector checkpoints in ``flowsd.projector_checkpoint``.

A projector applies a batch and moves its checkpoint in the same transaction, conditionally on
the checkpoint still being where it read it (compare-and-set): a second instance of the same
projector, or a replay running beside it, makes the CAS fail instead of double-applying.
"""

from __future__ import annotations

import asyncpg


class CheckpointConflictError(Exception):
    """The checkpoint was not at the expected position: roll back and re-read."""


async def read_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    """The projector's last applied position; 0 when it never ran."""
    value: int | None = await conn.fetchval(
        "SELECT position FROM flowsd.projector_checkpoint WHERE name = $1", name
    )
    return value or 0


async def advance_checkpoint(
    conn: asyncpg.Connection, name: str, *, expected: int, new: int
) -> None:
    """Move ``name`` from ``expected`` to ``new`` inside the caller's open transaction.

    Raises :class:`CheckpointConflictError` when the stored value is not ``expected``.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("advance_checkpoint must run inside the projection's transaction")
    if new < expected:
        raise ValueError(f"checkpoint {name!r} cannot move back from {expected} to {new}")
    if expected == 0:
        moved = await conn.fetchval(
            """
            INSERT INTO flowsd.projector_checkpoint AS c (name, position) VALUES ($1, $2)
            ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
                WHERE c.position = 0
            RETURNING true
            """,
            name,
            new,
        )
    else:
        moved = await conn.fetchval(
            """
            UPDATE flowsd.projector_checkpoint SET position = $3, updated_at = now()
            WHERE name = $1 AND position = $2
            RETURNING true
            """,
            name,
            expected,
            new,
        )
    if not moved:
        current = await read_checkpoint(conn, name)
        raise CheckpointConflictError(
            f"checkpoint {name!r} is at {current}, not at the expected {expected}"
        )
