"""A progress watchdog for one poll: cancel it when nothing has finished for too long.

Every finished exchange pushes the deadline forward. Waiting that is not the meter's doing
(a connection slot, a rate token, the sink applying back-pressure) is done inside
:meth:`ProgressWatchdog.paused`, so a busy fleet or a slow database never looks like a
stuck meter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class ProgressWatchdog:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)

    def progress(self) -> None:
        self.scope.deadline = anyio.current_time() + self.seconds

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.scope.deadline = math.inf
        try:
            yield
        finally:
            self.progress()

    @property
    def fired(self) -> bool:
        return self.scope.cancelled_caught
