"""The mediator's methods: each meter request is a command in the meter's own session.

``readElement``, ``writeElement`` and ``sendRawMessage`` become commands
(:mod:`flowsd.meters.command`) queued in the meter's session through the
:class:`~flowsd.control.dispatch.Dispatcher`, so a client's request shares the meter's one
connection, pacing and breaker with the daemon's polls. Status codes:

====================  ==================================================================
``NOT_FOUND``         no meter with that serial
``UNAVAILABLE``       the meter is passive, has no address, is offline, or the daemon is
                      stopping
``RESOURCE_EXHAUSTED``  the meter's queue is full
``DEADLINE_EXCEEDED``   the caller's deadline passed before the command could start
``FAILED_PRECONDITION`` the meter refused (a NAK, named in the details: a spent token is
                      ``SECURITY_NOT_GRANTED``); the reference mediator ignores NAKs
``INTERNAL``          the meter did not answer (``failed to connect after retries``, or
                      ``EOFError`` when it closed early: the phrases the reference client
                      recognises) or answered nonsense
``INVALID_ARGUMENT``  a missing serial, an object id or data field that cannot be sent
``PERMISSION_DENIED`` see :mod:`flowsd.mediator.auth`
====================  ==================================================================

Several daemons (:mod:`flowsd.meters.ownership`): a request for a meter this daemon does not
poll is passed on to its owner if it is a read (:mod:`flowsd.control.forward`), and refused
with ``UNAVAILABLE`` naming the owner otherwise. A request for a meter it does poll that is
not a plain read (``writeElement``, ``sendRawMessage`` of anything but a read) is fenced: as
the session starts it, before anything is sent, the lease is read again from the database
(holder and epoch, :meth:`flowsd.meters.ownership.Ownership.confirm`); if it has passed on
(this daemon was paused or cut off past its lease) the call is refused with ``UNAVAILABLE``
naming the holder and counted in ``flowsd_fenced_commands_total{source="grpc"}``.

``GetInfo`` and ``GetMeters`` read ``flows.meter_registry`` and ``flows.meter_shadows``.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
import msgspec
import structlog
from google.protobuf.message import Message

from flowsd.control.dispatch import Dispatcher, MeterRef, PoolOf
from flowsd.control.forward import forward_read, owner_of
from flowsd.db.errors import DATABASE_ERRORS
from flowsd.emop import (
    ANY_METER,
    REFERENCE_CLIENT,
    EmopError,
    Frame,
    ReadRequest,
    WriteRequest,
    parse_request,
)
from flowsd.emop.frame import REFERENCE_SEQUENCE, control_byte
from flowsd.mediator import metrics
from flowsd.mediator.auth import Access, Identity, Policy, Refusal, identity_of
from flowsd.mediator.proto import mediator_pb2 as pb
from flowsd.meters.command import CommandResult, MeterCommand
from flowsd.meters.operations import Exchange, Operation, ReadObject, write_element
from flowsd.meters.ownership import Ownership
from flowsd.meters.supervisor import CommandRefusedError
from flowsd.ops.metrics import snake_case

log = structlog.get_logger("flowsd.mediator")

PACKAGE = "simt_emlite.mediator.grpc"
MEDIATOR_SERVICE = f"{PACKAGE}.EmliteMediatorService"
INFO_SERVICE = f"{PACKAGE}.InfoService"

Context = grpc.aio.ServicerContext[Any, Any]
Req = TypeVar("Req", bound=Message)
Rep = TypeVar("Rep", bound=Message)

_REFUSED_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "stopping": grpc.StatusCode.UNAVAILABLE,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_UNREACHABLE = frozenset({"refused", "connect_timeout", "unreachable", "reset", "read_timeout"})
_CLOSED_EARLY = frozenset({"closed", "truncated"})


class StatusError(Exception):
    """End the call with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def result_status(result: CommandResult) -> tuple[grpc.StatusCode, str] | None:
    """The status for a failed command (None for success)."""
    if result.ok:
        return None
    reason = result.reason or "internal"
    if reason == "nak":
        return grpc.StatusCode.FAILED_PRECONDITION, f"meter refused: NAK {result.nak}"
    if reason == "precondition":
        return grpc.StatusCode.FAILED_PRECONDITION, result.detail
    if reason == "deadline":
        return grpc.StatusCode.DEADLINE_EXCEEDED, result.detail
    if reason in ("unavailable", "stopped"):
        return grpc.StatusCode.UNAVAILABLE, result.detail
    if reason in _UNREACHABLE:
        return (
            grpc.StatusCode.INTERNAL,
            f"failed to connect after retries ({reason}: {result.detail})",
        )
    if reason in _CLOSED_EARLY:
        return grpc.StatusCode.INTERNAL, f"EOFError: the meter closed early ({result.detail})"
    return grpc.StatusCode.INTERNAL, f"invalid answer from the meter ({reason}: {result.detail})"


class MediatorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The calls the mediator answered since it started (this process)."""

    calls: dict[tuple[str, str], int]  # by method and status code, both snake_case
    refusals: dict[str, int]  # PERMISSION_DENIED answers by reason (role, esco)


_Handler = Callable[["MediatorService", Req, Context, Identity, str], Awaitable[Rep]]


def _rpc(
    method: str, access: Access | None = None
) -> Callable[[_Handler[Req, Rep]], Callable[[MediatorService, Req, Context], Awaitable[Rep]]]:
    """A gRPC method called ``method``: each call timed, counted and authorized for
    ``access`` by :meth:`MediatorService._call`, then handled with the client's identity and
    the method's name (None: the handler authorizes, once it knows the access it needs)."""

    def wrap(
        handler: _Handler[Req, Rep],
    ) -> Callable[[MediatorService, Req, Context], Awaitable[Rep]]:
        @functools.wraps(handler)
        async def call(self: MediatorService, request: Req, context: Context) -> Rep:
            def body(identity: Identity) -> Awaitable[Rep]:
                return handler(self, request, context, identity, method)

            return await self._call(method, context, body, access)

        return call

    return wrap


@dataclass(eq=False)
class MediatorService:
    """The handlers of both services, bound to one daemon."""

    dispatcher: Dispatcher
    policy: Policy
    pool: PoolOf
    max_wait: float
    _: KW_ONLY
    leases: Ownership | None = None
    _calls: Counter[tuple[str, str]] = field(default_factory=Counter, init=False)
    _refusals: Counter[str] = field(default_factory=Counter, init=False)

    def statistics(self) -> MediatorStatistics:
        return MediatorStatistics(calls=dict(self._calls), refusals=dict(self._refusals))

    # ----------------------------------------------------------------- plumbing

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(
            fn: Callable[[Any, Context], Awaitable[Message]],
            request: type[Message],
            reply: type[Message],
        ) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )

        mediator = {
            "sendRawMessage": unary(
                self.send_raw_message, pb.SendRawMessageRequest, pb.SendRawMessageReply
            ),
            "readElement": unary(self.read_element, pb.ReadElementRequest, pb.ReadElementReply),
            "writeElement": unary(self.write_element, pb.WriteElementRequest, pb.WriteElementReply),
        }
        info = {
            "GetInfo": unary(self.get_info, pb.GetInfoRequest, pb.GetInfoReply),
            "GetMeters": unary(self.get_meters, pb.GetMetersRequest, pb.GetMetersReply),
        }
        return [
            grpc.method_handlers_generic_handler(MEDIATOR_SERVICE, mediator),
            grpc.method_handlers_generic_handler(INFO_SERVICE, info),
        ]

    async def _call(
        self,
        method: str,
        context: Context,
        body: Callable[[Identity], Awaitable[Rep]],
        access: Access | None = None,
    ) -> Rep:
        """One call, timed and counted: the client authorized for ``access`` (None: the body
        decides), then ``body``; a :class:`StatusError` aborts the call with its status."""
        started = time.monotonic()
        identity = identity_of(context.auth_context(), context.peer())
        code = grpc.StatusCode.OK
        try:
            if access is not None:
                self._authorize(identity, access, method)
            return await body(identity)
        except StatusError as exc:
            code = exc.code
            await context.abort(exc.code, exc.details)
            raise  # abort() raises; this is never reached
        finally:
            label = snake_case(method)  # readElement -> read_element
            self._calls[label, code.name.lower()] += 1
            metrics.REQUEST_DURATION.labels(label).observe(time.monotonic() - started)

    def _authorize(self, identity: Identity, access: Access, method: str) -> None:
        self._refuse(self.policy.check(identity, access, method), method)

    def _refuse(self, refusal: Refusal | None, method: str) -> None:
        if refusal is None:
            return
        self._refusals[refusal.reason] += 1
        log.warning("mediator request refused", method=method, reason=refusal.reason,
                    detail=refusal.message)  # fmt: skip
        raise StatusError(grpc.StatusCode.PERMISSION_DENIED, refusal.message)

    def _wait_seconds(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self.max_wait
        return max(0.0, min(remaining - 0.05, self.max_wait))

    async def _meter(self, identity: Identity, serial: str, method: str) -> MeterRef:
        if not serial:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "target meter serial not specified")
        scoped = self.policy.escos(identity) is not None
        try:
            ref = await self.dispatcher.lookup(serial, need_esco=scoped)
        except CommandRefusedError as exc:
            raise StatusError(_REFUSED_STATUS[exc.reason], exc.detail) from None
        self._refuse(self.policy.check_esco(identity, ref.esco, serial), method)
        return ref

    async def _command(
        self, identity: Identity, serial: str, operation: Operation, method: str, context: Context
    ) -> CommandResult:
        ref = await self._meter(identity, serial, method)
        command = MeterCommand(operation, source="grpc", client=identity.describe())
        if self.leases is not None:
            self.leases.fence(command, self.pool, ref.meter_id)
        try:
            if ref.forwardable:
                result = await self._forward(ref, operation, identity, context)
            else:
                result = await self.dispatcher.run(
                    ref, command, wait_seconds=self._wait_seconds(context)
                )
        except CommandRefusedError as exc:
            raise StatusError(
                _REFUSED_STATUS[exc.reason], f"meter {serial}: {exc.detail}"
            ) from None
        status = result_status(result)
        if status is not None:
            code, details = status
            raise StatusError(code, f"meter {serial}: {details}")
        return result

    async def _forward(
        self, ref: MeterRef, operation: Operation, identity: Identity, context: Context
    ) -> CommandResult:
        """Another daemon owns the meter: a read goes through the command table
        (:mod:`flowsd.control.forward`); anything else is refused naming the owner."""
        pool = self.pool()
        if pool is None:
            raise CommandRefusedError("unavailable", "the database is not reachable yet")
        try:
            owner = await owner_of(pool, ref.meter_id)
        except DATABASE_ERRORS as exc:
            raise CommandRefusedError("unavailable", f"database: {exc}") from None
        if owner is None:  # nobody polls it (e.g. not dialled, or between two holders)
            raise CommandRefusedError("unavailable", ref.why_not_polled)
        if not isinstance(operation, ReadObject):
            raise CommandRefusedError(
                "unavailable",
                f"{ref.why_not_polled} but by daemon {owner}; only reads are passed on",
            )
        return await forward_read(
            pool,
            serial=ref.serial,
            object_name=operation.name,
            client=identity.describe(),
            wait_seconds=self._wait_seconds(context),
        )

    # ----------------------------------------------------------------- meter methods

    @_rpc("readElement", "read")
    async def read_element(
        self, request: pb.ReadElementRequest, context: Context, identity: Identity, method: str
    ) -> pb.ReadElementReply:
        operation = ReadObject(_object_id(request.objectId))
        result = await self._command(identity, request.serial, operation, method, context)
        assert result.response is not None
        return pb.ReadElementReply(response=result.response[5:])

    @_rpc("writeElement", "write")
    async def write_element(
        self, request: pb.WriteElementRequest, context: Context, identity: Identity, method: str
    ) -> pb.WriteElementReply:
        oid = _object_id(request.objectId)
        if len(request.payload) > 238:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "payload longer than 238 bytes")
        operation = write_element(oid, bytes(request.payload))
        await self._command(identity, request.serial, operation, method, context)
        return pb.WriteElementReply()

    @_rpc("sendRawMessage")
    async def send_raw_message(
        self, request: pb.SendRawMessageRequest, context: Context, identity: Identity, method: str
    ) -> pb.SendRawMessageReply:
        data = bytes(request.dataField)
        try:
            parsed = parse_request(
                Frame(ANY_METER, REFERENCE_CLIENT, control_byte(REFERENCE_SEQUENCE), data)
            )
        except EmopError as exc:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"data field: {exc}") from None
        self._authorize(identity, "write" if isinstance(parsed, WriteRequest) else "read", method)
        operation: Operation
        if isinstance(parsed, ReadRequest):
            operation = ReadObject(parsed.object_id)
        elif isinstance(parsed, WriteRequest):
            operation = write_element(parsed.object_id, parsed.payload)
        else:
            operation = Exchange(parsed)
        result = await self._command(identity, request.serial, operation, method, context)
        if result.response is None:  # a write: the meter's acknowledgement echoes the header
            return pb.SendRawMessageReply(response=data[1:5])
        return pb.SendRawMessageReply(response=result.response[1:])

    # ----------------------------------------------------------------- info methods

    @_rpc("GetInfo", "info")
    async def get_info(
        self, request: pb.GetInfoRequest, context: Context, identity: Identity, method: str
    ) -> pb.GetInfoReply:
        ref = await self._meter(identity, request.serial, method)
        registry = await self._query(
            "SELECT to_jsonb(r) FROM flows.meter_registry r WHERE r.id = $1", ref.meter_id
        )
        shadow = await self._query(
            "SELECT to_jsonb(s) FROM flows.meter_shadows s WHERE s.id = $1", ref.meter_id
        )
        data = {"registry": registry, "shadow": shadow}
        return pb.GetInfoReply(json_data=json.dumps(data, indent=2))

    @_rpc("GetMeters", "info")
    async def get_meters(
        self, request: pb.GetMetersRequest, context: Context, identity: Identity, method: str
    ) -> pb.GetMetersReply:
        allowed = self.policy.escos(identity)
        wanted = request.esco or None
        if allowed is not None and wanted is not None and wanted not in allowed:
            self._refuse(
                Refusal("esco", f"client {identity.describe()} may not list ESCO {wanted}"),
                method,
            )
        rows = await self._query(
            """SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.serial), '[]'::jsonb)
               FROM flows.meter_registry r LEFT JOIN flows.escos e ON e.id = r.esco
               WHERE ($1::text IS NULL OR e.code = $1)
                 AND ($2::text[] IS NULL OR e.code = ANY($2))""",
            wanted,
            None if allowed is None else sorted(allowed),
        )
        return pb.GetMetersReply(json_meters=json.dumps(rows, indent=2))

    async def _query(self, query: str, *args: object) -> Any:
        pool = self.pool()
        if pool is None:
            raise StatusError(grpc.StatusCode.UNAVAILABLE, "the database is not reachable yet")
        try:
            value = await pool.fetchval(query, *args)
        except DATABASE_ERRORS as exc:
            raise StatusError(grpc.StatusCode.UNAVAILABLE, f"database: {exc}") from None
        return None if value is None else json.loads(value)


def _object_id(value: int) -> int:
    if not 0 <= value <= 0xFFFFFF:
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"object id out of range: {value}")
    return value
