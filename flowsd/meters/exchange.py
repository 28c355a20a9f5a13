"""One request to one meter: pacing, a connection slot, retries, strict validation.

A :class:`MeterLink` belongs to one meter session, which it is given with each request: it
reads the session's address, settings, limiter, counters, clock, generator and stop check
then, rather than keeping copies or a reference (a session and its link pointing at each
other would outlive the meter's leaving the fleet until a full garbage collection); only
the limiter a connection slot came from is kept, while the slot is held. For each
request it waits out the
meter's minimum gap, takes a fleet connection slot (unless it still holds an open
persistent connection), connects, exchanges one frame, validates it (the codec checks
delimiter, length, CRC, destination address, NAK, format and echoed object id) and
retries connection-level failures with the shared backoff (:mod:`flowsd.backoff`). It returns an
:class:`Answer` or the final :class:`Failure`; what a failure means for the meter (breaker,
observations) is the session's business.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio

from flowsd.backoff import Backoff
from flowsd.config import MetersConfig
from flowsd.emop import (
    REFERENCE_CLIENT,
    BadDelimiterError,
    BadFrameLengthError,
    CrcMismatchError,
    EmopError,
    FrameTooLargeError,
    NakError,
    Request,
    Response,
    ResponseMismatchError,
    TruncatedFrameError,
    decode_response,
    encode_request,
)
from flowsd.meters import metrics, transport
from flowsd.meters.limits import ConnectionLimiter, Lane
from flowsd.meters.observations import FailureReason
from flowsd.meters.statistics import EngineCounts
from flowsd.meters.target import MeterTarget
from flowsd.meters.transport import MeterConnection, TransportError
from flowsd.meters.watchdog import ProgressWatchdog

# Longest a back-fill request waits for a connection before its poll leaves the rest of the
# back-fill to a later one: a waiting poll is a task with its frames (several KB), so a fleet
# whose back-fill demand exceeds the spare capacity must not hold one per meter.
BACKFILL_MAX_WAIT_SECONDS = 15.0

RequestKind = Literal["object", "profile_log", "event_log", "probe", "command"]


class PollAbortError(Exception):
    """The rest of this poll is pointless (meter unreachable, breaker opened, stopping)."""


class BackfillDeferredError(Exception):
    """A back-fill request gave up its place in the queue before it was sent: the meter's
    next cadence came due, or a command arrived for it. Not a failure of the meter."""


@dataclass(frozen=True, slots=True)
class Answer:
    response: Response
    attempts: int
    latency: float  # connect start to last byte, successful attempt
    sent_at: float  # wall clock, request written
    received_at: float  # wall clock, response complete


@dataclass(frozen=True, slots=True)
class Failure:
    reason: FailureReason
    detail: str
    attempts: int

    @property
    def meter_answered(self) -> bool:
        """The meter sent a well-formed refusal (NAK): it is alive."""
        return self.reason == "nak"

    @property
    def connection_level(self) -> bool:
        return self.reason in transport.RETRYABLE


def classify(exc: EmopError) -> FailureReason:
    """The failure reason for a codec error."""
    match exc:
        case BadDelimiterError():
            return "bad_delimiter"
        case TruncatedFrameError():
            return "truncated"
        case BadFrameLengthError() | FrameTooLargeError():
            return "bad_length"
        case CrcMismatchError():
            return "crc"
        case NakError():
            return "nak"
        case ResponseMismatchError():
            return "mismatch"
    return "payload"


class LinkOwner(Protocol):
    """What a link uses of its session (read when used: the session may change them)."""

    @property
    def target(self) -> MeterTarget: ...
    @property
    def settings(self) -> MetersConfig: ...
    @property
    def limiter(self) -> ConnectionLimiter: ...
    @property
    def counts(self) -> EngineCounts: ...
    @property
    def wall_clock(self) -> Callable[[], float]: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def stopping(self) -> Callable[[], bool]: ...


@dataclass(slots=True, eq=False)
class MeterLink:
    """The connection side of one meter session."""

    waiting_for_slot: bool = field(default=False, init=False)
    _backfill_wait: asyncio.Timeout | None = field(default=None, init=False)
    _conn: MeterConnection | None = field(default=None, init=False)
    # set while a slot is held
    _slot_limiter: ConnectionLimiter | None = field(default=None, init=False)
    _last_exchange_end: float = field(default=-1e18, init=False)  # monotonic

    async def request(
        self,
        owner: LinkOwner,
        request: Request,
        kind: RequestKind,
        *,
        attempts: int | None,
        twin: bool,
        watchdog: ProgressWatchdog,
        stoppable: bool = True,
        lane: Lane = "live",
        due: float = math.inf,
    ) -> Answer | Failure:
        """Send ``request`` until it succeeds, fails for good, or runs out of attempts.

        A stop of the engine ends a ``stoppable`` request between attempts (a poll is read
        again after a restart); a command's requests run to their end. A ``backfill``
        request waits for a connection behind every live one and raises
        :class:`BackfillDeferredError` when its wait is withdrawn (``due``, wall clock:
        when the meter's next cadence begins; :meth:`defer_backfill`; or after
        :data:`BACKFILL_MAX_WAIT_SECONDS`)."""
        wire = encode_request(request)
        max_attempts = attempts or owner.settings.request_attempts
        failure = Failure("internal", "no attempt made", 0)
        for attempt in range(max_attempts):
            if attempt:
                if stoppable and owner.stopping():
                    raise PollAbortError  # not the meter's failure: do not count it
                owner.counts.retries += 1
                settings = owner.settings
                backoff = Backoff(settings.retry_initial_seconds, settings.retry_max_seconds)
                await anyio.sleep(backoff.delay(attempt - 1, owner.rng))
            try:
                answer = await self._attempt(
                    owner,
                    wire,
                    request,
                    twin,
                    watchdog,
                    number=attempt + 1,
                    stoppable=stoppable,
                    lane=lane,
                    due=due,
                )
            except TransportError as exc:
                failure = Failure(exc.reason, exc.detail, attempt + 1)
            except EmopError as exc:
                failure = Failure(classify(exc), str(exc), attempt + 1)
            else:
                owner.counts.attempts[kind, "ok", "ok"] += 1
                metrics.REQUEST_LATENCY.observe(answer.latency)
                return answer
            finally:
                watchdog.progress()
            owner.counts.attempts[kind, "failed", failure.reason] += 1
            if not failure.connection_level:
                break
        return failure

    async def _attempt(
        self,
        owner: LinkOwner,
        wire: bytes,
        request: Request,
        twin: bool,
        watchdog: ProgressWatchdog,
        *,
        number: int,
        stoppable: bool,
        lane: Lane,
        due: float,
    ) -> Answer:
        settings = owner.settings
        wait = self._last_exchange_end + settings.min_gap_seconds - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # anyio.sleep's backend lookup, saved per request
        start = time.monotonic()
        deferred = False
        try:
            try:
                conn = await self._connection(owner, watchdog, stoppable, lane, due)
            except BackfillDeferredError:
                deferred = True  # nothing was sent: the meter's gap is not restarted
                raise
            sent_at = owner.wall_clock()
            try:
                frame = await conn.exchange(wire, settings.read_timeout_seconds)
            except TransportError:
                self.close()
                raise
            received_at = owner.wall_clock()
            latency = time.monotonic() - start
            if settings.connection_mode == "per_request":
                self.close()
            try:
                response = decode_response(frame, request, twin=twin, client=REFERENCE_CLIENT)
            except EmopError:
                self.close()  # the stream position is unknown after a bad frame
                raise
            return Answer(response, number, latency, sent_at, received_at)
        finally:
            if not deferred:
                self._last_exchange_end = time.monotonic()

    def defer_backfill(self) -> None:
        """Withdraw a back-fill request waiting for a connection (a command arrived)."""
        if self._backfill_wait is not None and not self._backfill_wait.expired():
            self._backfill_wait.reschedule(-math.inf)

    async def _connection(
        self, owner: LinkOwner, watchdog: ProgressWatchdog, stoppable: bool, lane: Lane, due: float
    ) -> MeterConnection:
        if self._conn is not None and self._conn.usable:
            return self._conn
        self.close()
        if not owner.limiter.try_acquire(lane):
            if stoppable and owner.stopping():
                raise PollAbortError
            # Waiting for the fleet's caps is not being stuck; stop() may cancel this wait.
            self.waiting_for_slot = True
            watchdog.pause()
            try:
                if lane == "live":
                    # Every live request of a fleet at its caps waits here (most of its
                    # requests at steady state), without a cancel scope of its own: anyio's,
                    # entered and left per request, showed in the fleet benchmark's profile.
                    granted = await owner.limiter.acquire(lane, due=due)
                else:
                    # asyncio's timeout rather than an anyio cancel scope: most requests of
                    # a first start wait here, and the scope's backend lookups showed in the
                    # fleet benchmark's profile. defer_backfill expires it early.
                    try:
                        async with asyncio.timeout(BACKFILL_MAX_WAIT_SECONDS) as wait:
                            self._backfill_wait = wait
                            granted = await owner.limiter.acquire(lane, due=due)
                    except TimeoutError:
                        granted = False
            finally:
                watchdog.resume()
                self.waiting_for_slot = False
                self._backfill_wait = None
            if not granted:
                raise BackfillDeferredError
        # A slot goes back to the limiter that granted it, even after a reconfigure.
        self._slot_limiter = owner.limiter
        target, settings = owner.target, owner.settings
        try:
            self._conn = await transport.connect(
                target.ip_address,
                target.port or settings.port,
                settings.connect_timeout_seconds,
                owner.counts.traffic,
            )
        except BaseException:
            self.close()
            raise
        return self._conn

    def close(self) -> None:
        """Close the connection (if any) and give its slot back."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._slot_limiter is not None:
            limiter, self._slot_limiter = self._slot_limiter, None
            limiter.release()
