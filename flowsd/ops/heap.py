"""CPython's cycle collector in a daemon whose heap is mostly its fleet: tuned, frozen, timed.

At fleet scale the daemon keeps hundreds of thousands of container objects (sessions,
schedules, cursors, links) for as long as it runs, and makes tens of thousands of
short-lived ones a second (coroutines, futures, events, rows). Reference counting frees
almost all of the short-lived ones; the cycle collector only walks what is still alive in
the generations it collects. With CPython's default thresholds (700, 10, 10) it collected the
youngest generation tens of times a second, walking the objects of every poll in flight each
time, and a sampling profile of the fleet benchmark (19,500 meters, native frames) put it at
about 8 % of the daemon's CPU.

* :func:`tune` raises the youngest generation's threshold to :data:`YOUNG_THRESHOLD`: a
  collection costs about what is alive in the generation, so a window 14 times wider walks the
  polls in flight 14 times less often, for a few hundred kilobytes of garbage cycles kept a
  little longer.
* :func:`freeze_fleet` (once the fleet is loaded, and again when it changes) collects, then
  moves every object alive into the permanent generation (``gc.freeze``), which no
  collection walks: the fleet's own objects are not walked again by each full collection.
  A frozen object is still freed by reference counting; only a garbage cycle among frozen
  objects waits for the next :func:`freeze_fleet`, which unfreezes and collects first.
* :class:`CollectorClock` times every collection through ``gc.callbacks``
  (:meth:`CollectorClock.statistics`, exported as ``flowsd_gc_*``), so the collector's share
  of the CPU is a figure on ``/metrics`` and not a guess.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from flowsd.ops.metrics import counter, gauge

# The youngest generation's threshold (CPython's default: 700); the older two keep theirs.
YOUNG_THRESHOLD = 10_000


def tune() -> tuple[int, int, int]:
    """Collect the youngest generation every :data:`YOUNG_THRESHOLD` container allocations;
    returns the thresholds before, for :func:`restore`."""
    before = gc.get_threshold()
    young, middle, oldest = before
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, oldest)
    return before


# Objects frozen by the last freeze_fleet(): gc.get_freeze_count() walks the permanent
# generation (a million objects at fleet scale, milliseconds), too slow for every scrape.
_frozen = 0


def freeze_fleet() -> int:
    """Collect everything (frozen objects included), then freeze what is alive; returns
    how many objects are frozen."""
    global _frozen  # noqa: PLW0603 - one permanent generation per process
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _frozen = gc.get_freeze_count()
    return _frozen


def restore(thresholds: tuple[int, int, int]) -> None:
    """Unfreeze, and set the thresholds :func:`tune` returned (a daemon run in a test
    process leaves the collector as it found it)."""
    global _frozen  # noqa: PLW0603
    gc.unfreeze()
    _frozen = 0
    gc.set_threshold(*thresholds)


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    """Collections, their CPU seconds and the objects they freed, per generation (0-2)."""

    collections: tuple[int, int, int]
    seconds: tuple[float, float, float]
    collected: tuple[int, int, int]
    frozen: int


class CollectorClock:
    """Times each collection (process CPU time) while installed."""

    def __init__(self) -> None:
        self._collections = [0, 0, 0]
        self._seconds = [0.0, 0.0, 0.0]
        self._collected = [0, 0, 0]
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        generation = min(int(info["generation"]), 2)
        self._collections[generation] += 1
        self._seconds[generation] += time.process_time() - self._started
        self._collected[generation] += int(info["collected"])

    def statistics(self) -> CollectorStatistics:
        c, s, f = self._collections, self._seconds, self._collected
        return CollectorStatistics(
            collections=(c[0], c[1], c[2]),
            seconds=(s[0], s[1], s[2]),
            collected=(f[0], f[1], f[2]),
            frozen=_frozen,
        )


CLOCK = CollectorClock()


def collector_families(stats: CollectorStatistics) -> Iterator[Metric]:
    """``flowsd_gc_*`` from a :class:`CollectorStatistics`."""
    generations = ("0", "1", "2")
    yield counter(
        "flowsd_gc_collections_total",
        "Cycle-collector runs, by the oldest generation collected.",
        dict(zip(generations, stats.collections, strict=True)),
        ["generation"],
    )
    yield counter(
        "flowsd_gc_seconds_total",
        "Process CPU seconds spent in the cycle collector, by the oldest generation collected.",
        dict(zip(generations, stats.seconds, strict=True)),
        ["generation"],
    )
    yield counter(
        "flowsd_gc_collected_objects_total",
        "Objects the cycle collector freed (garbage cycles), by the oldest generation collected.",
        dict(zip(generations, stats.collected, strict=True)),
        ["generation"],
    )
    yield gauge(
        "flowsd_gc_frozen_objects",
        "Objects in the permanent generation (frozen once the fleet was loaded or changed).",
        stats.frozen,
    )
