"""Seeding from the database: the detector's last known state and the engine's resume points."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import asyncpg

from flowsd.events import types
from flowsd.events.store import append_batch, meter_index_covers
from flowsd.ingest import seed
from flowsd.ingest.seed import load_meter_states, load_resume
from flowsd.ingest.sessions import load_rows
from flowsd.meters.registry import load_active_meters
from flowsd.meters.target import MeterResume
from tests.ingest.helpers import METER, at, event

ONE = Decimal("1")
OTHER = uuid.UUID("00000000-0000-0000-0000-0000000000a2")


async def _database(url: str) -> asyncpg.Connection:
    """A connection to the migrated database at ``url``, with two meters in its registry."""
    conn = await asyncpg.connect(url)
    await conn.executemany(
        """INSERT INTO flows.meter_registry (id, serial, ip_address, hardware, firmware_version,
                                             prepay_enabled)
           VALUES ($1, $2, $3::inet, 'C1.w', '3_03_2', true)""",
        [(METER, "EML1", "127.0.0.1"), (OTHER, "EML2", "127.0.0.2")],
    )
    await conn.execute("UPDATE flows.meter_shadows SET balance = 4.5 WHERE id = $1", OTHER)
    return conn


async def test_states_come_from_the_newest_change_events_over_the_registry(
    migrated_url: str,
) -> None:
    conn = await _database(migrated_url)
    try:
        await append_batch(
            conn,
            [
                event(types.BalanceChanged(previous_gbp=None, balance_gbp=Decimal("1")), 0),
                event(types.BalanceChanged(previous_gbp=ONE, balance_gbp=Decimal("2")), 60),
                event(types.FirmwareChanged(previous="3_03_2", firmware_version="3_04_0"), 10),
                event(types.MeterWentOffline(consecutive_failures=3, last_error="x"), 100),
                event(types.ClockDriftThresholdCrossed(
                    drift_seconds=30, threshold_seconds=20, above=True), 5),
            ],
        )  # fmt: skip
        seeds = await load_meter_states(conn, [METER, OTHER])
    finally:
        await conn.close()
    assert seeds.unreadable == 0
    states = seeds.states
    mine = states[METER]
    assert mine.balance == Decimal("2") and mine.firmware == "3_04_0"
    assert mine.online is False and mine.offline_since == at(100)
    assert mine.drift_above is True and mine.hardware == "C1.w" and mine.prepay_enabled is True
    other = states[OTHER]
    assert other.balance == Decimal("4.5") and other.online is None and other.firmware == "3_03_2"


async def test_seeds_and_stored_session_rows_keep_the_callers_id_objects(
    migrated_url: str,
) -> None:
    """One UUID object per meter: what is loaded for a meter is keyed by the id object the
    caller (the fleet) holds, not by the database's copy of it."""
    mine, other = uuid.UUID(str(METER)), uuid.UUID(str(OTHER))  # not the module's objects
    conn = await _database(migrated_url)
    try:
        await append_batch(
            conn, [event(types.MeterWentOffline(consecutive_failures=3, last_error="x"), 100)]
        )
        await conn.execute(
            "INSERT INTO flowsd.meter_session_state (meter_id, serial, online, polls) "
            "VALUES ($1, 'EML1', true, 7), ($2, 'EML2', false, 2)",
            METER,
            OTHER,
        )
        seeds = await load_meter_states(conn, [mine, other])
        rows = await load_rows(conn, [mine, other])
        listed = {row.meter_id: row for row in await load_active_meters(conn)}
    finally:
        await conn.close()
    # One string object per serial, hardware and firmware name, however many rows read it.
    assert seeds.states[mine].serial is rows[mine].serial is listed[METER].serial
    assert seeds.states[mine].hardware is seeds.states[other].hardware is listed[OTHER].hardware
    assert seeds.states[mine].firmware is seeds.states[other].firmware
    assert {id(m) for m in seeds.states} == {id(mine), id(other)}
    assert seeds.states[mine].online is False
    assert {id(m) for m in rows} == {id(mine), id(other)}
    assert rows[mine].meter_id is mine and rows[other].meter_id is other
    assert rows[mine].polls == 7 and rows[other].serial == "EML2"


async def test_resume_points_from_profile_records_meter_log_and_offline_state(
    migrated_url: str,
) -> None:
    conn = await _database(migrated_url)
    try:
        log1 = [event(types.ProfileLog1Record(status=0x80, import_a_wh=i), -1800 * i)
                for i in range(3)]  # fmt: skip
        three_phase = [
            types.Event(meter_id=OTHER, observed_at=at(-1800 * i), read_at=at(0),
                        body=types.ThreePhaseIntervalRecord(
                            profile=0, interval_minutes=30, status=0x80, counts_per_kwh=1000,
                            values={"d79600": i}))
            for i in range(1, 3)
        ]  # fmt: skip
        entries = [
            types.Event(meter_id=METER, observed_at=at(-50), read_at=at(0),
                        body=types.MeterLogEntry(emlite_type_id=33, event_set=1)),
            types.Event(meter_id=METER, observed_at=at(-50), read_at=at(0),
                        body=types.MeterLogEntry(emlite_type_id=34, event_set=2)),
            types.Event(meter_id=METER, observed_at=at(-500), read_at=at(0),
                        body=types.MeterLogEntry(emlite_type_id=38, event_set=0)),
        ]  # fmt: skip
        online_again = [
            event(types.MeterWentOffline(consecutive_failures=3, last_error="x"), 10),
            event(types.MeterCameOnline(offline_since=at(10)), 20),
        ]
        await append_batch(conn, [*log1, *three_phase, *entries, *online_again])
        resume = await load_resume(conn, [METER, OTHER])
    finally:
        await conn.close()
    mine = resume[METER]
    assert mine.profile_log_1_last == at(0) and mine.profile_log_2_last is None
    assert mine.event_log is not None and mine.event_log.newest == at(-50)
    assert mine.event_log.seen_at_newest == ((33, 1), (34, 2))
    assert mine.offline_since is None and mine.three_phase_interval_last is None
    assert resume[OTHER] == MeterResume(three_phase_interval_last=at(-1800))


async def test_seed_lookups_use_the_per_meter_index(migrated_url: str) -> None:
    """Every type the seed looks up is in the partial index, and the plans use it."""
    for type_id in (*seed._STATE_TYPES, *seed._RESUME_TYPES, 1, types.NATIVE_TYPE_ID_MAX):
        assert meter_index_covers(type_id), type_id
    conn = await _database(migrated_url)
    try:
        lookup_indexes = {
            row["relname"]
            for row in await conn.fetch(
                """SELECT c.relname
                   FROM pg_partition_tree('flows.meter_event_log_meter_lookup_idx') t
                   JOIN pg_class c ON c.oid = t.relid"""
            )
        }
        await conn.execute("SET enable_seqscan = off")
        for statement, types_argument in (
            (seed._LATEST_OF_TYPES, seed._STATE_TYPES),
            (seed._NEWEST_NATIVE_ENTRIES, types.NATIVE_TYPE_ID_MAX),
        ):
            # The generic plan: what a prepared statement may settle on after a few runs.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            plan = "\n".join(
                row[0]
                for row in await conn.fetch(f"EXPLAIN {statement}", [METER, OTHER], types_argument)
            )
            # The log is partitioned (migration 115): the plan scans each partition's copy of
            # the per-meter index, never the table.
            used = set(re.findall(r" using (\S+) on ", plan))
            assert used and used <= lookup_indexes, plan
            assert "Seq Scan" not in plan, plan
    finally:
        await conn.close()
