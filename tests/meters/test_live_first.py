"""Live first: cadence reads go before any back-fill, and back-fill only uses what is left
under the caps (the limiter's two lanes, and the order of a poll's items)."""

from __future__ import annotations

import asyncio
import math
import uuid

import anyio
import pytest

from flowsd.emop import ReadRequest
from flowsd.meters import exchange
from flowsd.meters.exchange import BackfillDeferredError, MeterLink
from flowsd.meters.limits import ConnectionLimiter, Lane
from flowsd.meters.observations import EventLogScanned, MeterLogEntry, SessionOutcome
from flowsd.meters.session import MeterSession
from flowsd.meters.statistics import EngineCounts
from flowsd.meters.target import MeterTarget
from flowsd.meters.watchdog import ProgressWatchdog
from flowsd.sim.fleet import SimulatedFleet
from tests.support import wait_until

from .conftest import Collector, fleet_of, plan_of, session_for, settings, subnet, targets_for


async def test_a_live_waiter_is_granted_before_every_backfill_waiter_queued_earlier() -> None:
    limiter = ConnectionLimiter(max_in_flight=1, rate=1000.0, burst=1)
    order: list[str] = []

    async def take(name: str, lane: Lane) -> None:
        assert await limiter.acquire(lane)
        order.append(name)
        await anyio.sleep(0.01)
        limiter.release()

    async with anyio.create_task_group() as tg:
        assert limiter.try_acquire("backfill")  # the slot is busy
        for i in range(3):
            tg.start_soon(take, f"backfill {i}", "backfill")
        await wait_until(lambda: limiter.waiting("backfill") == 3)
        assert not limiter.try_acquire("live")  # no slot
        tg.start_soon(take, "live", "live")
        await wait_until(lambda: limiter.waiting("live") == 1)
        assert not limiter.try_acquire("backfill")  # a live waiter goes first
        limiter.release()
    assert order == ["live", "backfill 0", "backfill 1", "backfill 2"]
    assert limiter.granted == {"live": 1, "backfill": 4} and limiter.in_flight == 0


async def test_a_backfill_wait_is_withdrawn_when_its_meter_is_due() -> None:
    limiter = ConnectionLimiter(max_in_flight=1, rate=1000.0, burst=1)
    assert limiter.try_acquire("live")
    results: list[bool] = []

    async def wait(due: float) -> None:
        results.append(await limiter.acquire("backfill", due=due))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, 100.0)
        tg.start_soon(wait, math.inf)
        await wait_until(lambda: limiter.waiting("backfill") == 2)
        assert limiter.expire(99.0) == 0
        assert limiter.expire(100.0) == 1
        await wait_until(lambda: results == [False])
        limiter.release()  # the other one gets the slot
    assert results == [False, True] and limiter.in_flight == 1 and limiter.expired == 1
    limiter.release()


async def test_granted_backfill_waits_do_not_pile_up_until_their_meters_are_due() -> None:
    # Each back-fill wait carries its meter's next due time, up to a cadence period away; the
    # waits granted long before it must not stay in the limiter (at fleet scale: tens of
    # thousands of dead waiters and futures, megabytes).
    limiter = ConnectionLimiter(max_in_flight=1, rate=1e9, burst=1)
    granted = 0

    async def take() -> None:
        nonlocal granted
        assert await limiter.acquire("backfill", due=1e12)
        granted += 1
        limiter.release()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            assert limiter.try_acquire("live")  # the slot is busy: the next ones queue
            for _ in range(100):
                tg.start_soon(take)
            await wait_until(lambda: limiter.waiting("backfill") == 100)
            limiter.release()
            await wait_until(lambda: limiter.waiting("backfill") == 0)
    assert granted == 2000 and limiter.in_flight == 0
    assert limiter.due_entries <= 2 * 100 + 256


async def test_live_reads_of_a_meter_go_before_the_fleets_backfill_under_the_caps() -> None:
    """Six meters share caps that back-fill alone would saturate: five are back-filling a
    day of profile logs when the sixth starts its poll. The simulator's journal (the order in
    which the meters answered) shows the sixth meter's live reads first in its own poll and
    served ahead of the queued back-fill: at most one back-fill answer of the others lands
    between two of its reads (the request granted while it was between two of its own),
    where a single first-come-first-served queue would put four or five."""
    live = ["csq_net_op", "prepay_balance", "instantaneous_voltage"]
    plan = plan_of(["profile_logs", *live], period=3600.0)  # profile logs first in the plan
    config = settings(
        max_connections_in_flight=1,
        max_new_connections_per_second=40.0,
        new_connections_burst=1,
        backfill_horizon_hours=24,
        backfill_max_requests_per_poll=200,
    )
    async with SimulatedFleet(
        meters=6,
        seed=11,
        base_address=subnet(),
        port=0,
        hardware=["C1.w"] * 6,
        history_days=2,
        journal=True,
    ) as fleet:
        sink = Collector()
        counts = EngineCounts()
        limiter = ConnectionLimiter(1, 40.0, 1, totals=counts.connections)
        sessions = [
            MeterSession(
                target, settings=config, plan=plan, limiter=limiter, sink=sink, counts=counts
            )
            for target in targets_for(fleet)
        ]
        journal = fleet.journal
        assert journal is not None
        async with anyio.create_task_group() as tg:
            for session in sessions[:5]:
                tg.start_soon(session.poll, ["fast"])
            # The five are in their back-fill, one waiter each in the back-fill lane.
            await wait_until(lambda: sum(1 for e in journal if not _is_read(e.request)) >= 10)
            assert limiter.waiting("backfill") + limiter.waiting("live") >= 3
            tg.start_soon(sessions[5].poll, ["fast"])
            await wait_until(lambda: len(fleet.answers(5)) >= len(live) + 2)
            tg.cancel_scope.cancel()
        mine = fleet.answers(5)
        assert [_is_read(e.request) for e in mine[: len(live)]] == [True] * len(live)
        start = journal.index(mine[0])
        end = journal.index(mine[len(live) - 1])
        others_backfill = [
            e for e in journal[start : end + 1] if e.index != 5 and not _is_read(e.request)
        ]
        assert len(others_backfill) <= len(live) - 1, others_backfill
        # Each of the five read its own live objects before its first back-fill request.
        for index in range(5):
            kinds = [_is_read(e.request) for e in fleet.answers(index)]
            assert kinds[: len(live)] == [True] * len(live) and not any(kinds[len(live) :])
        assert limiter.granted["backfill"] >= 10
        assert not [o for o in sink.of(SessionOutcome) if not o.ok and o.reason != "stopped"]


def _is_read(request: bytes) -> bool:
    """An object read (0x01 + object id) rather than a profile-log request."""
    return request[:1] == b"\x01"


async def test_a_meters_first_event_log_scan_is_history_read_last_in_the_backfill_lane() -> None:
    """Nothing of the meter's log is stored yet (no cursor): the poll reads its live objects
    and then the event log's newest page; the older pages go in the back-fill lane. While
    the fleet holds back-fill (meters waiting to start) they are not asked and nothing of the
    scan is emitted; the next poll reads the whole log, every entry the meter holds."""
    live = ["csq_net_op", "prepay_balance"]
    plan = plan_of([*live, "event_log"], period=3600.0)
    config = settings(event_log_max_pages=10)
    async with fleet_of(1, hardware=["C1.w"], journal=True) as fleet:
        (target,) = targets_for(fleet)
        sink = Collector()
        session = session_for(target, config, plan, sink)
        limiter = session.limiter
        journal = fleet.journal
        assert journal is not None
        assert limiter.hold_backfill(True) == 0

        await session.poll(["fast"])
        pages = [_event_page(e.request) for e in journal if _event_page(e.request) is not None]
        assert pages == [0]  # the newest page live, the next one refused by the hold
        assert [_is_read(e.request) for e in journal[: len(live)]] == [True] * len(live)
        assert session.counts.backfill_deferred == 1
        assert not sink.of(MeterLogEntry) and not sink.of(EventLogScanned)
        assert session.event_cursor is None
        assert all(o.ok for o in sink.of(SessionOutcome))

        limiter.hold_backfill(False)
        before = len(journal)
        await session.poll(["fast"])
        pages = [_event_page(e.request) for e in journal[before:]]
        assert pages[-1] == 0 and 1 in pages  # history read, then the newest page again
        assert limiter.granted["backfill"] >= 1
        held = fleet.events(0)
        assert len(sink.of(MeterLogEntry)) == len(held) > 10
        assert session.event_cursor is not None


def _event_page(request: bytes) -> int | None:
    """The page an event-log request asks for (format 0x05), else None."""
    return request[-1] if request[:1] == b"\x05" else None


async def test_a_first_event_log_scan_given_up_twice_reads_its_history_live() -> None:
    """The fleet keeps holding back-fill (meters keep waiting to start): a meter's first
    scan is given up at two polls, then read live, the whole log, rather than wait while
    the meter's log rolls over."""
    plan = plan_of(["csq_net_op", "event_log"], period=3600.0)
    async with fleet_of(1, hardware=["C1.w"], journal=True) as fleet:
        (target,) = targets_for(fleet)
        sink = Collector()
        session = session_for(target, settings(event_log_max_pages=10), plan, sink)
        journal = fleet.journal
        assert journal is not None
        session.limiter.hold_backfill(True)
        for deferrals in (1, 2):
            before = len(journal)
            await session.poll(["fast"])
            assert [_event_page(e.request) for e in journal[before:]] == [None, 0]
            assert session.event_history_deferrals == deferrals
            assert not sink.of(MeterLogEntry)
        before = len(journal)
        await session.poll(["fast"])
        pages = [_event_page(e.request) for e in journal[before:]]
        assert 9 in pages and pages[-1] == 0
        assert session.limiter.granted["backfill"] == 0
        assert len(sink.of(MeterLogEntry)) == len(fleet.events(0))
        assert session.event_cursor is not None


async def test_a_backfill_wait_ends_when_deferred_or_after_its_longest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A back-fill request queued for a connection gives up its place, sending nothing and
    holding no slot, when a command arrives for its meter (defer_backfill) and when it has
    waited BACKFILL_MAX_WAIT_SECONDS; a cancelled wait stays a cancellation."""
    monkeypatch.setattr(exchange, "BACKFILL_MAX_WAIT_SECONDS", 0.2)
    config = settings(max_connections_in_flight=1)
    target = MeterTarget(meter_id=uuid.UUID(int=1), serial="EML0", ip_address="127.0.0.1")
    session = session_for(target, config, plan_of(), Collector())
    limiter = session.limiter
    link = MeterLink()
    request = ReadRequest(object_id=0x0025)

    async def backfill_request() -> None:
        with ProgressWatchdog(10.0) as watchdog:
            await link.request(
                session, request, "profile_log", attempts=1, twin=False,
                watchdog=watchdog, lane="backfill",
            )  # fmt: skip

    assert limiter.try_acquire("live")  # the fleet's only slot is busy
    loop = asyncio.get_running_loop()
    started = loop.time()
    with anyio.fail_after(10), pytest.raises(BackfillDeferredError):
        await backfill_request()
    # uvloop's clock is in whole milliseconds: 200 ms may read as a hair less.
    assert 0.198 <= loop.time() - started < 2.0 and limiter.waiting("backfill") == 0

    # From here only a deferral ends a wait (an hour, not math.inf: uvloop's timers overflow).
    monkeypatch.setattr(exchange, "BACKFILL_MAX_WAIT_SECONDS", 3600.0)
    outcome: list[str] = []

    async def deferred() -> None:
        try:
            await backfill_request()
        except BackfillDeferredError:
            outcome.append("deferred")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deferred)
            await wait_until(lambda: link.waiting_for_slot)
            link.defer_backfill()
            await asyncio.sleep(0)  # its timeout fires; the waiting task has yet to resume
            link.defer_backfill()  # expiring already: nothing more to do
            await wait_until(lambda: outcome == ["deferred"])

            tg.start_soon(deferred)
            await wait_until(lambda: link.waiting_for_slot)
            tg.cancel_scope.cancel()
    assert outcome == ["deferred"] and limiter.waiting("backfill") == 0
    limiter.release()
    assert limiter.in_flight == 0 and limiter.connects == 1  # nothing but the busy slot
