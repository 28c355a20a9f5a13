"""Commands: what clients ask of one meter, run by its session between two plan items.

A :class:`MeterCommand` wraps one operation of :mod:`flowsd.meters.operations` (an object
read, a raw exchange, or writes followed by a read-back of what they changed).

The session runs queued commands with the meter's own link (its pacing, never a second
connection) and the command's result is handed to whoever waits for it
(:meth:`MeterCommand.wait`). Commands that change the meter are recorded: a
:class:`~flowsd.meters.observations.CommandRequested` when accepted, a
:class:`~flowsd.meters.observations.CommandOutcome` at the end (also for a sequence cut
short, which says how many writes the meter acknowledged). What a write changed is read
back at once; when the meter could not be reached, or the caller's writes may go on
(``Writes.readback_later``), the read-back is left to the session, which does it when the
meter answers again or the writes have settled. A command may carry a *guard*, awaited as
the session starts it, before anything of it is sent: a refusal it returns is the command's
result (the lease check of a command that is not a plain read, from the mediator or the
command table: :meth:`flowsd.meters.ownership.Ownership.fence`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal, TypedDict
from uuid import UUID

import anyio
import msgspec

from flowsd.emop import (
    EventLogRequest,
    NakCode,
    ProfileLogRequest,
    ReadRequest,
    Record,
    Request,
    WriteRequest,
    by_name,
)
from flowsd.emop.records import EventLog, ProfileLog1, ProfileLog2
from flowsd.fields import same_named
from flowsd.meters.backfill import HALF_HOUR, newest_complete, to_datetime
from flowsd.meters.eventlog import RepeatNumbering
from flowsd.meters.exchange import Answer, Failure, PollAbortError
from flowsd.meters.observations import (
    CommandOutcome,
    CommandRequested,
    CommandSource,
    MeterLogEntry,
    Observation,
)
from flowsd.meters.operations import (
    TOKEN_OBJECT_ID,
    Exchange,
    Operation,
    ReadObject,
    Writes,
    object_name,
    payload_digest,
    readback_of,
    value_text,
)
from flowsd.meters.plan import is_twin_element

if TYPE_CHECKING:
    from flowsd.meters.conversation import Conversation

# The lane of single reads served to clients: their grouped pieces (a tariff read object by
# object) are assembled across requests, apart from the poll's own reads.
CLIENT_READS = UUID("6f1c2a7e-35f4-4b43-9c52-5b7d2a1e0c11")

Reason = str  # a FailureReason or "deadline" | "unavailable" | "stopped" | "precondition"


# --------------------------------------------------------------------- results


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a command came to.

    ``response`` is the answer's whole data field (format byte first) for reads and
    exchanges; ``record`` its decoded record. ``readback`` maps each object read back (or
    read before) to its value as an operator reads it (``before:`` prefix for reads made
    before the writes).
    """

    ok: bool
    reason: Reason | None = None
    detail: str = ""
    nak: str | None = None
    response: bytes | None = None
    record: Record | None = None
    writes_acknowledged: int = 0
    writes_total: int = 0
    readback: dict[str, str] = {}
    started: bool = False

    @property
    def interrupted(self) -> bool:
        return 0 < self.writes_acknowledged < self.writes_total


def refused(reason: Reason, detail: str) -> CommandResult:
    return CommandResult(ok=False, reason=reason, detail=detail)


# Asked as the command starts, before it sends anything: None to go on, or the command's
# result (a refusal).
Guard = Callable[[], Awaitable[CommandResult | None]]


def _failed(failure: Failure, **changes: object) -> CommandResult:
    nak = None
    if failure.reason == "nak":
        nak = _nak_name(failure.detail)
    return CommandResult(
        ok=False,
        reason=failure.reason,
        detail=failure.detail,
        nak=nak,
        started=True,
        **changes,  # type: ignore[arg-type]
    )


def _nak_name(detail: str) -> str:
    # NakError's text: "NAK code 6 (security_not_granted) for object ffc803".
    for code in NakCode:
        if f"({code.name.lower()})" in detail:
            return code.name
    return "UNKNOWN"


class _CommandFields(TypedDict):
    """The fields :class:`CommandRequested` and :class:`CommandOutcome` share."""

    meter_id: UUID
    serial: str | None
    read_at: datetime
    command_id: UUID
    operation: str


class MeterCommand:
    """One queued command and the result its caller waits for."""

    def __init__(
        self,
        operation: Operation,
        *,
        source: CommandSource,
        client: str,
        deadline: float = math.inf,
        command_id: UUID | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.id = command_id or uuid.uuid4()
        self.guard = guard
        self.operation = operation
        self.source = source
        self.client = client
        self.deadline = deadline  # monotonic; a command still queued then is not run
        self.state: Literal["new", "queued", "running", "done"] = "new"
        self.result: CommandResult | None = None
        self._done = anyio.Event()

    @property
    def changes_meter(self) -> bool:
        match self.operation:
            case Writes():
                return True
            case Exchange(request=request):
                return isinstance(request, WriteRequest)
        return False

    @property
    def name(self) -> str:
        match self.operation:
            case Writes(operation=operation):
                return operation
            case ReadObject():
                return "read_element"
        return "raw_exchange"

    def _about(self, meter_id: UUID, serial: str | None, now: datetime) -> _CommandFields:
        """What both of this command's observations (requested, outcome) say of it."""
        return _CommandFields(
            meter_id=meter_id, serial=serial, read_at=now, command_id=self.id, operation=self.name
        )

    def requested(self, meter_id: UUID, serial: str | None, now: datetime) -> CommandRequested:
        """The observation recording that the command was accepted (commands that write)."""
        op = self.operation
        objects: tuple[str, ...]
        digest: str | None = None
        arguments: dict[str, str] = {}
        if isinstance(op, Writes):
            objects, arguments = op.objects, dict(op.arguments)
            if op.operation != "set_clock":
                digest = payload_digest(meter_id, [w.payload for w in op.build(now)])
        else:
            assert isinstance(op, Exchange) and isinstance(op.request, WriteRequest)
            objects = (object_name(op.request.object_id),)
            digest = payload_digest(meter_id, [op.request.payload])
            if op.request.object_id != TOKEN_OBJECT_ID:
                arguments = {"payload_hex": op.request.payload.hex()}
        return CommandRequested(
            **self._about(meter_id, serial, now),
            source=self.source,
            client=self.client,
            objects=objects,
            payload_sha256=digest,
            arguments=arguments,
        )

    def finish(self, result: CommandResult) -> None:
        self.result = result
        self.state = "done"
        self._done.set()

    async def wait(self) -> CommandResult:
        await self._done.wait()
        assert self.result is not None
        return self.result

    @property
    def lane(self) -> UUID:
        return self.id if self.changes_meter else CLIENT_READS

    def outcome(
        self, meter_id: UUID, serial: str | None, now: datetime, seconds: float
    ) -> CommandOutcome:
        result = self.result
        assert result is not None
        return CommandOutcome(
            **self._about(meter_id, serial, now),
            **same_named(result, CommandOutcome),  # ok, reason, detail, nak, writes, readback
            lane=self.lane,
            recorded=self.changes_meter,
            duration_seconds=seconds,
        )

    # ----------------------------------------------------------------- running

    async def execute(self, conv: Conversation) -> CommandResult:
        """Run the operation; never raises for meter faults (a connection failure that
        should end the session's run is re-raised by the session after recording it)."""
        self.state = "running"
        started = time.monotonic()
        if self.guard is not None:
            with conv.watchdog.paused():
                refusal = await self.guard()
            if refusal is not None:
                self.finish(refusal)
                conv.session.log.warning(
                    "meter command refused before it was sent",
                    command=self.name,
                    command_id=str(self.id),
                    client=self.client,
                    detail=refusal.detail,
                )
                return refusal
        match self.operation:
            case ReadObject(object_id=oid):
                result = await self._read(conv, oid)
            case Exchange(request=request):
                result = await self._exchange(conv, request)
            case Writes() as writes:
                result = await self._writes(conv, writes)
        self.finish(result)
        session = conv.session
        log = session.log.bind(command=self.name, command_id=str(self.id), client=self.client)
        fields = {
            "ok": result.ok,
            "reason": result.reason,
            "nak": result.nak,
            "seconds": round(time.monotonic() - started, 3),
        }
        if self.changes_meter:
            log.info("meter command finished", **fields, writes=result.writes_acknowledged)
        else:
            log.debug("meter read for a client finished", **fields)
        return result

    async def _request(self, conv: Conversation, request: Request, label: str) -> Answer | Failure:
        try:
            return await conv.request(
                request,
                "command",
                label,
                twin=is_twin_element(conv.session.hardware),
                command=self.lane,
            )
        except PollAbortError:
            return conv.last_failure or Failure("internal", "aborted without a failure", 0)

    async def _read(self, conv: Conversation, oid: int) -> CommandResult:
        name = object_name(oid)
        try:
            answer = await conv.read_object(name, oid, command=self.lane)
        except PollAbortError:
            answer = conv.last_failure or Failure("internal", "aborted", 0)
        if isinstance(answer, Failure):
            return _failed(answer)
        record = answer.response.record
        return CommandResult(
            ok=True, response=answer.response.frame.data, record=record, started=True
        )

    async def _exchange(self, conv: Conversation, request: Request) -> CommandResult:
        if isinstance(request, ReadRequest):
            return await self._read(conv, request.object_id)
        label = type(request).__name__
        answer = await self._request(conv, request, label)
        if isinstance(answer, Failure):
            return _failed(answer, writes_total=int(isinstance(request, WriteRequest)))
        if isinstance(request, WriteRequest):
            result = CommandResult(
                ok=True,
                response=answer.response.frame.data,
                writes_acknowledged=1,
                writes_total=1,
                started=True,
            )
            readback, later = readback_of(request.object_id)
            return await self._read_back(conv, result, readback, later)
        await conv.emit(self._log_observations(conv, request, answer))
        return CommandResult(
            ok=True,
            response=answer.response.frame.data,
            record=answer.response.record,
            started=True,
        )

    def _log_observations(
        self, conv: Conversation, request: Request, answer: Answer
    ) -> list[Observation]:
        """Profile records and event-log entries a client read: events like a poll's (the
        database's idempotency keys make a later poll of the same records a no-op)."""
        body = answer.response.record
        base = conv.base()
        observations: list[Observation] = []
        if isinstance(request, ProfileLogRequest) and isinstance(body, ProfileLog1 | ProfileLog2):
            settle = conv.session.settings.profile_settle_seconds
            newest = newest_complete(conv.now(), settle)
            complete = (
                r
                for r in body.records
                if r.timestamp and r.timestamp % HALF_HOUR == 0 and r.timestamp <= newest
            )
            observations = conv.interval_records(request.log, complete)
        elif isinstance(request, EventLogRequest) and isinstance(body, EventLog):
            numbering = RepeatNumbering()
            for entry in reversed(body.events):  # oldest first, as the meter logged them
                if not int(entry.event_id):
                    continue
                ordinal = numbering.next(entry.timestamp, int(entry.event_id), entry.event_set)
                observations.append(
                    MeterLogEntry(
                        **base,
                        occurred_at=to_datetime(entry.timestamp),
                        event_id=int(entry.event_id),
                        event_set=entry.event_set,
                        ordinal=ordinal,
                    )
                )
        return observations

    async def _writes(self, conv: Conversation, writes: Writes) -> CommandResult:
        before: dict[str, Record] = {}
        readback: dict[str, str] = {}
        for name in writes.before:
            info = by_name(name)
            try:
                answer = await conv.read_object(name, info.id, command=self.lane)
            except PollAbortError:
                answer = conv.last_failure or Failure("internal", "aborted", 0)
            if isinstance(answer, Failure):
                return _failed(answer, writes_total=0)
            assert answer.response.record is not None
            before[name] = answer.response.record
            readback[f"before:{name}"] = value_text(info.id, answer.response.record)
        if writes.precondition is not None:
            problem = writes.precondition(before)
            if problem is not None:
                return CommandResult(
                    ok=False,
                    reason="precondition",
                    detail=problem,
                    readback=readback,
                    started=True,
                )
        requests = writes.build(conv.now())
        acknowledged = 0
        failure: Failure | None = None
        for request in requests:
            answer = await self._request(conv, request, object_name(request.object_id))
            if isinstance(answer, Failure):
                failure = answer
                break
            acknowledged += 1
        if failure is None:
            result = CommandResult(
                ok=True,
                writes_acknowledged=acknowledged,
                writes_total=len(requests),
                readback=readback,
                started=True,
            )
        else:
            result = _failed(
                failure,
                writes_acknowledged=acknowledged,
                writes_total=len(requests),
                readback=readback,
            )
        return await self._read_back(conv, result, writes.readback, writes.readback_later)

    async def _read_back(
        self,
        conv: Conversation,
        result: CommandResult,
        names: tuple[str, ...],
        later: bool,
    ) -> CommandResult:
        """Read what the writes changed (also after a refusal or a sequence cut short);
        when the meter is unreachable, or the caller's writes may go on, the session does
        it later."""
        session = conv.session
        if not names:
            return result
        if later or (result.reason is not None and result.reason != "nak"):
            session.read_back_later(names, settle=later)
            return result
        values = dict(result.readback)
        for name in names:
            info = by_name(name)
            try:
                answer = await conv.read_object(name, info.id, command=self.lane)
            except PollAbortError:
                session.read_back_later(names, settle=False)
                break
            if isinstance(answer, Failure):
                continue
            assert answer.response.record is not None
            values[name] = value_text(info.id, answer.response.record)
        return msgspec.structs.replace(result, readback=values)
