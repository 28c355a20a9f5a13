"""What each documented query (``doc_queries.sql``) must return, from the simulator's ground
truth and the fleet's topology plan, for a fleet the daemon polled at known simulated times.

:class:`Polled` records when each meter answered a poll; everything a projection holds follows
from that: balances and signal quality at those times, and the half hours of the profile logs
each poll read (back to the backfill horizon). :func:`run_and_check` runs one query and
compares its rows with the expectation for its ``now()`` / ``CURRENT_DATE`` and session zone.

``python -m tests.integration.doc_truth URL [ZONE ...]`` prints each query's row count on a
database holding a registered simulated fleet (e.g. `make run`'s, under ``.state/pg``).
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from flowsd.sim.clock import from_emop, to_emop
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.topology import (
    ESCO_NAME,
    SITE_LOCATION,
    SITE_NAME,
    CircuitPlan,
    MeterPlan,
    Role,
    Topology,
)

SLOT = 1800
LONDON = ZoneInfo("Europe/London")
TYPE_ORDER = {"heat": 0, "power": 1, "solar": 2}  # flows.circuit_type_enum's order
TOLERANCE = Decimal("1e-9")  # AVG() of numeric: PostgreSQL's scale, not Python's


def documented_queries() -> dict[str, str]:
    """``q1`` ... ``q13`` -> SQL, from the copy of the contract beside this module."""
    found: dict[str, str] = {}
    name = None
    for line in (Path(__file__).parent / "doc_queries.sql").read_text().splitlines():
        if line.startswith("-- q"):
            name = line[3:].split()[0]
        elif line and not line.startswith("--") and name:
            found[name] = line
            name = None
    return found


@dataclass
class Polled:
    """A registered fleet and the simulated times (EMOP seconds) each meter answered a poll."""

    fleet: SimulatedFleet
    topology: Topology
    horizon_seconds: int
    meter_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    esco_id: uuid.UUID | None = None
    site_id: uuid.UUID | None = None
    answered: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    # meter_shadows.updated_at never goes below the row's creation (registration) time.
    shadow_created: dict[str, datetime] = field(default_factory=dict)

    async def load_ids(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT r.serial, r.id, s.created_at FROM flows.meter_registry r "
            "JOIN flows.meter_shadows s ON s.id = r.id"
        )
        self.meter_ids = {r["serial"]: r["id"] for r in rows}
        self.shadow_created = {r["serial"]: r["created_at"] for r in rows}
        self.esco_id = await conn.fetchval("SELECT id FROM flows.escos WHERE code = 'WLCE'")
        self.site_id = await conn.fetchval(
            "SELECT id FROM flows.sites_new WHERE esco = $1", self.esco_id
        )

    def placeholders(self) -> dict[str, str]:
        return {
            "esco_id": str(self.esco_id),
            "site_id": str(self.site_id),
            "meter_id": str(self.meter_ids[self.topology.meters[0].serial]),
        }

    def fill(self, sql: str) -> str:
        values = self.placeholders()
        return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], sql)

    # -- readings ----------------------------------------------------------------------------

    def times(self, index: int, now: datetime) -> list[float]:
        moment = to_emop(now)
        return [t for t in self.answered[index] if t <= moment]

    def last(self, index: int, now: datetime) -> float:
        return self.times(index, now)[-1]

    def balance(self, index: int, at: float) -> Decimal:
        value = self.fleet.truth(index, at).balance_gbp
        assert value is not None
        return value

    # -- half hours --------------------------------------------------------------------------

    def records(self, index: int, now: datetime) -> set[int]:
        """Profile records (EMOP seconds) read by the polls up to ``now``: the first poll back
        to the backfill horizon, each later one from where the previous stopped, as far back
        as the meter's log still reaches."""
        model = self.fleet.model(index)
        found: set[int] = set()
        previous: int | None = None
        for t in self.times(index, now):
            newest = model.newest_record(t)
            if previous is None:
                first = newest - self.horizon_seconds + SLOT
            else:
                first = max(previous + SLOT, model.oldest_record(t))
            found.update(range(first, newest + 1, SLOT))
            previous = newest
        return found

    def interval_starts(self, index: int, now: datetime) -> set[int]:
        """Three-phase interval records (their starts, EMOP seconds) read by the polls up to
        ``now``: as :meth:`records`, a record being complete half an hour after its start."""
        model = self.fleet.model(index)
        found: set[int] = set()
        previous: int | None = None
        for t in self.times(index, now):
            newest = model.newest_record(t) - SLOT
            first = newest - self.horizon_seconds if previous is None else previous
            found.update(range(max(first + SLOT, model.oldest_record(t)), newest + 1, SLOT))
            previous = newest
        return found

    def half_hours(self, index: int, now: datetime) -> dict[int, tuple[int, int, int, int]]:
        """Slot start -> (import A, import B, export A, export B) Wh of the half hours the
        interval projection can know. Single-phase meters: both bounding profile records read
        and valid, the later one not a register reset. Three-phase meters: the interval record
        read and valid, its energy the meter's register delta over the half hour (the
        interval's average demand, W or 0.1 W on P1.cx, times half an hour)."""
        if self.fleet.meters[index].three_phase:
            return self._three_phase_half_hours(index, now)
        model = self.fleet.model(index)
        records = self.records(index, now)
        found = {}
        for start in sorted(records):
            end = start + SLOT
            if end not in records:
                continue
            first, second = model.record_status(start), model.record_status(end)
            if not (first.valid_data and second.valid_data) or second.reset:
                continue
            low, high = model.profile_record(start), model.profile_record(end)
            found[start] = (
                high.import_a - low.import_a,
                high.import_b - low.import_b,
                high.export_a - low.export_a,
                high.export_b - low.export_b,
            )
        return found

    def _three_phase_half_hours(
        self, index: int, now: datetime
    ) -> dict[int, tuple[int, int, int, int]]:
        model = self.fleet.model(index)
        found = {}
        for start in sorted(self.interval_starts(index, now)):
            if not model.record_status(start + SLOT).valid_data:
                continue
            low, high = model.element("A", start), model.element("A", start + SLOT)
            found[start] = (
                high.import_active - low.import_active,
                0,
                high.export_active - low.export_active,
                0,
            )
        return found

    def circuit_energy(
        self, meter: MeterPlan, circuit: CircuitPlan, now: datetime
    ) -> dict[datetime, Decimal]:
        """The circuit's kWh per half hour (start), as circuit_interval_hh must hold it."""
        channel = 1 if circuit.element == "B" else 0
        if circuit.direction_reversed:
            channel += 2
        return {
            from_emop(start): Decimal(values[channel]) / 1000
            for start, values in self.half_hours(meter.index, now).items()
        }


@dataclass(frozen=True)
class Moment:
    """The query's ``now()`` and ``CURRENT_DATE`` and the session's time zone."""

    now: datetime
    today: date
    zone: ZoneInfo


def _single_phase(polled: Polled) -> list[MeterPlan]:
    return [m for m in polled.topology.meters if not polled.fleet.meters[m.index].three_phase]


def _assert_close(actual: Any, expected: Any, what: object) -> None:
    if isinstance(expected, Decimal):
        assert actual is not None and abs(actual - expected) <= TOLERANCE, (what, actual, expected)
    elif isinstance(expected, datetime):
        assert abs(actual - expected) <= timedelta(milliseconds=1), (what, actual, expected)
    else:
        assert actual == expected, (what, actual, expected)


def _assert_rows(
    actual: Sequence[Sequence[Any]], expected: Sequence[Sequence[Any]], what: str
) -> None:
    assert len(actual) == len(expected), (what, len(actual), len(expected), actual, expected)
    for row, wanted in zip(actual, expected, strict=True):
        assert len(row) == len(wanted), (what, row, wanted)
        for value, value_wanted in zip(row, wanted, strict=True):
            _assert_close(value, value_wanted, (what, row))


def q1(polled: Polled, rows: list[asyncpg.Record], _: Moment) -> None:
    expected = sorted(
        (polled.meter_ids[m.serial], m.serial, m.name, polled.fleet.meters[m.index].ip_address)
        for m in polled.topology.meters
    )
    actual = [(r["id"], r["serial"], r["name"], str(r["ip_address"])) for r in rows]
    assert sorted(actual) == expected
    assert [r[2] for r in actual] == sorted(r[2] for r in actual)  # ORDER BY name


def q2(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    index = polled.topology.meters[0].index
    since = to_emop(moment.now - timedelta(days=7))
    expected = [
        (from_emop(t), polled.balance(index, t), None)
        for t in reversed(polled.times(index, moment.now))
        if t > since
    ]
    _assert_rows([tuple(r) for r in rows], expected, "q2")


def q3(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    expected = []
    for meter in _single_phase(polled):
        balance = polled.balance(meter.index, polled.last(meter.index, moment.now))
        if balance < 5:
            expected.append((polled.meter_ids[meter.serial], meter.serial, meter.name, balance))
    assert sorted(tuple(r) for r in rows) == sorted(expected)


def q4(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    expected = []
    for meter in polled.topology.meters:
        last = from_emop(polled.last(meter.index, moment.now))
        if moment.now - timedelta(hours=24) < last < moment.now - timedelta(hours=3):
            minutes = Decimal(str((moment.now - last).total_seconds())) / 60
            expected.append((meter.serial, last, minutes))
    actual = [(r["serial"], r["last_online"], r["minutes_offline"]) for r in rows]
    assert len(actual) == len(expected), (actual, expected)
    for row, wanted in zip(sorted(actual), sorted(expected), strict=True):
        assert row[0] == wanted[0], (row, wanted)
        _assert_close(row[1], wanted[1], "q4 last_online")
        assert abs(row[2] - wanted[2]) < Decimal("0.001"), (row, wanted)


def q5(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    meter = polled.topology.meters[0]
    last = polled.last(meter.index, moment.now)
    truth = polled.fleet.truth(meter.index, last)
    updated = max(from_emop(last), polled.shadow_created[meter.serial])
    expected = [(meter.serial, meter.name, truth.balance_gbp, "healthy", truth.csq, updated)]
    _assert_rows([tuple(r) for r in rows], expected, "q5")


def q6(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    index = polled.topology.meters[0].index
    since = to_emop(moment.now - timedelta(days=30))
    days: dict[date, list[Decimal]] = defaultdict(list)
    for t in polled.times(index, moment.now):
        if t > since:
            days[from_emop(t).astimezone(moment.zone).date()].append(polled.balance(index, t))
    expected = [
        (day, min(values), max(values), sum(values, Decimal(0)) / len(values))
        for day, values in sorted(days.items(), reverse=True)
    ]
    _assert_rows([tuple(r) for r in rows], expected, "q6")


def q7(polled: Polled, rows: list[asyncpg.Record], _: Moment) -> None:
    assert [tuple(r) for r in rows] == [(SITE_NAME, SITE_LOCATION, len(polled.topology.properties))]


def q8(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    (plot,) = [p for p in polled.topology.properties if p.plot == "WL-01"]
    expected = [
        (
            plot.plot,
            plot.address,
            m.serial,
            polled.balance(m.index, polled.last(m.index, moment.now)),
        )
        for m in polled.topology.meters_of("WL-01")
    ]
    assert sorted(tuple(r) for r in rows) == sorted(expected)


def daily_circuit_energy(
    polled: Polled, day: date, now: datetime
) -> list[tuple[str, str, Decimal]]:
    """(type, name, kWh) of the circuits with energy on London settlement day ``day``."""
    found = []
    for meter, circuit in polled.topology.circuits():
        slots = [
            kwh
            for start, kwh in polled.circuit_energy(meter, circuit, now).items()
            if start.astimezone(LONDON).date() == day
        ]
        if slots:
            found.append((circuit.type, circuit.name, sum(slots, Decimal(0))))
    return found


def q9(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    expected = daily_circuit_energy(polled, moment.today - timedelta(days=1), moment.now)
    actual = [(r["type"], r["name"], r["daily_kwh"]) for r in rows]
    assert sorted(actual) == sorted(expected)
    order = [(TYPE_ORDER[t], -kwh) for t, _, kwh in actual]  # ORDER BY c.type, daily_kwh DESC
    assert order == sorted(order)


def q10(polled: Polled, rows: list[asyncpg.Record], _: Moment) -> None:
    plots = {p.plot: p for p in polled.topology.properties}
    expected = [
        (ESCO_NAME, SITE_NAME, m.plot, plots[m.plot].address, m.service_head, m.serial, m.name)
        for m in polled.topology.meters
        if m.plot is not None
    ]
    actual = [tuple(r) for r in rows]
    assert sorted(actual) == sorted(expected)
    assert [r[2] for r in actual] == sorted(r[2] for r in actual)  # ORDER BY site_name, plot


def q11(polled: Polled, rows: list[asyncpg.Record], _: Moment) -> None:
    housed = [m for m in polled.topology.meters if m.plot is not None]
    kinds = [c.type for _, c in polled.topology.circuits()]
    expected = (
        SITE_NAME,
        len(polled.topology.properties),
        len({m.service_head for m in housed}),
        len(housed),
        kinds.count("power"),
        kinds.count("heat"),
        kinds.count("solar"),
    )
    assert [tuple(r) for r in rows] == [expected]


def q12(polled: Polled, rows: list[asyncpg.Record], _: Moment) -> None:
    expected = [(m.serial, m.name, ESCO_NAME) for m in polled.topology.meters if m.plot is None]
    assert sorted(tuple(r) for r in rows) == sorted(expected)
    assert all(m.role is Role.COMMUNAL for m in polled.topology.meters if m.plot is None)


def q13(polled: Polled, rows: list[asyncpg.Record], moment: Moment) -> None:
    since = moment.now - timedelta(days=7)
    peaks: dict[str, list[Decimal]] = defaultdict(list)
    for meter, circuit in polled.topology.circuits():
        energy = [
            kwh for start, kwh in polled.circuit_energy(meter, circuit, moment.now).items()
            if start >= since
        ]  # fmt: skip
        if energy:
            peaks[circuit.type].append(max(energy) * 2)
    expected = {
        kind: (len(values), sum(values, Decimal(0)) / len(values), max(values), sum(values))
        for kind, values in peaks.items()
    }
    actual = {r["type"]: tuple(r)[1:] for r in rows}
    assert set(actual) == set(expected)
    for kind, wanted in expected.items():
        _assert_rows([actual[kind]], [wanted], f"q13 {kind}")


CHECKS: dict[str, Callable[[Polled, list[asyncpg.Record], Moment], None]] = {
    "q1": q1, "q2": q2, "q3": q3, "q4": q4, "q5": q5, "q6": q6, "q7": q7, "q8": q8, "q9": q9,
    "q10": q10, "q11": q11, "q12": q12, "q13": q13,
}  # fmt: skip


async def run_and_check(
    url: str,
    polled: Polled,
    name: str,
    sql: str,
    zone: str,
    *,
    fixed_now: datetime | None = None,
) -> int:
    """Run one documented query in a session of ``zone`` and check its rows; returns how many.

    With ``fixed_now``, ``NOW()`` and ``CURRENT_DATE`` in the query text are replaced by that
    moment's literals (the date in the session's zone): the same types, so the query compares
    exactly as it would on that day.
    """
    conn = await asyncpg.connect(url, server_settings={"timezone": zone})
    try:
        if fixed_now is not None:
            today = fixed_now.astimezone(ZoneInfo(zone)).date()
            sql = sql.replace("NOW()", f"TIMESTAMPTZ '{fixed_now.isoformat()}'")
            sql = sql.replace("CURRENT_DATE", f"DATE '{today.isoformat()}'")
        async with conn.transaction():
            clock = await conn.fetchrow("SELECT now(), current_date")
            assert clock is not None
            now, today = clock[0], clock[1]
            if fixed_now is not None:
                now, today = fixed_now, fixed_now.astimezone(ZoneInfo(zone)).date()
            rows = await conn.fetch(polled.fill(sql))
    finally:
        await conn.close()
    moment = Moment(now, today, ZoneInfo(zone))
    try:
        CHECKS[name](polled, list(rows), moment)
    except AssertionError as exc:
        raise AssertionError(f"{name} in a {zone} session at {now} (CURRENT_DATE {today})") from exc
    return len(rows)


async def row_counts(url: str, zone: str = "UTC") -> dict[str, int]:
    """Each documented query's row count on ``url`` (placeholders: ESCO WLCE, its site, meter
    EML2137580826), in a session of ``zone``."""
    conn = await asyncpg.connect(url, server_settings={"timezone": zone})
    try:
        esco = await conn.fetchval("SELECT id FROM flows.escos WHERE code = 'WLCE'")
        values = {
            "esco_id": esco,
            "site_id": await conn.fetchval("SELECT id FROM flows.sites_new WHERE esco = $1", esco),
            "meter_id": await conn.fetchval(
                "SELECT id FROM flows.meter_registry WHERE serial = 'EML2137580826'"
            ),
        }
        counts = {}
        for name, sql in documented_queries().items():
            filled = re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m[1]]), sql)
            counts[name] = len(await conn.fetch(filled))
        return counts
    finally:
        await conn.close()


if __name__ == "__main__":
    import asyncio
    import sys

    for zone_name in sys.argv[2:] or ["UTC"]:
        for query, count in asyncio.run(row_counts(sys.argv[1], zone_name)).items():
            print(f"{zone_name}\t{query}\t{count}")
