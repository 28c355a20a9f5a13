"""A read for a meter another daemon owns, passed on through ``flowsd.meter_command``.

With several daemons sharing the fleet (:mod:`flowsd.meters.ownership`), a mediator client
may call any of them. A daemon that does not hold the meter's lease inserts a ``read`` row
(the object by name, expiring with the caller's deadline) and waits for its outcome: the
owner's command table claims the row like any other (woken by the insert's NOTIFY), runs the
read in the meter's session and writes the outcome (its whole answer in
``result.response_hex``), announced with ``NOTIFY flowsd_meter_command_done``. The row is
looked at again every second in case a notification is missed. A row nobody took before
the deadline is failed by this daemon, so it never runs late.

Only reads are passed on: writes and raw exchanges have no kind in the command table (its
kinds are the operator's commands), so for those the caller is told which daemon to call.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import anyio
import asyncpg

from flowsd.control.table import DONE_CHANNEL
from flowsd.db.errors import DATABASE_ERRORS
from flowsd.meters.command import CommandResult
from flowsd.meters.supervisor import CommandRefusedError

_INSERT = """
INSERT INTO flowsd.meter_command (idempotency_key, serial, kind, arguments, client, expires_at)
VALUES ($1, $2, 'read', jsonb_build_object('object', $3::text), $4,
        now() + make_interval(secs => $5))
RETURNING id
"""
_OUTCOME = "SELECT status, result::text AS result, error FROM flowsd.meter_command WHERE id = $1"
_GIVE_UP = """
UPDATE flowsd.meter_command SET status = 'failed', finished_at = now(),
       error = 'expired: the caller''s deadline passed before the owner took it'
WHERE id = $1 AND status = 'pending'
"""
_OWNER = """
SELECT l.daemon FROM flowsd.meter_lease l WHERE l.meter_id = $1 AND l.expires_at > now()
"""
# Reads wait for the owner at most this long when the caller set no deadline.
_LONGEST = 75.0


async def owner_of(pool: asyncpg.Pool, meter_id: uuid.UUID) -> str | None:
    """The daemon holding the meter's lease now, if any."""
    owner: str | None = await pool.fetchval(_OWNER, meter_id)
    return owner


async def forward_read(
    pool: asyncpg.Pool,
    *,
    serial: str,
    object_name: str,
    client: str,
    wait_seconds: float,
) -> CommandResult:
    """Have the meter's owner read ``object_name``; its result (or a refusal)."""
    wait = wait_seconds if math.isfinite(wait_seconds) else _LONGEST
    done = anyio.Event()
    try:
        async with pool.acquire() as conn:

            def notified(*args: Any) -> None:
                done.set()

            await conn.add_listener(DONE_CHANNEL, notified)
            try:
                key = f"forwarded:{uuid.uuid4()}"
                row_id = await conn.fetchval(_INSERT, key, serial, object_name, client, wait)
                with anyio.move_on_after(wait):
                    while True:
                        row = await conn.fetchrow(_OUTCOME, row_id)
                        if row is not None and row["status"] in ("succeeded", "failed"):
                            return _result(row)
                        with anyio.move_on_after(1.0):
                            await done.wait()
                        done = anyio.Event()
                await conn.execute(_GIVE_UP, row_id)
                row = await conn.fetchrow(_OUTCOME, row_id)
                if row is not None and row["status"] in ("succeeded", "failed"):
                    return _result(row)
                return CommandResult(
                    ok=False,
                    reason="deadline",
                    detail="the meter's owner did not answer before the deadline",
                )
            finally:
                await conn.remove_listener(DONE_CHANNEL, notified)
    except DATABASE_ERRORS as exc:
        raise CommandRefusedError("unavailable", f"database: {exc}") from None


def _result(row: asyncpg.Record) -> CommandResult:
    body: dict[str, Any] = json.loads(row["result"]) if row["result"] else {}
    response = body.get("response_hex")
    if row["status"] == "succeeded" and isinstance(response, str):
        return CommandResult(ok=True, response=bytes.fromhex(response), started=True)
    reason = body.get("reason") or "unavailable"
    return CommandResult(
        ok=False,
        reason=reason,
        nak=body.get("nak"),
        detail=body.get("detail") or row["error"] or "",
        started=bool(body),
    )
