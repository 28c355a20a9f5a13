"""Per-meter circuit breaker: awaiting a first answer, online, offline.

A meter is **online** only once it has answered (a reply or a well-formed refusal); until
then it is **awaiting_first_answer** (a meter the log has never seen answer) and is polled on
its plan like an online one. ``threshold`` consecutive failed
exchanges, whatever the error (refused, unreachable network, timeout, garbage), make any
meter that is not offline go **offline**; it then gets one cheap probe at a time, on the
shared backoff (:mod:`flowsd.backoff`) from ``probe_initial`` to ``probe_max``, instead of
its poll plan, and the first good answer puts it online. The breaker never gives up on a
meter: the probe delay is capped, not the number of probes.
"""

from __future__ import annotations

import random
from dataclasses import InitVar, dataclass, field
from typing import Literal

from flowsd.backoff import Backoff

Transition = Literal["went_offline", "came_online"]
BreakerState = Literal["awaiting_first_answer", "online", "offline"]
BREAKER_STATES: tuple[BreakerState, ...] = ("online", "offline", "awaiting_first_answer")


class HasBreakerState:
    """``online``/``offline`` of anything that carries a breaker ``state``."""

    __slots__ = ()
    state: BreakerState

    @property
    def online(self) -> bool:
        return self.state == "online"

    @property
    def offline(self) -> bool:
        return self.state == "offline"


@dataclass(slots=True, kw_only=True, eq=False)
class Breaker(HasBreakerState):
    """Consecutive-failure counter with a state and probe timing."""

    threshold: int
    probe_initial: float
    probe_max: float
    rng: random.Random
    offline_since: float | None = None
    answered: InitVar[bool] = False
    now: InitVar[float] = 0.0
    consecutive_failures: int = field(default=0, init=False)
    probes_failed: int = field(default=0, init=False)
    state: BreakerState = field(init=False)
    next_probe_at: float | None = field(init=False)

    def __post_init__(self, answered: bool, now: float) -> None:
        if self.offline_since is not None:
            self.state = "offline"
        else:
            self.state = "online" if answered else "awaiting_first_answer"
        # A meter that was offline before a restart is probed soon, not after a full backoff.
        self.next_probe_at = (
            now + self._delay(0) * self.rng.random() if self.state == "offline" else None
        )

    def _delay(self, attempt: int) -> float:
        return Backoff(self.probe_initial, self.probe_max).delay(attempt, self.rng)

    def record_success(self) -> Transition | None:
        self.consecutive_failures = 0
        self.probes_failed = 0
        self.next_probe_at = None
        if self.state != "online":
            self.state = "online"
            self.offline_since = None
            return "came_online"
        return None

    def record_failure(self, now: float) -> Transition | None:
        self.consecutive_failures += 1
        if self.state != "offline":
            if self.consecutive_failures >= self.threshold:
                self.state = "offline"
                self.offline_since = now
                self.next_probe_at = now + self._delay(0)
                return "went_offline"
            return None
        self.probes_failed += 1
        self.next_probe_at = now + self._delay(self.probes_failed)
        return None

    def probe_due(self, now: float) -> bool:
        return self.offline and self.next_probe_at is not None and now >= self.next_probe_at
