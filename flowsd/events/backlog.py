"""The appender's backlog: accepted events that are neither committed nor spilled.

Producers put events into a bounded queue (:meth:`Backlog.put` waits while it is full: the
back-pressure on the meter sessions). The appender task takes them from the queue into memory,
where they wait to be committed or spilled. Oldest first: memory, then the queue. Nothing here
talks to the database or the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from itertools import islice

from flowsd.events.types import Event


class Backlog:
    """The queue producers fill and the memory the appender task takes batches into."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self.memory: deque[Event] = deque()
        self.accepted = 0  # events taken from producers

    async def put(self, event: Event) -> None:
        """Accept ``event``; waits while the queue is full."""
        await self.queue.put(event)
        self.accepted += 1

    def put_nowait(self, event: Event) -> None:
        """Accept ``event`` or raise :class:`asyncio.QueueFull`."""
        self.queue.put_nowait(event)
        self.accepted += 1

    def accept_into_memory(self, events: Sequence[Event]) -> None:
        """Accept ``events`` behind everything in memory, bypassing the queue."""
        self.memory.extend(events)
        self.accepted += len(events)

    def is_empty(self) -> bool:
        return not self.memory and self.queue.empty()

    def oldest(self, limit: int) -> list[Event]:
        """Up to ``limit`` events from the front of memory (left there)."""
        return list(islice(self.memory, limit))

    def forget_oldest(self, count: int) -> None:
        """Remove ``count`` events from the front of memory (committed)."""
        for _ in range(count):
            self.memory.popleft()

    def move_queue_to_memory(self) -> None:
        while not self.queue.empty():
            self.memory.append(self.queue.get_nowait())

    async def take_batch(self, limit: int, interval: float, stopping: asyncio.Event) -> bool:
        """Move up to ``limit`` events from the queue to memory: if the queue is empty, wait for
        a first one (or ``stopping``), then take what arrives within ``interval`` seconds of it.
        False if ``stopping`` came first and the queue is still empty."""
        loop = asyncio.get_running_loop()
        if self.queue.empty():
            first = await self._first_event_or_stop(stopping)
            if first is None:
                return not self.queue.empty()
            self.memory.append(first)
        deadline = loop.time() + interval
        while len(self.memory) < limit:
            while len(self.memory) < limit and not self.queue.empty():
                self.memory.append(self.queue.get_nowait())
            remaining = deadline - loop.time()
            if len(self.memory) >= limit or remaining <= 0 or stopping.is_set():
                break
            try:
                self.memory.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return True

    async def _first_event_or_stop(self, stopping: asyncio.Event) -> Event | None:
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def absorb(self, seconds: float, bound: int) -> None:
        """Wait up to ``seconds`` for an event from the queue, then move what the queue holds
        into memory while memory holds at most ``bound``."""
        with contextlib.suppress(TimeoutError):
            self.memory.append(await asyncio.wait_for(self.queue.get(), seconds))
        while len(self.memory) <= bound and not self.queue.empty():
            self.memory.append(self.queue.get_nowait())
