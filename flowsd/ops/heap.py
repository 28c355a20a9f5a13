"""CPython's cycle collector in a daemon whose heap is mostly its fleet: tuned, frozen, timed.

At fleet scale the daemon keeps hundreds of thousands of container objects (sessions,
schedules, cursors, links) for as long as it runs, and makes tens of thousands of
short-lived ones a second (coroutines, futures, events, rows). Reference counting frees
almost all of the short-lived ones; the cycle collector only walks what is still alive in
the generations it collects. With CPython's default thresholds (700, 10, 10) it collected the
youngest generation tens of times a second, walking the objects of every poll in flight each
time, and every full collection walked the whole fleet: the fleet benchmark (19,500 meters,
first start) measured the collector at 8.9 % of the daemon's CPU, and 1.4 % with the settings
below.

* :meth:`Heap.tuned`, around a daemon's run, raises the youngest generation's threshold to
  :data:`YOUNG_THRESHOLD`: a collection costs about what is alive in the generation, so a
  window 14 times wider walks the polls in flight 14 times less often, for a few hundred
  kilobytes of garbage cycles kept a little longer. Runs may nest (tests run daemons in one
  process): the first entry tunes, the last exit puts the thresholds back and unfreezes.
* :meth:`Heap.freeze` collects everything, frozen objects included, then moves every
  object alive into the permanent generation (``gc.freeze``), which no collection walks: the
  fleet's own objects are not walked again by each full collection. It is a full
  collection, run on the event loop (a fraction of a second at fleet scale), so
  :class:`Freezer` runs it only once the fleet has been quiet for :data:`SETTLE_SECONDS`
  after meters joined or left (a rebalance of leases moves meters over several rounds; a
  leaver's task ends a moment after it is cancelled), and every :data:`REFREEZE_SECONDS`.
  A frozen object is still freed by reference counting; a garbage cycle among frozen
  objects (a poll that was in flight at the freeze, say) waits for the next freeze, at
  most :data:`REFREEZE_SECONDS`.
* :class:`CollectorClock` times every collection (the collecting thread's CPU time) through
  ``gc.callbacks``, so the collector's share of the CPU is a figure on ``/metrics``
  (``flowsd_gc_*``) and in the fleet benchmark, not a guess.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import structlog
from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import counter, gauge

log = structlog.get_logger("flowsd.heap")

# The youngest generation's threshold (CPython's default: 700); the older two keep theirs.
YOUNG_THRESHOLD = 10_000
# Quiet time after meters joined or left the fleet before the heap is frozen again.
SETTLE_SECONDS = 30.0
# The longest between two freezes (and so the longest a frozen garbage cycle is kept).
REFREEZE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    """Collections, their CPU seconds and the objects they freed, per generation (0-2);
    the objects frozen by the last freeze."""

    collections: tuple[int, int, int]
    seconds: tuple[float, float, float]
    collected: tuple[int, int, int]
    frozen: int


class CollectorClock:
    """Times each collection while installed. Collections never overlap (CPython runs one
    at a time) and start and end in one thread, whose CPU time is what is counted."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self._started: float | None = None

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
            return
        if self._started is None:
            return  # installed during this collection
        generation = min(int(info["generation"]), 2)
        self.collections[generation] += 1
        self.seconds[generation] += time.thread_time() - self._started
        self.collected[generation] += int(info["collected"])
        self._started = None


class Heap:
    """The process's collector settings, its frozen heap and its clock."""

    def __init__(self) -> None:
        self.clock = CollectorClock()
        # Objects frozen by the last freeze: gc.get_freeze_count() walks the permanent
        # generation (a million objects at fleet scale, milliseconds), too slow per scrape.
        self.frozen = 0
        self._depth = 0
        self._thresholds = gc.get_threshold()

    @contextmanager
    def tuned(self) -> Iterator[None]:
        """The daemon's settings and the clock, for the outermost of nested uses."""
        if self._depth == 0:
            self._thresholds = young, middle, oldest = gc.get_threshold()
            gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, oldest)
            self.clock.install()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                gc.unfreeze()
                self.frozen = 0
                gc.set_threshold(*self._thresholds)
                self.clock.uninstall()

    def freeze(self) -> int:
        """Collect everything (frozen objects included), then freeze what is alive; returns
        how many objects are frozen."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        return self.frozen

    def statistics(self) -> CollectorStatistics:
        c, s, f = self.clock.collections, self.clock.seconds, self.clock.collected
        return CollectorStatistics(
            collections=(c[0], c[1], c[2]),
            seconds=(s[0], s[1], s[2]),
            collected=(f[0], f[1], f[2]),
            frozen=self.frozen,
        )


HEAP = Heap()


class Freezer:
    """Freezes :data:`HEAP` once the fleet has been quiet for ``settle`` seconds after a
    change (:meth:`fleet_changed`), and every ``refreeze`` seconds."""

    def __init__(
        self,
        heap: Heap = HEAP,
        *,
        settle: float = SETTLE_SECONDS,
        refreeze: float = REFREEZE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heap = heap
        self.settle = settle
        self.refreeze = refreeze
        self.clock = clock
        self.freezes = 0
        self._changed_at: float | None = None
        self._frozen_at = clock()

    def fleet_changed(self) -> None:
        self._changed_at = self.clock()

    def due(self) -> bool:
        now = self.clock()
        if self._changed_at is not None and now - self._changed_at >= self.settle:
            return True
        return now - self._frozen_at >= self.refreeze

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await anyio.sleep(min(self.settle, self.refreeze) / 4)
            if self.due():
                self.freeze()

    def freeze(self) -> None:
        started = time.thread_time()
        frozen = self.heap.freeze()
        self._changed_at = None
        self._frozen_at = self.clock()
        self.freezes += 1
        took = round(time.thread_time() - started, 3)
        log.info("heap frozen", objects=frozen, cpu_seconds=took)


def collector_families(stats: CollectorStatistics) -> Iterator[Metric]:
    """``flowsd_gc_*`` from a :class:`CollectorStatistics`."""
    per_generation: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
        ("collections_total", "Cycle-collector runs", stats.collections),
        ("seconds_total", "CPU seconds spent in the cycle collector", stats.seconds),
        ("collected_objects_total", "Objects (garbage cycles) it freed", stats.collected),
    )
    for name, documentation, values in per_generation:
        yield counter(
            f"flowsd_gc_{name}",
            f"{documentation}, by the oldest generation collected.",
            dict(zip(("0", "1", "2"), values, strict=True)),
            ["generation"],
        )
    yield gauge(
        "flowsd_gc_frozen_objects",
        "Objects frozen by the last freeze (after the fleet changed, and hourly).",
        stats.frozen,
    )
