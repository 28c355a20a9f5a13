"""The routine jobs a meter session runs: a poll of the plan's due cadences, and a probe.

A :class:`Poll` reads the plan items of its cadences in order (learning the hardware first
when the registry does not know it), pages the meter's event log from the session's cursor
and reads the profile logs from the session's per-log cursors with back-fill, always last:
a meter's live readings never wait behind its own history. Without a cursor (a meter's
first scan) the event log's pages behind the newest are history too: the scan then comes
after the profile logs and those pages go in the back-fill lane (a withdrawn wait leaves
the whole scan to a later poll; after :data:`EVENT_HISTORY_MAX_DEFERRALS` such polls the
history is read live, since the meter's log rolls over). A profile-log request more than
:data:`LIVE_HALF_HOURS` half hours behind is back-fill: it queues in the limiter's
back-fill lane (:mod:`flowsd.meters.limits`), behind every live request of the fleet, and
the poll leaves the rest of its back-fill to a later poll once the meter's next cadence is
due, a command arrives for it, or it waited for a connection for
:data:`~flowsd.meters.exchange.BACKFILL_MAX_WAIT_SECONDS`. Between two
plan items, and between two profile-log requests, it lets the session serve queued commands
(:meth:`~flowsd.meters.session.MeterSession.serve_commands`), so a command waits for at most
one item. On a three-phase meter the plan's ``profile_logs`` is its interval profile (format
0x14, profile 0, SPEC §10), read the same way in windows of at most
:data:`INTERVAL_WINDOW_SECONDS`, once it is known whether the meter is a P1.ax or a P1.cx
(the scale of its values). A :class:`Probe` is one cheap read of an offline meter, without
retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from flowsd.emop import (
    EventLogRequest,
    ProfileLogRequest,
    ReadRequest,
    ThreePhaseIntervalsRequest,
    by_name,
)
from flowsd.emop.hardware import THREE_PHASE_NAMES
from flowsd.emop.records import EventLog, IntervalRecord, ProfileLog1, ProfileLog2
from flowsd.emop.records import ThreePhaseIntervals as WireThreePhaseIntervals
from flowsd.meters.backfill import (
    HALF_HOUR,
    THREE_PHASE_LOG,
    LogCursor,
    choose_next,
    first_wanted,
    newest_complete,
    to_datetime,
)
from flowsd.meters.eventlog import EventLogScan, LogRecord
from flowsd.meters.exchange import Answer, BackfillDeferredError, Failure, PollAbortError
from flowsd.meters.observations import (
    EventLogScanned,
    MeterLogEntry,
    Observation,
    ThreePhaseInterval,
)
from flowsd.meters.plan import (
    EventLogRead,
    ObjectRead,
    PlanItem,
    ProfileLogsRead,
    is_twin_element,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from flowsd.emop import Request
    from flowsd.meters.conversation import Conversation
    from flowsd.meters.limits import Lane
    from flowsd.meters.session import MeterSession

_HARDWARE_VERSION = by_name("hardware_version")
_HARDWARE_CONFIGURATION = by_name("three_phase_hardware_configuration")
# The three-phase hardware names that say which scale the meter's values have.
_SCALE_KNOWN = THREE_PHASE_NAMES - {"THREE_PHASE_UNKNOWN"}
# The reference asks a three-phase meter for at most 4 hours of intervals at a time (SPEC
# §10.1): 8 half hours with its channels fit in one frame.
INTERVAL_WINDOW_SECONDS = 4 * 3600
INTERVAL_PROFILE = 0
INTERVAL_MINUTES = 30
# A profile of another interval length is looked at again after this (wall-clock seconds).
NOT_HALF_HOURLY_RECHECK_SECONDS = 86400.0
# A profile log at most this many half hours behind is read in the live lane: a
# half-hourly poll normally finds one (two around its slot's edge) per log.
LIVE_HALF_HOURS = 2
# A meter's first event-log scan waits for back-fill room at most this many polls; then its
# history is read in the live lane (the log keeps its last 100 entries and rolls over).
EVENT_HISTORY_MAX_DEFERRALS = 2


class Probe:
    """One read of ``probe_object`` (no retries) to see whether an offline meter is back."""

    kind: Literal["probe"] = "probe"
    cadences: tuple[str, ...] = ()

    async def run(self, conv: Conversation) -> None:
        info = by_name(conv.session.settings.probe_object)
        answer = await conv.request(ReadRequest(info.id), "probe", info.name, attempts=1)
        if isinstance(answer, Answer):
            await conv.emit([conv.reading(info.name, info.id, answer)])


class Poll:
    """Everything the plan holds for ``cadences``, in plan order."""

    kind: Literal["poll"] = "poll"

    def __init__(self, cadences: tuple[str, ...]) -> None:
        self.cadences = cadences

    async def run(self, conv: Conversation) -> None:
        session = conv.session
        if session.family is None:
            await self._learn_hardware(conv)
        for item in self.items(session):
            if session.stopping():
                raise PollAbortError
            await session.serve_commands(conv)
            await self._run_item(conv, item)

    def items(self, session: MeterSession) -> list[PlanItem]:
        wanted = set(self.cadences)
        items: list[PlanItem] = []
        for cadence in session.plan.cadences(session.family or "single_phase"):
            if cadence.name in wanted:
                items.extend(i for i in cadence.items if i not in items)
        # Profile logs last (stable sort): the back-fill they may carry is the long part. An
        # event log never scanned goes after them: most of its pages are history.
        history = session.event_cursor is None

        def rank(item: PlanItem) -> int:
            if isinstance(item, ProfileLogsRead):
                return 1
            return 2 if history and isinstance(item, EventLogRead) else 0

        items.sort(key=rank)
        return items

    async def _run_item(self, conv: Conversation, item: PlanItem) -> None:
        match item:
            case ObjectRead(name=name, object_id=oid):
                if name not in conv.read_objects:
                    await self._read_object(conv, name, oid)
            case EventLogRead():
                await self._read_event_log(conv)
            case ProfileLogsRead():
                if conv.session.family == "single_phase":
                    await self._read_profile_logs(conv)
                elif conv.session.family == "three_phase":
                    await self._read_three_phase_intervals(conv)

    async def _learn_hardware(self, conv: Conversation) -> None:
        answer = await self._read_object(conv, _HARDWARE_VERSION.name, _HARDWARE_VERSION.id)
        if isinstance(answer, Failure) and answer.reason == "nak":
            # Three-phase meters refuse hardware_version (SPEC §5.2).
            conv.session.set_hardware("THREE_PHASE_UNKNOWN")

    async def _read_object(self, conv: Conversation, name: str, oid: int) -> Answer | Failure:
        conv.read_objects.add(name)
        return await conv.read_object(name, oid)

    # ----------------------------------------------------------------- event log

    async def _read_event_log(self, conv: Conversation) -> None:
        session = conv.session
        scan = EventLogScan(session.event_cursor, max_pages=session.settings.event_log_max_pages)
        while (page := scan.next_page()) is not None:
            # Without a cursor (nothing of this meter's log is stored yet) the pages behind
            # the newest are history: back-fill, behind every meter's live reads, until the
            # scan has been given up too often (the log rolls over: waiting loses entries).
            history = (
                page > 0
                and scan.cursor is None
                and session.event_history_deferrals < EVENT_HISTORY_MAX_DEFERRALS
            )
            records = await self._event_page(conv, page, lane="backfill" if history else "live")
            if records is None:
                return  # the cursor stays; the whole scan is repeated next time
            scan.add_page(records)
        if scan.needs_confirmation:
            again = await self._event_page(conv, 0)
            if again is None:
                return
            if not scan.unchanged(again):
                session.counts.event_log_rescans += 1
                session.log.info("meter event log moved during the scan; rescanning next poll")
                return
        result = scan.result()
        base = conv.base()
        observations: list[Observation] = [
            MeterLogEntry(
                **base,
                occurred_at=entry.occurred_at,
                event_id=entry.event_id,
                event_set=entry.event_set,
                ordinal=entry.ordinal,
            )
            for entry in result.entries
        ]
        observations.append(
            EventLogScanned(
                **base,
                pages_read=result.pages_read,
                new_entries=len(result.entries),
                cursor=result.cursor,
                possibly_lost_before=result.possibly_lost_before,
                invalid_records=result.invalid_records,
            )
        )
        if result.possibly_lost_before is not None:
            session.counts.event_log_overflows += 1
            session.log.warning(
                "meter event log overflowed since the last scan",
                possibly_lost_before=result.possibly_lost_before.isoformat(),
            )
        if result.invalid_records:
            session.counts.event_log_invalid_records += result.invalid_records
        await conv.emit(observations)
        session.event_cursor = result.cursor

    async def _event_page(
        self, conv: Conversation, index: int, lane: Lane = "live"
    ) -> list[LogRecord] | None:
        """Page ``index`` of the meter's log; None when it failed or its back-fill wait was
        withdrawn (the meter's next cadence came due, or the fleet has meters waiting to
        start their first poll), counted."""
        due = conv.session.schedule.next_due() if lane == "backfill" else math.inf
        try:
            answer = await conv.request(
                EventLogRequest(index), "event_log", "event_log", lane=lane, due=due
            )
        except BackfillDeferredError:
            conv.session.counts.backfill_deferred += 1
            conv.session.event_history_deferrals += 1
            return None
        if isinstance(answer, Failure):
            return None
        record = answer.response.record
        assert isinstance(record, EventLog)
        return [LogRecord(e.timestamp, int(e.event_id), e.event_set) for e in record.events]

    # ----------------------------------------------------------------- profile logs

    async def _profile_turn(
        self, conv: Conversation, cursor: LogCursor, newest: int, *, first: bool
    ) -> tuple[Lane, float] | None:
        """The lane of a poll's next profile request and the meter's next due time, or None
        when that request would be back-fill and the meter's next cadence is due (its live
        readings go first). Commands queued meanwhile are served between two requests."""
        session = conv.session
        if not first:
            await session.serve_commands(conv)
        due = session.schedule.next_due()
        if cursor.pending(newest) <= LIVE_HALF_HOURS:
            return "live", due
        if due <= session.wall_clock():
            return None
        return "backfill", due

    async def _profile_request(
        self,
        conv: Conversation,
        cursor: LogCursor,
        newest: int,
        request_for: Callable[[int], Request],
        label: str,
        *,
        first: bool,
        twin: bool = False,
    ) -> tuple[int, Answer | Failure] | None:
        """A poll's next profile request, for the cursor's next wanted time, in its lane (see
        :meth:`_profile_turn`): that time and the answer. None when the poll's profile reading
        stops here: back-fill yields to the meter's next cadence, or its back-fill wait was
        withdrawn (the next cadence came due or a command arrived), counted."""
        turn = await self._profile_turn(conv, cursor, newest, first=first)
        if turn is None:
            return None
        lane, due = turn
        requested = cursor.next_wanted
        try:
            answer = await conv.request(
                request_for(requested), "profile_log", label, twin=twin, lane=lane, due=due
            )
        except BackfillDeferredError:
            conv.session.counts.backfill_deferred += 1
            return None
        return requested, answer

    async def _read_profile_logs(self, conv: Conversation) -> None:
        session = conv.session
        settings = session.settings
        newest = newest_complete(conv.now(), settings.profile_settle_seconds)
        horizon = settings.backfill_horizon_hours * 3600
        resume = session.target.resume
        logs = (
            session.profile_cursor(1, first_wanted(resume.profile_log_1_last, newest, horizon)),
            session.profile_cursor(2, first_wanted(resume.profile_log_2_last, newest, horizon)),
        )
        twin = is_twin_element(session.hardware)
        budget = full_budget = settings.backfill_max_requests_per_poll
        stalled: set[int] = set()
        while budget > 0:
            cursor = choose_next(logs, newest, stalled)
            if cursor is None:
                return
            log = cursor.log
            assert log != THREE_PHASE_LOG
            step = await self._profile_request(
                conv,
                cursor,
                newest,
                partial(ProfileLogRequest, log),
                f"profile_log_{log}",
                first=budget == full_budget,
                twin=twin,
            )
            if step is None:
                return
            budget -= 1
            requested, answer = step
            if isinstance(answer, Failure):
                stalled.add(cursor.log)
                continue
            body = answer.response.record
            assert isinstance(body, ProfileLog1 | ProfileLog2)
            accepted = cursor.accept(requested, body.records, newest)
            base = conv.base()
            observations = conv.interval_records(log, accepted.records)
            observations += conv.interval_gaps(log, accepted.gaps, base)
            if observations:
                await conv.emit(observations)
            if not accepted.progressed:
                stalled.add(cursor.log)

    # ----------------------------------------------------------------- three-phase intervals

    async def _read_three_phase_intervals(self, conv: Conversation) -> None:
        session = conv.session
        settings = session.settings
        if session.hardware not in _SCALE_KNOWN:
            # P1.ax counts W, P1.cx 0.1 W: the events need to say which (as the reference,
            # which reads the configuration before every interval download).
            name, oid = _HARDWARE_CONFIGURATION.name, _HARDWARE_CONFIGURATION.id
            if name not in conv.read_objects:
                await self._read_object(conv, name, oid)
            if session.hardware not in _SCALE_KNOWN:
                return
        # Records are stamped with their interval's start: the newest complete one starts
        # half an hour before the newest profile-log timestamp.
        newest = newest_complete(conv.now(), settings.profile_settle_seconds) - HALF_HOUR
        last = session.target.resume.three_phase_interval_last
        horizon = settings.backfill_horizon_hours * 3600
        cursor = session.profile_cursor(THREE_PHASE_LOG, first_wanted(last, newest, horizon))
        if cursor.paused_until > session.wall_clock():
            return

        def window_end(wanted: int) -> int:
            return min(wanted + INTERVAL_WINDOW_SECONDS, newest + HALF_HOUR)

        budget = full_budget = settings.backfill_max_requests_per_poll
        while budget > 0 and cursor.pending(newest) > 0:
            step = await self._profile_request(
                conv,
                cursor,
                newest,
                lambda wanted: ThreePhaseIntervalsRequest(
                    wanted, window_end(wanted), INTERVAL_PROFILE
                ),
                "three_phase_intervals",
                first=budget == full_budget,
            )
            if step is None:
                return
            budget -= 1
            requested, answer = step
            if isinstance(answer, Failure):
                return
            block = answer.response.record
            assert isinstance(block, WireThreePhaseIntervals)
            if block.interval_duration != INTERVAL_MINUTES:
                # Not half hours: nothing a half-hour cursor can follow (or the projection
                # use). Asked again a day later: the meter may be reconfigured meanwhile.
                cursor.paused_until = session.wall_clock() + NOT_HALF_HOURLY_RECHECK_SECONDS
                session.log.warning(
                    "three-phase interval profile is not half-hourly; asked again in a day",
                    interval_minutes=block.interval_duration,
                )
                return
            accepted = cursor.accept(requested, _timed(block), newest)
            gaps = list(accepted.gaps)
            if not accepted.progressed:
                # An empty window whose block starts later: the meter's profile begins there
                # (its oldest data is newer than the window asked for), so move past it. An
                # empty window wholly older than the newest complete interval is a hole in the
                # meter's profile that will never fill: move past it too, or every later poll
                # would ask for it again and never reach the intervals after it.
                first_held = block.block_start_time
                if window_end(requested) <= newest:
                    first_held = max(first_held, window_end(requested))
                skipped = cursor.skip_to(first_held, newest)
                if skipped is not None:
                    gaps.append(skipped)
            base = conv.base()
            observations: list[Observation] = [
                ThreePhaseInterval(
                    **base,
                    profile=INTERVAL_PROFILE,
                    interval_at=to_datetime(timed.timestamp),
                    interval_minutes=block.interval_duration,
                    status=timed.record.status,
                    channels=dict(zip(block.channel_ids, timed.record.channel_data, strict=True)),
                )
                for timed in accepted.records
            ]
            observations += conv.interval_gaps(THREE_PHASE_LOG, gaps, base)
            if observations:
                await conv.emit(observations)
            if not (accepted.progressed or gaps):
                return


@dataclass(frozen=True, slots=True)
class _TimedInterval:
    """An interval record with its start time (SPEC §10: block start + place × length)."""

    timestamp: int
    record: IntervalRecord


def _timed(block: WireThreePhaseIntervals) -> list[_TimedInterval]:
    step = block.interval_duration * 60
    return [
        _TimedInterval(block.block_start_time + i * step, record)
        for i, record in enumerate(block.intervals)
    ]
