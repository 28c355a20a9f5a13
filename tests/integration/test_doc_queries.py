"""The documentation's example queries return what the documentation implies, on data the
daemon collected from the simulated fleet, in a UTC and a Europe/London session.

The queries are ``doc_queries.sql`` (a copy of the consumers' contract,
``shared/flows/doc-queries.sql``), placeholders filled with the registered ESCO, site and
meter ``EML2137580826``. Their rows are checked against :mod:`tests.integration.doc_truth`:
balances, signal quality and half-hour energy computed by the simulator at the simulated times
the daemon polled, and the topology plan the fleet was registered with.

Time. Queries that read ``now()`` or ``CURRENT_DATE`` are checked two ways:

* **Live, against the real clock.** The fleet's and the daemon's clocks (one
  :class:`~flowsd.sim.clock.SimClock`) start 30 hours before the real time, frozen; the test
  moves them in 3-hour steps, waiting after each until every meter has been polled, and the
  last step lands on the real time. PostgreSQL's ``now()`` is then the real clock and the data
  lie where a daemon running for 30 hours would have put them. Every query runs verbatim, and
  each expectation is computed from ``now()`` and ``CURRENT_DATE`` read in the query's own
  transaction, so a run that crosses midnight stays exact. One meter loses its signal 6 to 9
  hours before the end (``meters_offline_recently``). What varies with the day the suite runs:
  the set of meters below £5 (possibly none) and whether yesterday was a GMT or BST day.
* **Fixed days, the session time fixed.** On a GMT day, the spring clock change (46 half
  hours), a BST day and the autumn clock change (50 half hours), the clock is frozen at noon
  UTC the next day and the fleet polled (48 hours of profile logs); then every query except the
  offline-meters one runs with ``NOW()`` and ``CURRENT_DATE`` in its text replaced by literals
  of that moment: a timestamptz and a date, the types PostgreSQL gives them, so each comparison
  is the one the query makes on that day, in either session zone. (``meters_offline_recently``
  calls ``now()`` inside the view, which no text substitution reaches: it is checked live.)

Three-phase meters' half hours come from their interval profile (average demand per half
hour), single-phase meters' from profile logs 1 and 2: the energy queries cover both.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec

from flowsd.config import PollConfig
from flowsd.sim.clock import SimClock, to_emop
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.topology import Role, plan_topology
from tests.integration.daemon import (
    FAST_METERS,
    daemon_config,
    poll_round,
    projections_caught_up,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.integration.doc_truth import (
    LONDON,
    Polled,
    documented_queries,
    run_and_check,
)
from tests.support import wait_until

SESSION_ZONES = ("UTC", "Europe/London")
# Seed 1's default hardware mix, meters 0-9: EML2137580826 is a C1.w (power and heat), meter 2
# the communal three-phase supply, meter 7 the solar generation meter of plot WL-06.
SEED = 1
METERS = 10
OFFLINE_METER = 9
HORIZON_HOURS = 48
STEP = timedelta(hours=3)
HISTORY_STEPS = 10
OFFLINE_STEPS = 3  # the last three steps' polls of OFFLINE_METER fail

PLAN = PollConfig(
    cadences={"step": 60.0},  # any step of the clock makes every meter due once
    single_phase={"step": ["profile_logs", "prepay_balance", "csq_net_op"]},
    three_phase={"step": ["profile_logs", "csq_net_op"]},
)
# Generous timeouts: a reading lost to a loaded machine would be a false failure.
METERS_CONFIG = msgspec.structs.replace(
    FAST_METERS,
    connect_timeout_seconds=10.0,
    read_timeout_seconds=10.0,
    request_attempts=3,
    backfill_horizon_hours=HORIZON_HOURS,
    backfill_max_requests_per_poll=500,
)


def _polled(fleet: SimulatedFleet) -> Polled:
    topology = plan_topology(fleet.state.identity(i) for i in range(METERS))
    roles = [m.role for m in topology.meters]
    assert Role.COMMUNAL in roles and Role.GENERATION in roles, roles
    assert topology.meters[0].serial == "EML2137580826" and topology.meters[0].plot == "WL-01"
    return Polled(fleet, topology, HORIZON_HOURS * 3600)


async def _check_polls_recorded(url: str, polled: Polled) -> None:
    """The daemon's signal-quality rows are exactly the polls the test counted as answered
    (a reading lost on the way would make every expectation below wrong)."""
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            'SELECT meter_id, "timestamp" FROM flows.meter_csq WHERE csq IS NOT NULL '
            'ORDER BY "timestamp"'
        )
    finally:
        await conn.close()
    for meter in polled.topology.meters:
        mine = [r["timestamp"] for r in found if r["meter_id"] == polled.meter_ids[meter.serial]]
        wanted = polled.answered[meter.index]
        assert [round(to_emop(t), 3) for t in mine] == [round(t, 3) for t in wanted], meter.serial


async def test_documented_queries_on_a_fleet_polled_until_now(
    migrated_url: str, tmp_path: Path
) -> None:
    clock = SimClock(datetime.now(UTC) - HISTORY_STEPS * STEP, speed=0.0)
    async with registered_fleet(
        migrated_url, METERS, seed=SEED, clock=clock, hardware=None
    ) as fleet:
        polled = _polled(fleet)
        config = with_meters(
            daemon_config(tmp_path, migrated_url, poll=PLAN, meters=METERS_CONFIG), fleet
        )
        async with running_daemon(config, migrated_url, wall_clock=clock.unix) as daemon:
            await wait_until(lambda: len(daemon.supervisor.sessions) == METERS)
            for step in range(HISTORY_STEPS):
                if step == HISTORY_STEPS - OFFLINE_STEPS:
                    fleet.set_faults(f"offline@{OFFLINE_METER}=1:1h")
                last = step == HISTORY_STEPS - 1
                clock.advance(seconds=time.time() - clock.unix() if last else STEP.total_seconds())
                await poll_round(daemon)
                for meter in fleet.meters:
                    if meter.index != OFFLINE_METER or step < HISTORY_STEPS - OFFLINE_STEPS:
                        polled.answered[meter.index].append(clock.now())
            await projections_caught_up(daemon, migrated_url)
        conn = await asyncpg.connect(migrated_url)
        try:
            await polled.load_ids(conn)
        finally:
            await conn.close()
        await _check_polls_recorded(migrated_url, polled)

        counts: dict[tuple[str, str], int] = {}
        for zone in SESSION_ZONES:
            for name, sql in documented_queries().items():
                counts[zone, name] = await run_and_check(migrated_url, polled, name, sql, zone)
    # Every query answers with rows, except the low-balance one, whose rows depend on the day.
    empty = [key for key, n in counts.items() if n == 0 and key[1] != "q3"]
    assert not empty, counts
    assert counts["UTC", "q4"] == 1 and counts["UTC", "q12"] == 1
    assert counts["UTC", "q13"] == 3  # heat, power and solar peaks


# Noon UTC the day after each: a GMT day, the spring clock change (23 hours), a BST day, the
# autumn clock change (25 hours); half hours in each London settlement day.
DAYS = {date(2026, 1, 14): 48, date(2026, 3, 29): 46, date(2026, 7, 15): 48, date(2026, 10, 25): 50}


async def test_documented_queries_on_gmt_bst_and_clock_change_days(
    migrated_url: str, tmp_path: Path
) -> None:
    first = min(DAYS) + timedelta(days=1)
    clock = SimClock(datetime(first.year, first.month, first.day, 11, tzinfo=UTC), speed=0.0)
    queries = {n: q for n, q in documented_queries().items() if n != "q4"}
    low_balances = 0
    async with registered_fleet(
        migrated_url, METERS, seed=SEED, clock=clock, hardware=None
    ) as fleet:
        polled = _polled(fleet)
        config = with_meters(
            daemon_config(tmp_path, migrated_url, poll=PLAN, meters=METERS_CONFIG), fleet
        )
        conn = await asyncpg.connect(migrated_url)
        try:
            async with running_daemon(config, migrated_url, wall_clock=clock.unix) as daemon:
                await wait_until(lambda: len(daemon.supervisor.sessions) == METERS)
                await polled.load_ids(conn)
                for day, half_hours in DAYS.items():
                    after = day + timedelta(days=1)
                    moment = datetime(after.year, after.month, after.day, 12, tzinfo=UTC)
                    clock.advance(seconds=to_emop(moment) - clock.now())
                    await poll_round(daemon)
                    for meter in fleet.meters:
                        polled.answered[meter.index].append(clock.now())
                    await projections_caught_up(daemon, migrated_url)
                    for zone in SESSION_ZONES:
                        for name, sql in queries.items():
                            rows = await run_and_check(
                                migrated_url, polled, name, sql, zone, fixed_now=moment
                            )
                            assert rows or name == "q3", (day, zone, name)
                            low_balances += rows if name == "q3" else 0
                    await _check_settlement_day(conn, polled, day, half_hours, moment)
        finally:
            await conn.close()
    assert low_balances > 0  # on these days some meters of this fleet are below £5


async def _check_settlement_day(
    conn: asyncpg.Connection, polled: Polled, day: date, half_hours: int, now: datetime
) -> None:
    """The day's half hours per circuit (46/48/50 where no outage voided one) and its month,
    selected by date in both session zones."""
    counted = await conn.fetch(
        "SELECT c.name, count(*) AS n FROM flows.circuit_interval_hh hh "
        "JOIN flows.circuits c ON c.id = hh.circuit_id "
        "WHERE (hh.\"timestamp\" AT TIME ZONE 'Europe/London')::date = $1 GROUP BY c.name",
        day,
    )
    expected: dict[str, int] = {}
    monthly: dict[str, Decimal] = {}
    for meter, circuit in polled.topology.circuits():
        energy = polled.circuit_energy(meter, circuit, now)
        slots = [start for start in energy if start.astimezone(LONDON).date() == day]
        if slots:
            expected[circuit.name] = len(slots)
            monthly[circuit.name] = sum(
                (kwh for start, kwh in energy.items()
                 if start.astimezone(LONDON).date().replace(day=1) == day.replace(day=1)),
                start=Decimal(0),
            )  # fmt: skip
    assert {r["name"]: r["n"] for r in counted} == expected
    assert max(expected.values()) == half_hours
    for zone in SESSION_ZONES:
        await conn.execute(f"SET TIME ZONE '{zone}'")
        months = await conn.fetch(
            "SELECT c.name, m.kwh, m.days_in_month FROM flows.circuit_interval_monthly m "
            "JOIN flows.circuits c ON c.id = m.circuit_id WHERE m.month = $1",
            day.replace(day=1),
        )
        assert {r["name"]: r["kwh"] for r in months} == monthly, zone
        assert {r["days_in_month"] for r in months} == {31}  # January, March, July, October
