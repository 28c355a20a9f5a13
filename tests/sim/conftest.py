"""Fixtures for the simulator tests: a frozen simulated clock and fleets on private addresses.

Each test module passes its own ``127.77.<n>.1`` base address, and fleets listen on port 0
(every meter gets its own ephemeral port), so tests never collide with each other or with a
``flowsd simulate`` running on the machine.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flowsd.sim.clock import SimClock

# A Tuesday mid-quarter, long after every simulated meter was commissioned.
FROZEN_AT = datetime(2026, 3, 10, 12, 0, 7, tzinfo=UTC)
ALL_HARDWARE = ("C1.w", "EMA1.w", "B1.w", "P1.ax", "P1.cx")


@pytest.fixture
def frozen_clock() -> SimClock:
    """A simulated clock that only moves when a test advances it."""
    return SimClock(FROZEN_AT, speed=0.0)
