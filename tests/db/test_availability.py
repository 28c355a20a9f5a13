"""The shared up/down of the daemon's database: the first failure marks it down, the first
success up again, and a success wakes every loop waiting out its backoff."""

from __future__ import annotations

import time

import anyio

from flowsd.db.availability import DatabaseAvailability


async def test_a_success_wakes_the_loops_waiting_out_their_backoff() -> None:
    availability = DatabaseAvailability("postgresql://flowsd@db/flows")
    assert not availability.up and "not connected yet" in availability.describe()
    availability.succeeded("start-up")
    availability.failed("appender", ConnectionRefusedError(111, "refused"))
    assert not availability.up
    assert "db/flows: unavailable: ConnectionRefusedError" in availability.describe()
    woken: list[bool] = []
    started = time.monotonic()
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            woken.append(await availability.wait(30.0))

        for _ in range(3):
            tg.start_soon(waiter)
        await anyio.sleep(0.05)
        availability.succeeded("session state")
    assert woken == [True, True, True] and time.monotonic() - started < 10
    stats = availability.statistics()
    assert stats.up and stats.outages == 1 and stats.last_outage_seconds is not None
    assert availability.recoveries == 2


async def test_waiting_while_up_is_a_plain_sleep() -> None:
    availability = DatabaseAvailability("db")
    availability.succeeded("x")
    assert await availability.wait(0.01) is False
