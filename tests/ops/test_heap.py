"""The cycle collector's settings, freezing and timing (flowsd.ops.heap), and their export."""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsd.ops import heap
from tests.ops.scrape import real_scrape


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    heap.restore(thresholds)


def _garbage_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.mark.usefixtures("collector")
def test_a_frozen_cycle_waits_for_the_next_freeze_and_goes_then() -> None:
    cycle = _garbage_cycle()  # garbage already, but only a collection frees a cycle
    gc.freeze()  # as if it had been alive at the last freeze
    gc.collect()
    assert cycle() is not None  # no collection walks the permanent generation
    frozen = heap.freeze_fleet()
    assert cycle() is None
    assert frozen == gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_tune_raises_only_the_youngest_threshold_and_restore_undoes_it() -> None:
    gc.set_threshold(700, 10, 10)
    before = heap.tune()
    assert before == (700, 10, 10)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    gc.freeze()
    heap.restore(before)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


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
    stats = clock.statistics()
    assert stats.collections[2] == 2
    assert stats.collections[0] >= 1  # and any the test's own allocations caused
    assert all(seconds >= 0 for seconds in stats.seconds)
    assert sum(stats.seconds) > 0


async def test_a_running_daemon_froze_its_fleet_and_exports_the_collector(
    migrated_url: str, tmp_path: Path
) -> None:
    text = (await real_scrape(migrated_url, tmp_path)).text
    frozen = re.search(r"^flowsd_gc_frozen_objects (\S+)$", text, re.MULTILINE)
    assert frozen is not None and float(frozen.group(1)) > 0
    collections = re.findall(
        r'^flowsd_gc_collections_total\{generation="(\d)"\} (\S+)$', text, re.MULTILINE
    )
    assert {generation for generation, _ in collections} == {"0", "1", "2"}
    assert float(dict(collections)["2"]) >= 1  # the freeze collected everything once
    assert re.search(r'^flowsd_gc_seconds_total\{generation="2"\} ', text, re.MULTILINE)
