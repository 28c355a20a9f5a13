"""The lease renewal of :class:`flowsd.meters.ownership.Ownership` against a real database.

A renewal reads back only the count and epoch sum of the leases it renewed; these tests
change the lease rows behind the daemon's back, as another daemon would, and check that
the renewal still notices: a lease taken over (one fewer renewed) and a lease taken and
given the same daemon's name at a new epoch (as many, another sum).
"""

from __future__ import annotations

import uuid

import anyio
import asyncpg

from flowsd.meters.ownership import Ownership
from flowsd.meters.supervisor import FleetSupervisor
from tests.events.helpers import create_meters
from tests.meters.conftest import Collector, plan_of, settings
from tests.support import wait_until

_TAKE_OVER = """
UPDATE flowsd.meter_lease SET daemon = $2, epoch = nextval('flowsd.meter_lease_epoch_seq')
WHERE meter_id = $1
"""


async def _epoch(url: str, meter_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(url)
    try:
        epoch: int = await conn.fetchval(
            "SELECT epoch FROM flowsd.meter_lease WHERE meter_id = $1", meter_id
        )
        return epoch
    finally:
        await conn.close()


async def test_renewal_notices_a_lease_taken_over_and_an_epoch_moved_on(
    migrated_url: str,
) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        meters = await create_meters(conn, 40)
        changes: list[int] = []
        ownership: Ownership

        async def changed(_: asyncpg.Connection | None) -> None:
            changes.append(len(ownership.held))

        supervisor = FleetSupervisor(settings(), plan_of(["csq_net_op"], period=60), Collector())
        ownership = Ownership(
            lambda: asyncpg.connect(migrated_url),
            supervisor,
            changed,
            name="a",
            lease_seconds=30.0,
            renew_seconds=0.1,
        )
        ownership.set_candidates(meters)
        async with anyio.create_task_group() as tg:
            await tg.start(ownership.run)
            await wait_until(lambda: len(ownership.held) == len(meters))
            renewals = ownership.statistics().renewals
            await wait_until(lambda: ownership.statistics().renewals > renewals + 2)
            assert ownership.statistics().lost == 0

            # Another daemon takes one lease (it expires in 30 s, so it is not taken back).
            taken = meters[3]
            await conn.execute(_TAKE_OVER, taken, "b")
            await wait_until(lambda: taken not in ownership.held)
            assert ownership.statistics().lost == 1
            assert len(ownership.held) == len(meters) - 1

            # The same count, another epoch: the renewal reads the rows and takes the new one.
            moved = meters[7]
            before = ownership.held[moved]
            await conn.execute(_TAKE_OVER, moved, "a")
            await wait_until(lambda: ownership.held.get(moved) != before)
            assert ownership.held[moved] == await _epoch(migrated_url, moved)
            assert ownership.epochs[moved] == ownership.held[moved]
            assert ownership.statistics().lost == 2
            assert taken not in ownership.held

            await ownership.release_all()
            tg.cancel_scope.cancel()
        assert changes and changes[-1] == len(meters) - 1
        assert (
            await conn.fetchval("SELECT count(*) FROM flowsd.meter_lease WHERE daemon = 'a'") == 0
        )
    finally:
        await conn.close()
