"""Commands: what clients ask of one meter, run by its session between two plan items.

A :class:`MeterCommand` wraps one operation:

* :class:`ReadObject` — one object read (gRPC ``readElement``, ``flowsd meter S read``);
* :class:`Exchange` — one request as the caller built it (gRPC ``sendRawMessage``): a read,
  a write, a profile-log or event-log page;
* :class:`Writes` — a sequence of writes (a top-up, a clock set, the 11 writes of a future
  tariff, a flag, gRPC ``writeElement``) followed by a read-back of what they changed.

The session runs queued commands with the meter's own link (its pacing, never a second
connection) and the command's result is handed to whoever waits for it
(:meth:`MeterCommand.wait`). Commands that change the meter are recorded: a
:class:`~flowsd.meters.observations.CommandRequested` when accepted, a
:class:`~flowsd.meters.observations.CommandOutcome` at the end (also for a sequence cut
short, which says how many writes the meter acknowledged). What a write changed is read
back at once; when the meter could not be reached the read-back is left to the session
(:attr:`Writes.readback_later`), which does it when the meter answers again.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal
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
    by_id,
    by_name,
    object_id,
)
from flowsd.emop.records import EventLog, PrepayBalance, ProfileLog1, ProfileLog2
from flowsd.emop.view import operator_value
from flowsd.meters.backfill import HALF_HOUR, newest_complete, to_datetime
from flowsd.meters.exchange import Answer, Failure, PollAbortError
from flowsd.meters.observations import (
    CommandOutcome,
    CommandRequested,
    CommandSource,
    IntervalRecord,
    MeterLogEntry,
    Observation,
)
from flowsd.meters.plan import TARIFFS_FUTURE, is_twin_element

if TYPE_CHECKING:
    from flowsd.meters.conversation import Conversation

# The lane of single reads served to clients: their grouped pieces (a tariff read object by
# object) are assembled across requests, apart from the poll's own reads.
CLIENT_READS = UUID("6f1c2a7e-35f4-4b43-9c52-5b7d2a1e0c11")

_TOKEN = object_id("prepay_token_send")
_TIME = object_id("time")
_FUTURE_TARIFF_IDS = frozenset(
    [object_id(n) for n in TARIFFS_FUTURE]
    + [object_id(n) for n in ("tariff_future_tou_flag", "tariff_future_gas")]
    + list(range(0xFFF801, 0xFFF841))  # future block prices
    + list(range(0xFFF601, 0xFFF605))  # future element-B TOU prices
)
_READ_BACK_ITSELF = frozenset(
    object_id(n)
    for n in (
        "prepay_enabled_flag",
        "daylight_savings_correction_flag",
        "prepay_no_debt_recovery_when_emergency_credit_flag",
        "prepay_no_standing_charge_when_power_fail_flag",
        "backlight",
        "load_switch",
    )
)
PREPAY_MINIMUM_BALANCE = Decimal("10.00")

Reason = str  # a FailureReason or "deadline" | "unavailable" | "stopped" | "precondition"


def readback_of(oid: int) -> tuple[tuple[str, ...], bool]:
    """What to read after a write of ``oid``, and whether to wait for a sequence to end.

    A token changes the balance, a clock set the clock, a flag or setting itself; a future
    tariff is read whole (9 reads), once the caller's sequence of writes has settled.
    """
    if oid == _TOKEN:
        return ("prepay_balance",), False
    if oid == _TIME:
        return ("time",), False
    if oid in _READ_BACK_ITSELF:
        info = by_id(oid)
        assert info is not None
        return (info.name,), False
    if oid in _FUTURE_TARIFF_IDS:
        return TARIFFS_FUTURE, True
    return (), False


def payload_digest(meter_id: UUID, payloads: Sequence[bytes]) -> str:
    """``sha256(meter id | payload 1 | payload 2 ...)`` in hex: the same write to the same
    meter gives the same digest (a token used twice is recognisable), while the meter id
    salts it so a digest cannot be looked up across meters. Mirrored by the command table's
    trigger for top-up tokens (migration 80)."""
    digest = hashlib.sha256(f"{meter_id}".encode())
    for payload in payloads:
        digest.update(b"|")
        digest.update(payload)
    return digest.hexdigest()


def _object_name(oid: int) -> str:
    info = by_id(oid)
    return info.name if info is not None else f"{oid:06x}"


def _value_text(oid: int, record: Record) -> str:
    value, _unit = operator_value(by_id(oid), record)
    if value is None:
        return msgspec.json.encode(msgspec.to_builtins(record)).decode()
    return str(value)


# --------------------------------------------------------------------- operations


class ReadObject(msgspec.Struct, frozen=True):
    """Read one object; the reading becomes an event like a poll's."""

    object_id: int

    @property
    def name(self) -> str:
        return _object_name(self.object_id)


class Exchange(msgspec.Struct, frozen=True):
    """One request as the caller built it (a raw data field)."""

    request: Request


WriteBuilder = Callable[[datetime], list[WriteRequest]]


@dataclass(frozen=True)
class Writes:
    """Writes in order, then a read-back of ``readback``.

    ``build`` makes the writes when the command starts (a clock set sends the time of
    sending, not of asking). ``before`` are objects read first (the balance before a
    top-up), ``precondition`` may refuse the command from what they show. ``secret``:
    the payload (a token) never appears in clear in events or logs. ``readback_later``:
    the read-back waits until the caller's writes have settled (raw future-tariff writes
    arrive one request at a time).
    """

    operation: str
    objects: tuple[str, ...]
    build: WriteBuilder
    readback: tuple[str, ...] = ()
    readback_later: bool = False
    before: tuple[str, ...] = ()
    precondition: Callable[[dict[str, Record]], str | None] | None = None
    secret: bool = False
    arguments: dict[str, str] = field(default_factory=dict)


Operation = ReadObject | Exchange | Writes


def write_element(oid: int, payload: bytes) -> Writes:
    """One write of ``payload`` to ``oid`` (gRPC ``writeElement``), read back by its kind."""
    readback, later = readback_of(oid)
    name = _object_name(oid)
    return Writes(
        operation="write_element",
        objects=(name,),
        build=lambda _now: [WriteRequest(oid, payload)],
        readback=readback,
        readback_later=later,
        secret=oid == _TOKEN,
        arguments={} if oid == _TOKEN else {"object": name, "payload_hex": payload.hex()},
    )


def top_up(token: str) -> Writes:
    from flowsd.emop import writes  # noqa: PLC0415 - keeps the import graph of meters small

    request = writes.top_up(token)
    return Writes(
        operation="top_up",
        objects=("prepay_token_send",),
        build=lambda _now: [request],
        readback=("prepay_balance",),
        before=("prepay_balance",),
        secret=True,
    )


def set_clock() -> Writes:
    from flowsd.emop import writes  # noqa: PLC0415

    return Writes(
        operation="set_clock",
        objects=("time",),
        build=lambda now: [writes.set_clock(now)],
        readback=("time",),
        arguments={"to": "utc_now_when_sent"},
    )


def future_tariff(
    *,
    activation: datetime,
    unit_rate: Decimal,
    standing_charge: Decimal,
    emergency_credit: Decimal,
    ecredit_availability: Decimal,
    debt_recovery_rate: Decimal,
) -> Writes:
    """The 11 writes of SPEC §7 (validated now: a bad amount is refused before queueing)."""
    from flowsd.emop import writes  # noqa: PLC0415

    requests = writes.future_tariff_writes(
        unit_rate=unit_rate,
        standing_charge=standing_charge,
        activation=activation,
        emergency_credit=emergency_credit,
        ecredit_availability=ecredit_availability,
        debt_recovery_rate=debt_recovery_rate,
    )
    return Writes(
        operation="future_tariff",
        objects=tuple(_object_name(r.object_id) for r in requests),
        build=lambda _now: list(requests),
        readback=TARIFFS_FUTURE,
        arguments={
            "activation": activation.isoformat(),
            "unit_rate": str(unit_rate),
            "standing_charge": str(standing_charge),
            "emergency_credit": str(emergency_credit),
            "ecredit_availability": str(ecredit_availability),
            "debt_recovery_rate": str(debt_recovery_rate),
        },
    )


def _enough_credit(before: dict[str, Record]) -> str | None:
    balance = before.get("prepay_balance")
    if not isinstance(balance, PrepayBalance):
        return "the balance could not be read"
    if balance.gbp < PREPAY_MINIMUM_BALANCE:
        return f"balance £{balance.gbp} is below £{PREPAY_MINIMUM_BALANCE}"
    return None


def prepay(enabled: bool) -> Writes:
    """Prepay mode on or off; like the reference, enabling needs a balance of £10 or more."""
    from flowsd.emop import writes  # noqa: PLC0415

    request = writes.set_flag("prepay_enabled_flag", enabled)
    return Writes(
        operation="prepay_on" if enabled else "prepay_off",
        objects=("prepay_enabled_flag",),
        build=lambda _now: [request],
        readback=("prepay_enabled_flag",),
        before=("prepay_balance",) if enabled else (),
        precondition=_enough_credit if enabled else None,
        arguments={"enabled": str(enabled).lower()},
    )


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
    ) -> None:
        self.id = command_id or uuid.uuid4()
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
            objects = (_object_name(op.request.object_id),)
            digest = payload_digest(meter_id, [op.request.payload])
            if op.request.object_id != _TOKEN:
                arguments = {"payload_hex": op.request.payload.hex()}
        return CommandRequested(
            meter_id=meter_id,
            serial=serial,
            read_at=now,
            command_id=self.id,
            source=self.source,
            client=self.client,
            operation=self.name,
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
            meter_id=meter_id,
            serial=serial,
            read_at=now,
            command_id=self.id,
            lane=self.lane,
            operation=self.name,
            recorded=self.changes_meter,
            ok=result.ok,
            reason=result.reason,
            detail=result.detail,
            nak=result.nak,
            writes_acknowledged=result.writes_acknowledged,
            writes_total=result.writes_total,
            readback=result.readback,
            duration_seconds=seconds,
        )

    # ----------------------------------------------------------------- running

    async def execute(self, conv: Conversation) -> CommandResult:
        """Run the operation; never raises for meter faults (a connection failure that
        should end the session's run is re-raised by the session after recording it)."""
        self.state = "running"
        started = time.monotonic()
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
        name = _object_name(oid)
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
            observations = [
                IntervalRecord(
                    **base,
                    log=request.log,
                    interval_at=to_datetime(r.timestamp),
                    status=r.status,
                    record=r,
                )
                for r in body.records
                if r.timestamp and r.timestamp % HALF_HOUR == 0 and r.timestamp <= newest
            ]
        elif isinstance(request, EventLogRequest) and isinstance(body, EventLog):
            seen: dict[tuple[int, int, int], int] = {}
            for entry in reversed(body.events):  # oldest first, as the meter logged them
                if not int(entry.event_id):
                    continue
                key = (entry.timestamp, int(entry.event_id), entry.event_set)
                ordinal = seen.get(key, 0)
                seen[key] = ordinal + 1
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
            readback[f"before:{name}"] = _value_text(info.id, answer.response.record)
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
            answer = await self._request(conv, request, _object_name(request.object_id))
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
            values[name] = _value_text(info.id, answer.response.record)
        return msgspec.structs.replace(result, readback=values)
