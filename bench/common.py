"""What a benchmark module returns, and small timing helpers."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Result:
    """One measured figure."""

    area: str
    name: str
    value: float
    unit: str
    detail: dict[str, object] = field(default_factory=dict)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds ``fn`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
