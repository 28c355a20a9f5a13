"""The daemon's shared view of whether its database is usable.

Every database-facing loop of the daemon (appender, projectors, LISTEN, meter list, session
state, start-up) reports here after each attempt: :meth:`DatabaseAvailability.failed` with the
error (one of :data:`flowsd.db.errors.DATABASE_ERRORS`), :meth:`~DatabaseAvailability.succeeded`
otherwise. The first failure after a success marks the database down (one warning naming it
and why); the first success after that marks it up again (one info line with the outage's
length) and wakes every loop waiting out its backoff in :meth:`~DatabaseAvailability.wait`,
so the spill journal drains, the projectors catch up and ``/readyz`` turns 200 as soon as one
of them got through, not at the end of each one's own delay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import structlog

from flowsd.db.errors import describe

log = structlog.get_logger("flowsd.db")


@dataclass(frozen=True)
class AvailabilityStatistics:
    up: bool
    reason: str | None  # why it is down (None while up)
    down_since: float | None  # monotonic
    outages: int
    last_outage_seconds: float | None


class DatabaseAvailability:
    """Up/down of one database as its users last found it; starts down until a success."""

    def __init__(self, where: str) -> None:
        self.where = where  # the redacted URL, for messages
        self._up = False
        self._reason: str | None = "not connected yet"
        self._down_since: float | None = time.monotonic()
        self._outages = 0
        self._last_outage: float | None = None
        self._back = anyio.Event()
        self._ever_up = False
        self.recoveries = 0  # down -> up transitions, for loops that poll instead of wait()

    @property
    def up(self) -> bool:
        return self._up

    def describe(self) -> str:
        """One line for ``/readyz`` and ``STATUS=``: the database and, when down, why."""
        if self._up:
            return f"{self.where}: up"
        return f"{self.where}: unavailable: {self._reason}"

    def failed(self, component: str, exc: BaseException) -> None:
        """``component`` could not use the database because of ``exc``."""
        reason = describe(exc)
        if self._up:
            self._up = False
            self._down_since = time.monotonic()
            self._outages += 1
            log.warning(
                "database unavailable", database=self.where, component=component, error=reason
            )
        self._reason = reason

    def succeeded(self, component: str) -> None:
        """``component`` just used the database successfully."""
        if self._up:
            return
        self._up = True
        started = self._down_since
        self._down_since = None
        self._reason = None
        if self._ever_up and started is not None:
            self._last_outage = time.monotonic() - started
            log.info(
                "database available again",
                database=self.where,
                component=component,
                outage_seconds=round(self._last_outage, 3),
            )
        self._ever_up = True
        self.recoveries += 1
        back, self._back = self._back, anyio.Event()
        back.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the database is reported back meanwhile (True)."""
        if self._up:
            await anyio.sleep(seconds)
            return False
        back = self._back
        with anyio.move_on_after(seconds):
            await back.wait()
            return True
        return False

    def statistics(self) -> AvailabilityStatistics:
        return AvailabilityStatistics(
            self._up, self._reason, self._down_since, self._outages, self._last_outage
        )
