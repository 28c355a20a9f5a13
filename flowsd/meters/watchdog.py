"""A progress watchdog for one poll: cancel it when nothing has finished for too long.

Every finished exchange pushes the deadline forward. Waiting that is not the meter's doing
(a connection slot, a rate token, the sink applying back-pressure) is done inside
:meth:`ProgressWatchdog.paused` (or between :meth:`~ProgressWatchdog.pause` and
:meth:`~ProgressWatchdog.resume`, on the per-request path), so a busy fleet or a slow
database never looks like a stuck meter.

Progress is only noted (a float); one event-loop timer, re-armed when it fires early, decides.
Moving an anyio cancel scope's deadline at every exchange instead cancelled and scheduled a
timer each time, and the loop's timer heap filled with cancelled handles.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import anyio


class ProgressWatchdog:
    """Used as ``with watchdog:`` around the poll; :attr:`fired` afterwards."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = math.inf
        self._paused = 0
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> ProgressWatchdog:
        self._loop = asyncio.get_running_loop()
        self.scope.__enter__()
        self.progress()
        self._timer = self._loop.call_at(self._deadline, self._check)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return bool(self.scope.__exit__(exc_type, exc, traceback))

    def progress(self) -> None:
        if self._loop is not None:
            self._deadline = self._loop.time() + self.seconds

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def pause(self) -> None:
        """Waiting that is not the meter's doing starts (end it with :meth:`resume`)."""
        self._paused += 1

    def resume(self) -> None:
        """That waiting ended: the deadline starts again from now."""
        self._paused -= 1
        self.progress()

    @property
    def fired(self) -> bool:
        return self.scope.cancelled_caught

    def _check(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if self._paused:
            self._deadline = now + self.seconds
        elif now >= self._deadline:
            self._timer = None
            self.scope.cancel()
            return
        self._timer = self._loop.call_at(self._deadline, self._check)
