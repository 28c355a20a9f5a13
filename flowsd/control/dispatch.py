"""From a serial to the meter's session: the one path of every command (gRPC, table, CLI).

:meth:`Dispatcher.lookup` names the meter (a serial this daemon polls, or one the registry
knows but nobody polls: passive, without an address, or polled by another daemon), and
:meth:`Dispatcher.run` queues a command in the meter's session and waits for its result
until the caller's deadline. A command still queued at the deadline is taken back (never
run); one already started runs to its end (its outcome is recorded either way).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from uuid import UUID

import anyio
import asyncpg
import msgspec

from flowsd.db.errors import DATABASE_ERRORS
from flowsd.meters.command import CommandResult, MeterCommand, refused
from flowsd.meters.supervisor import CommandRefusedError, FleetSupervisor

PoolOf = Callable[[], "asyncpg.Pool | None"]

_LOOKUP = """
SELECT r.id, r.serial, r.mode::text AS mode, r.ip_address IS NOT NULL AS addressed, e.code AS esco
FROM flows.meter_registry r LEFT JOIN flows.escos e ON e.id = r.esco
WHERE r.serial = $1
"""


class MeterRef(msgspec.Struct, frozen=True):
    """A meter named by a caller. ``polled``: this daemon holds its session."""

    meter_id: UUID
    serial: str
    polled: bool
    esco: str | None = None
    why_not_polled: str = ""
    # Active and addressed: another daemon polls it (or will), reads can be passed on.
    forwardable: bool = False


class Dispatcher:
    """Resolves serials and runs commands through the fleet supervisor."""

    def __init__(self, supervisor: FleetSupervisor, pool: PoolOf) -> None:
        self.supervisor = supervisor
        self.pool_of = pool  # the daemon's pool (None until the database first answered)

    async def lookup(self, serial: str, *, need_esco: bool = False) -> MeterRef:
        """The meter with ``serial``; raises CommandRefusedError ``not_found`` for a serial
        the registry does not know (``unavailable`` when the database cannot tell)."""
        meter_id = self.supervisor.meter_id_of(serial)
        if meter_id is not None and not need_esco:
            return MeterRef(meter_id, serial, polled=True)
        row = await self._fetch_row(serial)
        if row is None:
            if meter_id is not None:  # polled, but gone from the registry since the last load
                return MeterRef(meter_id, serial, polled=True)
            raise CommandRefusedError("not_found", f"no meter with serial {serial!r}")
        if meter_id is not None:
            return MeterRef(meter_id, serial, polled=True, esco=row["esco"])
        if row["mode"] != "active":
            why = f"the meter is {row['mode']}"
        elif not row["addressed"]:
            why = "the meter has no IP address"
        else:
            why = "the meter is not polled by this daemon"
        return MeterRef(
            row["id"],
            serial,
            polled=False,
            esco=row["esco"],
            why_not_polled=why,
            forwardable=row["mode"] == "active" and row["addressed"],
        )

    async def _fetch_row(self, serial: str) -> asyncpg.Record | None:
        pool = self.pool_of()
        if pool is None:
            raise CommandRefusedError("unavailable", "the database is not reachable yet")
        try:
            row: asyncpg.Record | None = await pool.fetchrow(_LOOKUP, serial)
        except DATABASE_ERRORS as exc:
            raise CommandRefusedError("unavailable", f"database: {exc}") from None
        return row

    async def run(
        self,
        ref: MeterRef,
        command: MeterCommand,
        *,
        wait_seconds: float,
    ) -> CommandResult:
        """Queue ``command`` for the meter and wait for its result, at most
        ``wait_seconds`` for it to start; raises CommandRefusedError when it cannot be
        queued."""
        if not ref.polled:
            raise CommandRefusedError("unavailable", ref.why_not_polled)
        finite = math.isfinite(wait_seconds)
        command.deadline = time.monotonic() + wait_seconds if finite else math.inf
        await self.supervisor.submit(ref.meter_id, command)
        try:
            with anyio.move_on_after(wait_seconds):
                return await command.wait()
        finally:
            if command.state == "queued":
                with anyio.CancelScope(shield=True):
                    late = refused("deadline", "the caller's deadline passed in the queue")
                    await self.supervisor.withdraw(ref.meter_id, command, late)
        if command.result is not None:
            return command.result
        return refused("deadline", "the caller's deadline passed while the command ran")
