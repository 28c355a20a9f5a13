"""The simulated wall clock: real time shifted by an offset and scaled by a speed factor.

Tests need meters whose state moves faster than real time (or not at all), so every
simulated quantity is computed at ``clock.now()`` rather than at the host's time.
Times inside the simulator are EMOP seconds (since 2000-01-01T00:00:00Z).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EMOP_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EMOP_EPOCH_UNIX = 946_684_800


def to_emop(moment: datetime | float) -> float:
    """EMOP seconds for an aware datetime (or pass EMOP seconds through)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: give the simulator aware (UTC) datetimes")
        return moment.timestamp() - _EMOP_EPOCH_UNIX
    return float(moment)


def from_emop(seconds: float) -> datetime:
    """The aware UTC datetime for EMOP seconds."""
    return EMOP_EPOCH + timedelta(seconds=seconds)


class SimClock:
    """``now = start + (real elapsed) × speed + advanced``; thread-unsafe, loop-local use.

    ``speed=0`` freezes time (only :meth:`advance` moves it), which makes tests exact.
    """

    def __init__(self, start: datetime | None = None, *, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("clock speed must be >= 0")
        self._origin_real = time.monotonic()
        self._origin_sim = to_emop(start) if start is not None else time.time() - _EMOP_EPOCH_UNIX
        self._speed = speed

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        """Simulated EMOP seconds now."""
        return self._origin_sim + (time.monotonic() - self._origin_real) * self._speed

    def now_datetime(self) -> datetime:
        return from_emop(self.now())

    def unix(self) -> float:
        """Simulated now as Unix seconds: a wall clock for code that should follow this one."""
        return self.now() + _EMOP_EPOCH_UNIX

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> None:
        """Jump simulated time forward (never backward)."""
        step = days * 86400 + hours * 3600 + minutes * 60 + seconds
        if step < 0:
            raise ValueError("the simulated clock only moves forward")
        self._origin_sim += step

    def set_speed(self, speed: float) -> None:
        """Change the speed factor from now on, without a jump."""
        if speed < 0:
            raise ValueError("clock speed must be >= 0")
        self._origin_sim = self.now()
        self._origin_real = time.monotonic()
        self._speed = speed
