"""Per-meter circuit breaker and the jittered backoffs the engine uses.

A meter is online until ``threshold`` consecutive exchanges fail; then it is offline and,
instead of its poll plan, gets one cheap probe at a time on a backoff that doubles from
``probe_initial`` to ``probe_max`` with jitter. The first good answer puts it back online.
The breaker never gives up on a meter: the probe delay is capped, not the number of probes.
"""

from __future__ import annotations

import random
from typing import Literal

Transition = Literal["went_offline", "came_online"]


def jittered_backoff(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0-based): doubling, capped, in [½·d, d].

    Half of the delay is kept so that retries of many meters spread out but none comes
    back almost at once ("full jitter" can give near-zero waits).
    """
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 62))
    return ceiling * (0.5 + 0.5 * rng.random())


class Breaker:
    """Consecutive-failure counter with an online/offline state and probe timing."""

    __slots__ = (
        "consecutive_failures",
        "next_probe_at",
        "offline_since",
        "online",
        "probe_initial",
        "probe_max",
        "probes_failed",
        "rng",
        "threshold",
    )

    def __init__(
        self,
        *,
        threshold: int,
        probe_initial: float,
        probe_max: float,
        rng: random.Random,
        offline_since: float | None = None,
        now: float = 0.0,
    ) -> None:
        self.threshold = threshold
        self.probe_initial = probe_initial
        self.probe_max = probe_max
        self.rng = rng
        self.consecutive_failures = 0
        self.probes_failed = 0
        self.online = offline_since is None
        self.offline_since = offline_since
        # A meter that was offline before a restart is probed soon, not after a full backoff.
        self.next_probe_at: float | None = (
            None if self.online else now + self._delay(0) * rng.random()
        )

    def _delay(self, attempt: int) -> float:
        return jittered_backoff(attempt, self.probe_initial, self.probe_max, self.rng)

    def record_success(self) -> Transition | None:
        self.consecutive_failures = 0
        self.probes_failed = 0
        self.next_probe_at = None
        if not self.online:
            self.online = True
            self.offline_since = None
            return "came_online"
        return None

    def record_failure(self, now: float) -> Transition | None:
        self.consecutive_failures += 1
        if self.online:
            if self.consecutive_failures >= self.threshold:
                self.online = False
                self.offline_since = now
                self.next_probe_at = now + self._delay(0)
                return "went_offline"
            return None
        self.probes_failed += 1
        self.next_probe_at = now + self._delay(self.probes_failed)
        return None

    def probe_due(self, now: float) -> bool:
        return not self.online and self.next_probe_at is not None and now >= self.next_probe_at
