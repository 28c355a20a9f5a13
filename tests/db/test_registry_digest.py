"""A reload of an unchanged meter list reads a digest of the active rows, not the rows
(flowsd.meters.registry.RegistrySource): every change of what the dial plan is made of
changes the digest, and a change of anything else does not."""

from __future__ import annotations

import uuid

import asyncpg

from flowsd.meters.dialplan import DialPlan
from flowsd.meters.registry import RegistrySource


async def test_a_reload_reads_the_rows_only_when_the_dial_columns_changed(
    migrated_url: str,
) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        ids = [uuid.uuid4() for _ in range(3)]
        await conn.executemany(
            "INSERT INTO flows.meter_registry (id, serial, ip_address, hardware, mode) "
            "VALUES ($1, $2, $3::inet, 'C1.w', 'active')",
            [(m, f"EMLD{n}", f"127.0.9.{n + 1}") for n, m in enumerate(ids)],
        )
        plans: list[DialPlan] = []

        async def consumer(plan: DialPlan, _: asyncpg.Connection) -> None:
            plans.append(plan)

        source = RegistrySource(
            lambda: asyncpg.connect(migrated_url), consumer, reload_seconds=3600.0
        )
        try:

            async def reload() -> int:
                assert await source.reload()
                return source.statistics().lists_read

            assert await reload() == 1 and len(plans) == 1
            assert await reload() == 1  # unchanged: the digest alone
            # Not a dial column: the list is not read again.
            await conn.execute(
                "UPDATE flows.meter_registry SET firmware_version = '9_99_9' WHERE id = $1", ids[0]
            )
            assert await reload() == 1
            changes = [
                ("serial", "'EMLD9'", True),
                ("ip_address", "'127.0.9.9'", True),
                ("hardware", "''", True),
                ("hardware", "NULL", False),  # '' and NULL both say "unknown": one plan
                ("mode", "'passive'", True),
            ]
            read = 1
            for column, value, changed in changes:
                await conn.execute(
                    f"UPDATE flows.meter_registry SET {column} = {value} WHERE id = $1", ids[1]
                )
                read += changed
                assert await reload() == read, column
            assert [len(p.dialled) for p in plans] == [3, 3, 3, 3, 2]
            meter = [{m.meter_id: m for m in p.dialled}.get(ids[1]) for p in plans]
            assert [m and (m.serial, m.ip_address, m.hardware) for m in meter] == [
                ("EMLD1", "127.0.9.2", "C1.w"),
                ("EMLD9", "127.0.9.2", "C1.w"),
                ("EMLD9", "127.0.9.9", "C1.w"),
                ("EMLD9", "127.0.9.9", None),
                None,
            ]
            assert source.statistics().reloads == 3 + len(changes)
        finally:
            await source._listening.close()
    finally:
        await conn.close()
