"""Handing committed batches to in-process subscribers (projectors) without a read-back.

Each subscriber has its own bounded buffer. The appender never waits for a subscriber: when a
buffer is full the batch is not delivered to it and :attr:`Subscription.missed` is set. A
subscriber notices such a hole, or one made by another process appending, by comparing each
batch's ``after_position`` with the last position it covered, and then reads the log
(:mod:`flowsd.events.reader`) up to the batch's ``through_position``.
Other processes are told through ``NOTIFY flowsd_events`` (sent by the append transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from flowsd.events.store import AppendResult

Listener = Callable[[AppendResult], None]
log = structlog.get_logger("flowsd.events")


class Subscription:
    """A subscriber's buffer of committed batches, in commit order."""

    def __init__(self, hub: SubscriberHub, max_batches: int) -> None:
        self._hub = hub
        self._batches: asyncio.Queue[AppendResult] = asyncio.Queue(max_batches)
        self.missed = False  # a batch was dropped because this buffer was full

    async def get(self) -> AppendResult:
        """The next committed batch (waits for one)."""
        return await self._batches.get()

    def get_nowait(self) -> AppendResult | None:
        try:
            return self._batches.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def _offer(self, batch: AppendResult) -> None:
        try:
            self._batches.put_nowait(batch)
        except asyncio.QueueFull:
            self.missed = True
            self._hub.dropped_batches += 1


class SubscriberHub:
    """Fan-out of committed batches to subscriptions and synchronous listeners."""

    def __init__(self, max_batches: int = 256) -> None:
        self._max_batches = max_batches
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Listener] = []
        self.dropped_batches = 0  # batches a full subscription buffer did not take

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._max_batches)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` (quickly, without blocking) with every committed batch."""
        self._listeners.append(listener)

    def publish(self, batch: AppendResult) -> None:
        for subscription in self._subscriptions:
            subscription._offer(batch)
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:  # a broken listener must not stop appends
                log.exception("event listener failed", listener=repr(listener))
