"""A bounded memo for the simulator's seed-driven values: the oldest entry goes first."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``size`` entries; storing a new key when full forgets the oldest one."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = value

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The entry of ``key``, computed and stored when missing."""
        found = self._entries.get(key)
        if found is None:
            found = compute()
            self.put(key, found)
        return found
