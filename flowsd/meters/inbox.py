"""What callers wait for from one meter, and how its session serves them.

An :class:`Inbox` holds a meter's queued commands (:mod:`flowsd.meters.command`), the callers
waiting for its next full poll (:class:`PollRequest`) and the read-backs still owed. A
:class:`~flowsd.meters.session.MeterSession` holds one only while any of these waits (most
meters have none almost all the time, and a fleet holds tens of thousands of sessions): the
functions here make the session's inbox when something first waits and drop it as soon as
nothing does, so ``MeterSession.inbox`` is None in between. The session's members of the
same names (``enqueue``, ``serve_commands``, ...) delegate to them.

:func:`serve_commands` runs the queued commands over the run's
:class:`~flowsd.meters.conversation.Conversation` (between two plan items of a poll, and at
the end of every run, then the read-backs that are due), always over the meter's own link. A
command that found the meter unreachable ends the run like a failed poll request does; while
the meter is unreachable the queued commands fail (:func:`fail_queued`). A command that ends
without having run is recorded all the same (:func:`finish_unrun`), except those
:func:`drop_queued` finishes when their session leaves a fleet that is not running.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from flowsd.emop import by_name
from flowsd.meters.command import CommandResult, MeterCommand, refused
from flowsd.meters.exchange import Failure, PollAbortError
from flowsd.meters.observations import SessionOutcome

if TYPE_CHECKING:
    from flowsd.meters.conversation import Conversation
    from flowsd.meters.session import MeterSession
    from flowsd.meters.watchdog import ProgressWatchdog


class QueueFullError(Exception):
    """The meter's command queue is full."""


class PollRequest:
    """A caller waiting for the next full poll of a meter (``flowsd poll SERIAL``)."""

    def __init__(self) -> None:
        self.outcome: SessionOutcome | None = None
        self._done = anyio.Event()

    def finish(self, outcome: SessionOutcome | None) -> None:
        self.outcome = outcome
        self._done.set()

    async def wait(self) -> SessionOutcome | None:
        await self._done.wait()
        return self.outcome


class Inbox:
    """What callers wait for from one meter: queued commands, full-poll requests and the
    read-backs still owed. A session holds one only while any of these waits (most meters
    have none almost all the time, and a fleet holds tens of thousands of sessions)."""

    __slots__ = ("commands", "poll_requests", "readback", "readback_due")

    def __init__(self) -> None:
        # A short FIFO (at most queue_size): a list, not a deque (56 bytes against 760).
        self.commands: list[MeterCommand] = []
        self.poll_requests: list[PollRequest] = []
        self.readback: dict[str, None] = {}  # names in reading order
        self.readback_due = math.inf  # wall clock

    @property
    def empty(self) -> bool:
        return not (self.commands or self.poll_requests or self.readback)

    def drop_commands(self, result: CommandResult) -> None:
        """Finish every queued command with ``result`` (nothing is recorded)."""
        for command in self.commands:
            command.finish(result)
        self.commands.clear()

    def finish_poll_requests(
        self, outcome: SessionOutcome | None, requests: Sequence[PollRequest] | None
    ) -> None:
        """Give ``outcome`` to those of ``requests`` still waiting (None: to every waiting
        one), which then wait no more."""
        waiting = self.poll_requests
        for request in list(waiting) if requests is None else requests:
            if request in waiting:  # not answered meanwhile (stop() answers every one)
                waiting.remove(request)
                request.finish(outcome)

    def owe_readback(self, names: tuple[str, ...], due: float) -> None:
        """Owe a read-back of ``names`` besides those owed already, all due at ``due``."""
        self.readback.update(dict.fromkeys(names))
        self.readback_due = due

    async def read_back(self, conv: Conversation) -> None:
        """Read the objects owed in ``conv``; raises PollAbortError when the meter does not
        answer, leaving what is still owed due again after a probe's delay."""
        for name in list(self.readback):
            info = by_name(name)
            try:
                answer = await conv.read_object(name, info.id)
            except PollAbortError:
                answer = conv.last_failure or Failure("internal", "aborted", 0)
            if isinstance(answer, Failure) and not answer.meter_answered:
                # Not now: again after a probe's delay (or when the meter is back online).
                session = conv.session
                self.readback_due = session.wall_clock() + session.settings.probe_initial_seconds
                raise PollAbortError
            del self.readback[name]
        self.readback_due = math.inf


# --------------------------------------------------------------------- the session's inbox


def _inbox_of(session: MeterSession) -> Inbox:
    """The session's inbox, made when it holds none."""
    if session.inbox is None:
        session.inbox = Inbox()
    return session.inbox


def _drop_if_empty(session: MeterSession) -> None:
    """Let the session's inbox go once nothing waits in it."""
    if session.inbox is not None and session.inbox.empty:
        session.inbox = None


def enqueue(session: MeterSession, command: MeterCommand) -> None:
    """Queue a command (the supervisor wakes the session); raises QueueFullError."""
    if len(session.commands) >= session.queue_size:
        raise QueueFullError
    command.state = "queued"
    _inbox_of(session).commands.append(command)
    session.counts.commands_queued += 1


async def withdraw(session: MeterSession, command: MeterCommand, result: CommandResult) -> bool:
    """Take a command that has not started out of the queue (its caller gave up)."""
    if command.state != "queued" or command not in session.commands:
        return False  # started, or queued in a session that has since left the fleet
    assert session.inbox is not None
    session.inbox.commands.remove(command)
    _drop_if_empty(session)
    session.counts.commands_queued -= 1
    await finish_unrun(session, command, result, None)
    return True


async def fail_queued(
    session: MeterSession, reason: str, detail: str, watchdog: ProgressWatchdog | None = None
) -> int:
    """Fail every queued command (the meter is unreachable, or the daemon is stopping)."""
    failed = 0
    while session.inbox is not None and session.inbox.commands:
        command = session.inbox.commands.pop(0)
        _drop_if_empty(session)
        session.counts.commands_queued -= 1
        await finish_unrun(session, command, refused(reason, detail), watchdog)
        failed += 1
    return failed


def drop_queued(session: MeterSession, result: CommandResult) -> None:
    """Finish every queued command with ``result`` and record nothing (the session leaves a
    fleet that is not running: there is no task to record outcomes in)."""
    if session.inbox is None:
        return
    session.inbox.drop_commands(result)
    _drop_if_empty(session)


def request_poll(session: MeterSession) -> PollRequest:
    """A caller's request for the next full poll (the supervisor wakes the session)."""
    request = PollRequest()
    _inbox_of(session).poll_requests.append(request)
    return request


def finish_poll_requests(
    session: MeterSession,
    outcome: SessionOutcome | None,
    requests: Sequence[PollRequest] | None = None,
) -> None:
    """Give ``outcome`` to those of ``requests`` still waiting (None: to every waiting
    one), which then wait no more."""
    if session.inbox is None:
        return
    session.inbox.finish_poll_requests(outcome, requests)
    _drop_if_empty(session)


async def finish_unrun(
    session: MeterSession,
    command: MeterCommand,
    result: CommandResult,
    watchdog: ProgressWatchdog | None,
) -> None:
    """Finish a command that did not run with ``result``, and record its outcome."""
    command.finish(result)
    session.counts.commands[command.name, result.reason or "failed"] += 1
    target = session.target
    now = datetime.fromtimestamp(session.wall_clock(), UTC)
    await session.emit([command.outcome(target.meter_id, target.serial, now, 0.0)], watchdog)


def read_back_later(session: MeterSession, names: tuple[str, ...], *, settle: bool) -> None:
    """Owe a read-back of ``names``: after ``readback_settle_seconds`` without another such
    request (``settle``), else at the end of this run or when the meter answers."""
    delay = session.readback_settle_seconds if settle else 0.0
    _inbox_of(session).owe_readback(names, session.wall_clock() + delay)


# --------------------------------------------------------------------- serving


async def serve_commands(conv: Conversation, *, final: bool = False) -> None:
    """Run the session's queued commands (between two plan items, and at the end of a run
    with ``final``, then the read-backs that are due). A command that found the meter
    unreachable ends the run like a failed poll request does."""
    session = conv.session
    while session.inbox is not None and session.inbox.commands and not session.stopping():
        if session.breaker.offline or _unreachable(conv):
            why = session.last_failure.reason if session.last_failure else "offline"
            await fail_queued(session, "unavailable", f"meter unreachable ({why})", conv.watchdog)
            break
        command = session.inbox.commands.pop(0)
        _drop_if_empty(session)
        session.counts.commands_queued -= 1
        if time.monotonic() >= command.deadline:
            late = refused("deadline", "the caller's deadline passed in the queue")
            await finish_unrun(session, command, late, conv.watchdog)
            continue
        await _execute(conv, command)
    inbox = session.inbox
    if not final or inbox is None:
        return
    if inbox.readback and inbox.readback_due <= session.wall_clock():
        # ``inbox`` stays the session's throughout: it is not dropped while names are owed.
        await inbox.read_back(conv)
        _drop_if_empty(session)


async def _execute(conv: Conversation, command: MeterCommand) -> None:
    session = conv.session
    started = time.monotonic()
    session.counts.commands_running += 1
    try:
        result = await command.execute(conv)
    except Exception as exc:  # a flowsd bug: the caller gets an answer, the run goes on
        session.log.exception("meter command failed unexpectedly", command=command.name)
        result = refused("internal", repr(exc))
        command.finish(result)
    finally:
        session.counts.commands_running -= 1
    session.counts.commands[command.name, "ok" if result.ok else (result.reason or "failed")] += 1
    target = session.target
    seconds = time.monotonic() - started
    await conv.emit([command.outcome(target.meter_id, target.serial, conv.now(), seconds)])
    if result.reason in _TRANSPORT or session.breaker.offline:
        raise PollAbortError  # the meter is unreachable: end the run as a poll would


_TRANSPORT = frozenset(
    {"refused", "connect_timeout", "unreachable", "reset", "closed", "read_timeout", "watchdog"}
)


def _unreachable(conv: Conversation) -> bool:
    failure = conv.first_failure
    return failure is not None and failure.connection_level
