"""The caller's side of ``flowsd.meter_command``: insert a command, wait for its outcome.

What ``flowsd meter`` and ``flowsd poll`` do, and what any app may do over SQL or
PostgREST: insert with an idempotency key (the same key again finds the same row), then
``LISTEN flowsd_meter_command_done`` (payload: the row id) and read the row, with a
fallback poll. The command's ``expires_at`` is the caller's deadline: a command no daemon
started by then is never run.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import asyncpg

from flowsd.control.table import DONE_CHANNEL
from flowsd.errors import UserError

_INSERT = """
INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, arguments, client, expires_at)
VALUES ($1, $2, $3, $4::jsonb, $5, now() + make_interval(secs => $6))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
_BY_KEY = "SELECT id, serial, kind FROM flowsd.meter_command WHERE idempotency_key = $1"
_ROW = """
SELECT id, serial, kind, status, result::text AS result, error, requested_at, claimed_by,
       claimed_at, finished_at, expires_at
FROM flowsd.meter_command WHERE id = $1
"""
_FALLBACK_POLL_SECONDS = 1.0


async def submit(
    conn: asyncpg.Connection,
    serial: str,
    kind: str,
    arguments: dict[str, Any],
    *,
    key: str,
    client: str | None,
    expires_in: float,
) -> int:
    """Insert the command (or find the one with this key); its row id. Unknown serials and
    malformed arguments are UserErrors (the table's trigger refuses them)."""
    try:
        row_id: int | None = await conn.fetchval(
            _INSERT, key, serial, kind, json.dumps(arguments), client, expires_in
        )
    except asyncpg.NoDataFoundError as exc:
        raise UserError(str(exc)) from None
    except asyncpg.InvalidParameterValueError as exc:
        raise UserError(str(exc)) from None
    except asyncpg.UndefinedTableError:
        raise UserError("the database has no command table: run `flowsd migrate`") from None
    if row_id is not None:
        return row_id
    existing = await conn.fetchrow(_BY_KEY, key)
    assert existing is not None
    if existing["serial"] != serial or existing["kind"] != kind:
        raise UserError(
            f"idempotency key {key!r} belongs to command {existing['id']} "
            f"({existing['kind']} for {existing['serial']})"
        )
    return int(existing["id"])


async def wait_outcome(conn: asyncpg.Connection, row_id: int, seconds: float) -> dict[str, Any]:
    """The row once finished, or as it stands after ``seconds``."""
    done = anyio.Event()

    def heard(_c: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == str(row_id):
            done.set()

    await conn.add_listener(DONE_CHANNEL, heard)
    try:
        with anyio.move_on_after(seconds):
            while True:
                row = await fetch(conn, row_id)
                if row["status"] in ("succeeded", "failed"):
                    return row
                with anyio.move_on_after(_FALLBACK_POLL_SECONDS):
                    await done.wait()
        return await fetch(conn, row_id)
    finally:
        await conn.remove_listener(DONE_CHANNEL, heard)


async def fetch(conn: asyncpg.Connection, row_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(_ROW, row_id)
    assert row is not None
    values = dict(row)
    values["result"] = json.loads(values["result"]) if values["result"] else None
    return values
