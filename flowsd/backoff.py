"""The one backoff of flowsd: a delay that doubles from ``initial`` up to ``maximum``, jittered.

Everything flowsd retries waits with it: a meter request (:mod:`flowsd.meters.exchange`), a
breaker probe (:mod:`flowsd.meters.breaker`), a database reconnect (appender, projectors,
LISTEN, meter list, session state, start-up) and the restart of a failed component
(:mod:`flowsd.supervision`).

The jitter keeps between half and all of the delay, so the retries of many meters (or of
several daemons after a database restart) spread out, yet none comes back almost at once as
"full jitter" can. A delay never falls below :data:`FLOOR_SECONDS`, so an ``initial`` of 0
in a configuration cannot become a busy loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FLOOR_SECONDS = 0.01
_SHARED_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry number ``attempt`` (0-based) is in [½·d, d] for
    d = min(maximum, initial · 2^attempt)."""

    initial: float
    maximum: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        initial = max(self.initial, FLOOR_SECONDS)
        ceiling = max(min(self.maximum, initial * 2.0 ** min(max(attempt, 0), 62)), FLOOR_SECONDS)
        return ceiling * (0.5 + 0.5 * (rng or _SHARED_RNG).random())


@dataclass(slots=True)
class Retry:
    """The attempts of one retried operation: :meth:`next_delay` after each failure,
    :meth:`reset` after a success."""

    backoff: Backoff
    rng: random.Random | None = None
    attempt: int = field(default=0)

    def next_delay(self) -> float:
        delay = self.backoff.delay(self.attempt, self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
