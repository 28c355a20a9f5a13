"""The cycle collector's settings, freezing and timing (flowsd.ops.heap), and their export."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path

import anyio

from flowsd.ops import heap
from tests.ops.scrape import real_scrape
from tests.support import wait_until


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _garbage_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_frozen_cycle_waits_for_the_next_freeze_and_goes_then() -> None:
    memory = heap.Heap()
    with memory.tuned():
        cycle = _garbage_cycle()  # garbage already, but only a collection frees a cycle
        gc.freeze()  # as if it had been alive at the last freeze
        gc.collect()
        assert cycle() is not None  # no collection walks the permanent generation
        frozen = memory.freeze()
        assert cycle() is None
        assert frozen == memory.frozen == gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_nested_runs_tune_once_and_the_last_exit_restores() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    memory = heap.Heap()
    try:
        with memory.tuned():
            assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
            with memory.tuned():
                memory.freeze()
            assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)  # the outer still runs
            assert memory.clock._callback in gc.callbacks
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0 and memory.frozen == 0
        assert memory.clock._callback not in gc.callbacks
    finally:
        gc.set_threshold(*saved)


def test_the_clock_counts_each_collection_by_generation() -> None:
    clock = heap.CollectorClock()
    clock.install()
    clock.install()  # once only
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        clock.uninstall()
    gc.collect(2)  # not counted: uninstalled
    assert clock.collections[2] == 2
    assert clock.collections[0] >= 1  # and any the test's own allocations caused
    assert all(seconds >= 0 for seconds in clock.seconds)
    assert sum(clock.seconds) > 0


def test_the_freezer_waits_for_a_quiet_fleet_and_refreezes_on_its_own() -> None:
    now = [0.0]
    freezer = heap.Freezer(heap.Heap(), settle=30, refreeze=3600, clock=lambda: now[0])
    assert not freezer.due()
    freezer.fleet_changed()
    now[0] = 20
    freezer.fleet_changed()  # a rebalance moves meters over several rounds
    now[0] = 49
    assert not freezer.due()
    now[0] = 50
    assert freezer.due()
    freezer.freeze()
    assert not freezer.due() and freezer.freezes == 1
    now[0] = 50 + 3599
    assert not freezer.due()
    now[0] = 50 + 3600
    assert freezer.due()
    gc.unfreeze()


async def test_the_freezer_task_freezes_when_due() -> None:
    memory = heap.Heap()
    freezer = heap.Freezer(memory, settle=0.05, refreeze=3600)
    with memory.tuned():
        async with anyio.create_task_group() as tg:
            await tg.start(freezer.run)
            freezer.fleet_changed()
            await wait_until(lambda: freezer.freezes > 0)
            tg.cancel_scope.cancel()
        assert memory.frozen > 0
    assert gc.get_freeze_count() == 0


async def test_a_running_daemon_froze_its_fleet_and_exports_the_collector(
    migrated_url: str, tmp_path: Path
) -> None:
    before = gc.get_threshold()
    text = (await real_scrape(migrated_url, tmp_path)).text
    collections = re.findall(
        r'^flowsd_gc_collections_total\{generation="(\d)"\} (\S+)$', text, re.MULTILINE
    )
    assert {generation for generation, _ in collections} == {"0", "1", "2"}
    assert re.search(r'^flowsd_gc_seconds_total\{generation="2"\} ', text, re.MULTILINE)
    assert re.search(r"^flowsd_gc_frozen_objects \S+$", text, re.MULTILINE)
    # The daemon has stopped: the collector is as it was.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
