"""A separate flowsd-like process for the crash test (run with ``python -m``).

``spill URL DIR METER COUNT``: the database is unreachable; accept COUNT events, stop (which
spills what memory still holds), print ``SPILLED`` and wait to be killed.
``drain URL DIR``: drain the journal, slowly (50 ms per committed batch) so the test can kill
it half-way; prints ``DONE`` when everything is committed.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from flowsd.config import AppenderConfig
from flowsd.events.appender import Appender
from flowsd.events.store import AppendResult
from tests.events.helpers import balance_event


async def _unreachable() -> asyncpg.Connection:
    raise OSError("database unreachable (crash test)")


async def spill(url: str, directory: Path, meter: uuid.UUID, count: int) -> None:
    del url
    config = AppenderConfig(memory_max_events=50, batch_max=20, queue_size=100)
    appender = Appender(
        _unreachable,
        config=config,
        spill_directory=directory,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.02,
    )
    task = asyncio.create_task(appender.run())
    for n in range(count):
        await appender.append(balance_event(meter, n))
    # Overflowing memory spills most of them; stopping spills the rest (database still down).
    appender.stop()
    await task
    print("SPILLED", appender.spilled_events, flush=True)
    await asyncio.sleep(3600)  # alive but idle until the test kills it


async def drain(url: str, directory: Path) -> None:
    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    def slowly(batch: AppendResult) -> None:
        del batch
        time.sleep(0.05)  # blocks the loop on purpose: a slow drain the test can interrupt

    appender = Appender(connect, config=AppenderConfig(batch_max=20), spill_directory=directory)
    appender.add_listener(slowly)
    task = asyncio.create_task(appender.run())
    await appender.flush()
    print("DONE", flush=True)
    appender.stop()
    await task


def main() -> None:
    mode, url, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if mode == "spill":
        asyncio.run(spill(url, directory, uuid.UUID(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(drain(url, directory))


if __name__ == "__main__":
    main()
