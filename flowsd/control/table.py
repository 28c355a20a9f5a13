"""Commands from ``flowsd.meter_command``: claimed by the daemon that polls the meter, run
once, the outcome written on the row (and in the log and the event log).

Apps that cannot speak gRPC (PostgREST, ``flowsd meter``) insert a row (migration 80); the
insert's ``NOTIFY flowsd_meter_command`` wakes the daemon, which also looks every
``[commands] table_poll_seconds``. A row is *claimed* (``status = 'running'``, this daemon's
instance and run id, its token moved out of ``flowsd_secret`` in the same transaction) only
for a meter in this daemon's fleet, oldest first and one at a time per meter, and is then
queued in the meter's session like any command. Its outcome is written back with ``NOTIFY
flowsd_meter_command_done`` (payload: the row id); a database outage only delays that write.

Exactly once: a claimed row is never claimed again. A command still queued when the daemon
stops is handed back (``pending`` again, token restored) for the next start; a row found
``running`` under an earlier run of this instance at start-up was cut off by a crash: it is
marked failed (``interrupted``, outcome unknown), never run twice, and what it may have
changed is read back.

Several daemons (:mod:`flowsd.meters.ownership`): each offers only the meters of its fleet
(whose lease it believes it holds, not those it is about to hand over), so a row reaches
the daemon that owns its meter. The claim is fenced like an append: in one transaction,
under the event log's append lock (shared: claims do not wait for each other, but every
change of hands is ordered with them), the claiming statement itself takes only rows of
meters whose lease row names this daemon, unexpired, at the epoch it holds. A daemon that
was paused past its lease therefore leaves a row of a meter that moved on to the new holder;
such a row is counted in ``flowsd_fenced_commands_total{source="database"}`` and the lease
loop renews at once, dropping the lost meters. A lease still this daemon's but not renewed
in time (e.g. after a database outage) is renewed at once too, and its rows are claimed at
the next look. A claimed row that writes is fenced again as the meter's session starts it,
before anything is sent (:meth:`flowsd.meters.ownership.Ownership.fence`): a lease that
passed on while the row waited (the daemon stalled after its claim) fails the row,
``unavailable`` with the holder named in its ``error``, counted the same way; the row is not
run by the new holder (insert it again). Without leases (``leases`` not given) neither is
fenced.

Left open: a row left ``running`` by a daemon that died for good is marked ``interrupted``
only when a daemon of that instance name starts again.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from flowsd.backoff import Backoff, Retry
from flowsd.control.dispatch import Dispatcher
from flowsd.db.connect import close_quietly
from flowsd.db.errors import DATABASE_ERRORS, describe
from flowsd.db.listen import ListeningConnection
from flowsd.emop import EncodeError, UnknownObjectError, by_id, by_name
from flowsd.emop.view import operator_value, to_json
from flowsd.events.appender import AppenderClosedError
from flowsd.events.store import APPEND_LOCK_KEY
from flowsd.meters import operations as commands
from flowsd.meters.command import CommandResult, MeterCommand
from flowsd.meters.observations import CommandOutcome
from flowsd.meters.operations import Operation, ReadObject
from flowsd.meters.ownership import Ownership
from flowsd.meters.plan import TARIFFS_FUTURE
from flowsd.meters.supervisor import CommandRefusedError

log = structlog.get_logger("flowsd.control")

NOTIFY_CHANNEL = "flowsd_meter_command"
DONE_CHANNEL = "flowsd_meter_command_done"
# Command ids in events are derived from the row, so a command's events can be found by row.
ROW_NAMESPACE = UUID("0b7f3c52-8d0e-4f57-a3a5-2b6c50f5d4b1")
_WRITE_RETRY = Backoff(2.0, 30.0)

# The meters offered ({meters}): every one (no leases), or those whose lease row names this
# daemon ($3), unexpired, at the epoch it holds ($5, in the order of $1).
_CLAIM = """
WITH next AS (
    SELECT c.id FROM flowsd.meter_command c
    WHERE c.status = 'pending' AND c.meter_id IN ({meters}) AND c.expires_at > now()
      AND NOT EXISTS (SELECT FROM flowsd.meter_command p
                      WHERE p.meter_id = c.meter_id AND p.status = 'pending' AND p.id < c.id)
    ORDER BY c.id
    LIMIT $2
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE flowsd.meter_command c
SET status = 'running', claimed_by = $3, claim_run = $4, claimed_at = now()
FROM next WHERE c.id = next.id
RETURNING c.id, c.idempotency_key, c.serial, c.meter_id, c.kind, c.arguments::text AS arguments,
          c.requested_by, c.client, c.expires_at
"""
_CLAIM_ANY = _CLAIM.format(meters="SELECT unnest($1::uuid[])")
_CLAIM_HELD = _CLAIM.format(
    meters="""SELECT held.meter_id FROM unnest($1::uuid[], $5::bigint[]) AS held(meter_id, epoch)
            JOIN flowsd.meter_lease lease USING (meter_id)
            WHERE lease.daemon = $3 AND lease.epoch = held.epoch AND lease.expires_at > now()"""
)
_PENDING = """
SELECT DISTINCT meter_id FROM flowsd.meter_command
WHERE status = 'pending' AND meter_id = ANY($1::uuid[]) AND expires_at > now()
"""
# Every meter with a pending row (the partial index on pending rows; usually none): a look
# need not send the whole fleet's ids to find out that nothing waits. With several daemons
# each sees the others' pending meters too, and offers only its own.
_PENDING_ANY = """
SELECT DISTINCT meter_id FROM flowsd.meter_command
WHERE status = 'pending' AND expires_at > now()
"""
# Of (meter, epoch) pairs, those whose lease is not (or no longer) this daemon's, with the
# holder named by the lease row (null: nobody) and whether it is still this daemon's, at
# that epoch, only not renewed in time (lapsed).
_NOT_HELD = """
SELECT held.meter_id, lease.daemon,
       coalesce(lease.daemon = $3 AND lease.epoch = held.epoch, false) AS lapsed
FROM unnest($1::uuid[], $2::bigint[]) AS held(meter_id, epoch)
LEFT JOIN flowsd.meter_lease lease USING (meter_id)
WHERE (lease.daemon = $3 AND lease.epoch = held.epoch AND lease.expires_at > now()) IS NOT TRUE
"""
_TAKE_TOKENS = """
DELETE FROM flowsd_secret.meter_command_token WHERE command_id = ANY($1::bigint[])
RETURNING command_id, token
"""
# Commands nobody will run: expired, or for a meter that is not pollable (passive, no address).
_GIVE_UP = """
WITH gone AS (
    UPDATE flowsd.meter_command c
    SET status = 'failed', finished_at = now(),
        error = CASE WHEN c.expires_at <= now()
                     THEN 'expired: not started before ' || c.expires_at::text
                     ELSE 'unavailable: the meter is passive or has no address' END
    WHERE c.status = 'pending'
      AND (c.expires_at <= now() OR NOT EXISTS (
            SELECT FROM flows.meter_registry r
            WHERE r.id = c.meter_id AND r.mode = 'active' AND r.ip_address IS NOT NULL))
    RETURNING c.id
), tokens AS (
    DELETE FROM flowsd_secret.meter_command_token t USING gone WHERE t.command_id = gone.id
)
SELECT id, pg_notify('flowsd_meter_command_done', id::text) FROM gone
"""
_INTERRUPTED = """
UPDATE flowsd.meter_command
SET status = 'failed', finished_at = now(),
    error = 'interrupted: the daemon stopped while the command ran; its outcome is unknown'
WHERE status = 'running' AND claimed_by = $1 AND claim_run IS DISTINCT FROM $2
RETURNING id, meter_id, serial, kind, pg_notify('flowsd_meter_command_done', id::text)
"""
_FINISH = """
UPDATE flowsd.meter_command SET status = $2, result = $3::jsonb, error = $4, finished_at = now()
WHERE id = $1 AND status = 'running' AND claim_run = $5
RETURNING pg_notify('flowsd_meter_command_done', id::text)
"""
_RELEASE = """
UPDATE flowsd.meter_command
SET status = 'pending', claimed_by = NULL, claim_run = NULL, claimed_at = NULL
WHERE id = $1 AND status = 'running' AND claim_run = $2
"""
_RESTORE_TOKEN = """
INSERT INTO flowsd_secret.meter_command_token (command_id, token) VALUES ($1, $2)
ON CONFLICT DO NOTHING
"""
# What a command of each kind may have changed (read back after a crash cut it off).
READBACK: dict[str, tuple[str, ...]] = {
    "top_up": ("prepay_balance",),
    "set_clock": ("time",),
    "future_tariff": TARIFFS_FUTURE,
    "prepay": ("prepay_enabled_flag",),
}


class CommandRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    idempotency_key: str
    serial: str
    meter_id: UUID
    kind: str
    arguments: dict[str, Any]
    requested_by: str
    client: str | None
    expires_at: datetime
    token: str | None = None

    @property
    def command_id(self) -> UUID:
        return uuid.uuid5(ROW_NAMESPACE, str(self.id))

    def describe_client(self) -> str:
        who = f"{self.requested_by}" + (f" for {self.client}" if self.client else "")
        return f"{who} (meter_command {self.id}, key {self.idempotency_key})"


class InvalidCommandError(Exception):
    """A row whose arguments cannot make a command."""


def _decimal(arguments: dict[str, Any], name: str, default: Decimal | None = None) -> Decimal:
    value = arguments.get(name)
    if value is None:
        if default is None:
            raise InvalidCommandError(f"arguments.{name} is missing")
        return default
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise InvalidCommandError(f"arguments.{name} is not a number: {value!r}") from None


def _activation(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidCommandError("arguments.activation is missing (an ISO date and time)")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidCommandError(f"arguments.activation is not ISO 8601: {value!r}") from None
    # The reference encodes the value as given, naive input taken as UTC (SPEC §7).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def operation_for(row: CommandRow) -> Operation:
    """The operation a row asks for; InvalidCommandError for bad arguments."""
    args = row.arguments
    try:
        match row.kind:
            case "read":
                return ReadObject(by_name(str(args.get("object", ""))).id)
            case "top_up":
                if not row.token:
                    raise InvalidCommandError("the token is gone (claimed before?)")
                return commands.top_up(row.token)
            case "set_clock":
                return commands.set_clock()
            case "prepay":
                enabled = args.get("enabled")
                if not isinstance(enabled, bool):
                    raise InvalidCommandError("arguments.enabled must be true or false")
                return commands.prepay(enabled)
            case "future_tariff":
                from flowsd.emop import writes  # noqa: PLC0415

                return commands.future_tariff(
                    activation=_activation(args.get("activation")),
                    unit_rate=_decimal(args, "unit_rate"),
                    standing_charge=_decimal(args, "standing_charge"),
                    emergency_credit=_decimal(
                        args, "emergency_credit", writes.DEFAULT_EMERGENCY_CREDIT
                    ),
                    ecredit_availability=_decimal(
                        args, "ecredit_availability", writes.DEFAULT_ECREDIT_AVAILABILITY
                    ),
                    debt_recovery_rate=_decimal(
                        args, "debt_recovery_rate", writes.DEFAULT_DEBT_RECOVERY_RATE
                    ),
                )
    except UnknownObjectError as exc:
        raise InvalidCommandError(str(exc)) from None
    except EncodeError as exc:
        raise InvalidCommandError(str(exc)) from None
    raise InvalidCommandError(f"unknown kind {row.kind!r}")


def result_json(result: CommandResult) -> dict[str, Any]:
    """What goes into ``meter_command.result``."""
    body: dict[str, Any] = {
        "ok": result.ok,
        "reason": result.reason,
        "nak": result.nak,
        "detail": result.detail,
        "writes_acknowledged": result.writes_acknowledged,
        "writes_total": result.writes_total,
        "interrupted": result.interrupted,
        "readback": result.readback,
    }
    if result.response is not None and result.record is not None and len(result.response) >= 4:
        oid = int.from_bytes(result.response[1:4], "big")
        info = by_id(oid)
        value, unit = operator_value(info, result.record)
        body["object"] = info.name if info else f"{oid:06x}"
        body["value"] = to_json(value) if value is not None else to_json(result.record)
        body["unit"] = unit
        body["payload_hex"] = result.response[5:].hex()
        body["response_hex"] = result.response.hex()  # the whole data field (forwarded reads)
    return body


Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Claim(msgspec.Struct, frozen=True):
    """What one claim took; the meters it left because their lease passed on (with the
    holder the lease row names, None for nobody), and those left because this daemon's
    lease lapsed unrenewed (still its own, at its epoch)."""

    rows: list[CommandRow]
    fenced: dict[UUID, str | None] = {}
    lapsed: list[UUID] = []


async def claim_rows(
    conn: asyncpg.Connection,
    meters: list[UUID],
    held: Mapping[UUID, int] | None,
    *,
    instance: str,
    run_id: UUID,
    limit: int,
) -> Claim:
    """Claim (oldest first, one per meter) up to ``limit`` pending rows of ``meters`` for
    daemon ``instance``, in one transaction. With ``held`` (meter -> the lease epoch this
    daemon holds) only meters whose lease the database agrees on are claimed (see the
    module docstring); meters missing from ``held`` are not offered."""
    async with conn.transaction():
        if held is None:
            rows = await conn.fetch(_CLAIM_ANY, meters, limit, instance, run_id)
            fenced: dict[UUID, str | None] = {}
            lapsed: list[UUID] = []
        else:
            # Most claims find nothing: they need not queue for the append lock.
            pending = [r["meter_id"] for r in await conn.fetch(_PENDING, meters)]
            offered = [m for m in pending if m in held]
            if not offered:
                return Claim([])
            epochs = [held[m] for m in offered]
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", APPEND_LOCK_KEY)
            rows = await conn.fetch(_CLAIM_HELD, offered, limit, instance, run_id, epochs)
            claimed = {r["meter_id"] for r in rows}
            rest = [m for m in offered if m not in claimed]
            fenced = {}
            lapsed = []
            if rest:
                stale = await conn.fetch(_NOT_HELD, rest, [held[m] for m in rest], instance)
                fenced = {r["meter_id"]: r["daemon"] for r in stale if not r["lapsed"]}
                lapsed = [r["meter_id"] for r in stale if r["lapsed"]]
        if not rows:
            return Claim([], fenced, lapsed)
        tokens = dict(
            (r["command_id"], r["token"])
            for r in await conn.fetch(_TAKE_TOKENS, [r["id"] for r in rows])
        )
    claimed_rows = []
    for row in rows:
        values = dict(row)
        values["arguments"] = msgspec.json.decode(values["arguments"])
        claimed_rows.append(CommandRow(**values, token=tokens.get(row["id"])))
    return Claim(claimed_rows, fenced, lapsed)


@dataclass(eq=False)
class CommandTable:
    """The daemon's side of ``flowsd.meter_command`` (see the module docstring)."""

    connect: Connect
    dispatcher: Dispatcher
    _: KW_ONLY
    instance: str
    poll_seconds: float
    leases: Ownership | None = None
    run_id: uuid.UUID = field(default_factory=uuid.uuid4, init=False)
    claimed: int = field(default=0, init=False)
    finished: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.supervisor = self.dispatcher.supervisor
        self._wake = anyio.Event()
        self._listening = ListeningConnection(self.connect, NOTIFY_CHANNEL, self._notified)
        self._busy: set[UUID] = set()  # meters with a command of ours in flight
        self._tasks: TaskGroup | None = None
        self._stopping = False
        self._idle = anyio.Event()
        self._idle.set()
        self._running = 0

    # ----------------------------------------------------------------- the loop

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        recovered = False
        try:
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                task_status.started()
                while not self._stopping:
                    try:
                        conn = await self._listening.connection()
                        if not recovered:
                            await self._recover(conn)
                            recovered = True
                        await conn.fetch(_GIVE_UP)
                        for row in await self._claim(conn):
                            self._start(tg, row)
                    except DATABASE_ERRORS as exc:
                        log.warning("command table not read; will retry", error=describe(exc))
                        await self._listening.close()
                    with anyio.move_on_after(self.poll_seconds):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                await self._idle.wait()
        finally:
            self._tasks = None
            await self._listening.close()

    async def stop(self) -> None:
        """Claim nothing more; returns when every claimed command is finished or handed
        back (call after the supervisor stopped: queued commands then fail fast)."""
        self._stopping = True
        self._wake.set()
        await self._idle.wait()

    def _notified(self) -> None:
        self._wake.set()

    async def _recover(self, conn: asyncpg.Connection) -> None:
        """Rows an earlier run of this instance left running: cut off by a crash.

        A row is marked failed in the transaction that hands its COMMAND_FAILED event to the
        appender, which then commits or spills it: when the appender refuses (the daemon is
        stopping), the rows stay running for the next start to recover, so a row is never
        failed without its event.
        """
        try:
            async with conn.transaction():
                for row in await conn.fetch(_INTERRUPTED, self.instance, self.run_id):
                    await self._interrupted(row)
        except AppenderClosedError:
            log.warning("interrupted commands left for the next start: the daemon is stopping")

    async def _interrupted(self, row: asyncpg.Record) -> None:
        log.warning(
            "meter command interrupted by a daemon stop; outcome unknown",
            meter_command=row["id"],
            meter_serial=row["serial"],
            kind=row["kind"],
        )
        session = self.supervisor.sessions.get(row["meter_id"])
        await self.supervisor.sink(
            [
                CommandOutcome(
                    meter_id=row["meter_id"],
                    serial=row["serial"],
                    read_at=datetime.now(UTC),
                    command_id=uuid.uuid5(ROW_NAMESPACE, str(row["id"])),
                    lane=uuid.uuid5(ROW_NAMESPACE, str(row["id"])),
                    operation=row["kind"],
                    recorded=True,
                    ok=False,
                    reason="interrupted",
                    detail="the daemon stopped while the command ran; outcome unknown",
                )
            ]
        )
        readback = READBACK.get(row["kind"])
        if session is not None and readback:
            session.read_back_later(readback, settle=False)
            self.supervisor.wake(row["meter_id"])

    async def _claim(self, conn: asyncpg.Connection) -> list[CommandRow]:
        supervisor = self.supervisor
        sessions = supervisor.sessions
        waiting = [r["meter_id"] for r in await conn.fetch(_PENDING_ANY)]
        free = [
            m
            for m in waiting
            if m in sessions and m not in self._busy and not supervisor.is_held_back(m)
        ]
        if not free:
            return []
        held = self.leases.held if self.leases is not None else None
        claim = await claim_rows(
            conn, free, held, instance=self.instance, run_id=self.run_id, limit=100
        )
        if claim.fenced and self.leases is not None:
            log.warning(
                "meter commands left to the meters' new holders: this daemon's leases moved on",
                meters=len(claim.fenced),
                holders=sorted({h or "nobody" for h in claim.fenced.values()}),
            )
            self.leases.fenced("database", len(claim.fenced))
        if claim.lapsed and self.leases is not None:
            self.leases.renew_soon()  # claimed at the next look, once renewed
        self.claimed += len(claim.rows)
        return claim.rows

    def _start(self, tg: TaskGroup, row: CommandRow) -> None:
        self._busy.add(row.meter_id)
        self._running += 1
        if self._running == 1:
            self._idle = anyio.Event()
        tg.start_soon(self._execute, row)

    # ----------------------------------------------------------------- one command

    async def _execute(self, row: CommandRow) -> None:
        logger = log.bind(meter_command=row.id, meter_serial=row.serial, kind=row.kind)
        try:
            try:
                status, result, error, release = await self._run_row(row)
            except Exception as exc:  # a flowsd bug: the row gets an answer, the daemon runs on
                logger.exception("meter command failed unexpectedly")
                status, result, error, release = (
                    "failed",
                    {"ok": False},
                    f"internal: {exc!r}",
                    False,
                )
            if release:
                await self._write(logger, _RELEASE, row.id, self.run_id)
                if row.token:
                    await self._write(logger, _RESTORE_TOKEN, row.id, row.token)
                logger.info("meter command handed back for the next start")
                return
            payload = msgspec.json.encode(result).decode()
            await self._write(logger, _FINISH, row.id, status, payload, error, self.run_id)
            self.finished += 1
            logger.info("meter command finished", status=status, error=error)
        finally:
            self._busy.discard(row.meter_id)
            self._running -= 1
            if self._running == 0:
                self._idle.set()
            self._wake.set()

    async def _run_row(self, row: CommandRow) -> tuple[str, dict[str, Any], str | None, bool]:
        """(status, result, error, hand back?) for one claimed row."""
        wait = max(0.0, (row.expires_at - datetime.now(UTC)).total_seconds())
        if row.kind == "poll":
            return await self._poll(row, wait)
        try:
            operation = operation_for(row)
        except InvalidCommandError as exc:
            return "failed", {"ok": False, "reason": "invalid"}, f"invalid: {exc}", False
        command = MeterCommand(
            operation,
            source="database",
            client=row.describe_client(),
            command_id=row.command_id,
        )
        if self.leases is not None:
            self.leases.fence(command, self.dispatcher.pool_of, row.meter_id)
        try:
            ref = await self.dispatcher.lookup(row.serial)
            result = await self.dispatcher.run(ref, command, wait_seconds=wait)
        except CommandRefusedError as exc:
            return _refused(exc)
        if result.reason == "stopped" and not result.started:
            return "failed", {}, None, True
        body = result_json(result)
        if result.ok:
            return "succeeded", body, None, False
        what = f"NAK {result.nak}" if result.nak else result.reason
        return "failed", body, f"{what}: {result.detail}" if result.detail else what, False

    async def _poll(
        self, row: CommandRow, wait: float
    ) -> tuple[str, dict[str, Any], str | None, bool]:
        try:
            request = self.supervisor.poll_now(row.meter_id)
        except CommandRefusedError as exc:
            return _refused(exc)
        with anyio.move_on_after(wait if math.isfinite(wait) else None):
            outcome = await request.wait()
            if outcome is None:
                return "failed", {}, None, True  # stopped before it ran
            body = {
                "ok": outcome.ok,
                "reason": outcome.reason,
                "detail": outcome.detail,
                "requests": outcome.requests,
                "failed_requests": outcome.failed_requests,
                "online": outcome.online,
                "duration_seconds": round(outcome.duration_seconds, 3),
            }
            if outcome.ok:
                return "succeeded", body, None, False
            return "failed", body, f"{outcome.reason}: {outcome.detail}", False
        return (
            "failed",
            {"ok": False, "reason": "deadline"},
            "expired: the poll did not end in time",
            False,
        )

    async def _write(self, logger: Any, query: str, *args: object) -> None:
        """Write to the row until it works (a database outage delays the outcome; the
        command's events are already with the appender)."""
        retry = Retry(_WRITE_RETRY)
        for attempt in range(1_000_000):
            if self._stopping and attempt >= 3:
                logger.error(
                    "meter command outcome not written; the next start marks it interrupted"
                )
                return
            try:
                conn = await self.connect()
                try:
                    await conn.fetch(query, *args)
                    return
                finally:
                    await close_quietly(conn)
            except DATABASE_ERRORS as exc:
                logger.warning(
                    "meter command outcome not written yet; retrying", error=describe(exc)
                )
                await anyio.sleep(retry.next_delay())


def _refused(exc: CommandRefusedError) -> tuple[str, dict[str, Any], str | None, bool]:
    """A refused row fails, unless the daemon is stopping: then it is handed back."""
    if exc.reason == "stopping":
        return "failed", {}, None, True
    return "failed", {"ok": False, "reason": exc.reason}, f"{exc.reason}: {exc.detail}", False
