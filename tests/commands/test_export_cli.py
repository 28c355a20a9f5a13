"""``flowsd export intervals``: settlement days of Europe/London (46, 48 and 50 half hours),
selection by meter and ESCO, and the values against the simulator's ground truth after a
daemon polled the fleet across the autumn clock change."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import msgspec
import pytest

from flowsd.cli import main
from flowsd.commands.export import COLUMNS
from flowsd.config import PollConfig
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.topology import ESCO_CODE
from tests.integration.daemon import (
    FAST_METERS,
    daemon_config,
    fetch,
    fetchval,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)
from tests.support import WAIT_SECONDS, wait_until

FLOWSD = [sys.executable, "-m", "flowsd"]
HALF_HOUR = timedelta(minutes=30)


def rows_of(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def by_register_and_day(rows: list[dict[str, str]]) -> dict[tuple[str, str], list[dict[str, str]]]:
    grouped: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        grouped[(row["register_id"], row["settlement_date"])].append(row)
    return grouped


async def _register(url: str, meters: int) -> list[str]:
    async with registered_fleet(url, meters, hardware=("B1.w", "C1.w")) as fleet:
        return [m.serial for m in fleet.meters]


@pytest.fixture
def fleet_serials(migrated_url: str) -> tuple[str, list[str]]:
    return migrated_url, asyncio.run(_register(migrated_url, 3))


def _export(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    status = main(["export", "intervals", *argv, "--database-url", url])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_settlement_days_have_46_48_and_50_half_hours(
    fleet_serials: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, serials = fleet_serials
    # Clocks go forward on 29 March 2026 and back on 25 October 2026 (Europe/London).
    for first, last, sizes in (
        ("2026-03-28", "2026-03-30", {"2026-03-28": 48, "2026-03-29": 46, "2026-03-30": 48}),
        ("2026-10-24", "2026-10-26", {"2026-10-24": 48, "2026-10-25": 50, "2026-10-26": 48}),
    ):
        status, out, err = _export(capsys, url, "--esco", ESCO_CODE, "--from", first,
                                   "--to", last)  # fmt: skip
        assert status == 0, err
        rows = rows_of(out)
        # Meters 0 and 2 are B1.w (register SINGLE), 1 is a twin-element C1.w (A and B).
        assert len({r["register_id"] for r in rows}) == 4
        assert {r["serial"] for r in rows} == set(serials)
        for (_, day), group in by_register_and_day(rows).items():
            assert len(group) == sizes[day]
            assert [int(r["settlement_period"]) for r in group] == list(range(1, sizes[day] + 1))
            starts = [datetime.fromisoformat(r["start_utc"]) for r in group]
            assert all(b - a == HALF_HOUR for a, b in itertools.pairwise(starts))
            assert all(r["kwh"] == "" and r["export_kwh"] == "" for r in group)  # no data yet
        days = sorted({r["settlement_date"] for r in rows})
        assert days == sorted(sizes)
    spring = [r for r in rows_of(_export(capsys, url, "--meter", serials[0], "--from",
                                          "2026-03-29", "--to", "2026-03-29")[1])]  # fmt: skip
    # The day starts at local midnight: 00:00 GMT, and ends at 00:00 BST = 23:00 UTC.
    assert spring[0]["start_utc"] == "2026-03-29T00:00:00Z"
    assert spring[-1]["start_utc"] == "2026-03-29T22:30:00Z"
    assert {r["element"] for r in spring} == {"SINGLE"}


def test_selection_and_mistakes(
    fleet_serials: tuple[str, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, serials = fleet_serials
    day = ["--from", "2026-06-01", "--to", "2026-06-01"]
    status, out, _ = _export(
        capsys, url, "--meter", serials[0].lower(), "--meter", serials[1], *day
    )
    assert status == 0
    assert {r["serial"] for r in rows_of(out)} == {serials[0], serials[1]}
    target = tmp_path / "out.csv"
    assert _export(capsys, url, "--meter", serials[2], *day, "--output", str(target))[0] == 0
    assert len(rows_of(target.read_text())) == 48  # a B1.w: one register
    assert not (tmp_path / "out.csv.partial").exists()
    for argv, message in (
        (["--esco", "nope", *day], "--esco: no ESCO with code, name or id 'nope'"),
        (["--meter", "EMLNOBODY", *day], "no meter with serial or id 'EMLNOBODY'"),
        (["--meter", serials[0], "--from", "2026-06-02", "--to", "2026-06-01"], "before --from"),
        (["--meter", serials[0], "--from", "June", "--to", "2026-06-01"], "not a date"),
        (day, "name meters with --meter or --esco"),
    ):
        status, out, err = _export(capsys, url, *argv, "--output", str(tmp_path / "bad.csv"))
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad.csv").exists()
        assert not (tmp_path / "bad.csv.partial").exists()


# The day after the autumn change: 50 half hours on 25 October 2026 are within reach of a
# 50-hour backfill.
AFTER_AUTUMN = datetime(2026, 10, 26, 2, 0, 7, tzinfo=UTC)


async def test_exported_half_hours_equal_the_simulator_across_the_autumn_change(
    migrated_url: str, tmp_path: Path
) -> None:
    clock = SimClock(AFTER_AUTUMN, speed=0.0)
    meters = msgspec.structs.replace(
        FAST_METERS, backfill_horizon_hours=50, backfill_max_requests_per_poll=400
    )
    poll = PollConfig(
        cadences={"fast": 60.0}, single_phase={"fast": ["profile_logs"]}, three_phase={"fast": []}
    )
    async with registered_fleet(migrated_url, 2, clock=clock, hardware=("C1.w", "EMA1.w")) as fleet:
        config = with_meters(daemon_config(tmp_path, migrated_url, poll=poll, meters=meters), fleet)
        async with running_daemon(config, migrated_url, wall_clock=sim_wall_clock(clock)) as d:
            for _ in range(10):  # bounded: a poll per simulated minute until the day is in
                clock.advance(minutes=1)
                wanted = d.supervisor.statistics().polls + 2  # one more poll of each meter
                await wait_until(lambda: d.supervisor.statistics().polls >= wanted)  # noqa: B023
                await wait_until(lambda: d.supervisor.status(top=0).polls_running == 0)
                if await _half_hours(migrated_url) >= 3 * 50:
                    break
            await d.appender.flush()
            assert d.projectors is not None
            head = await fetchval(migrated_url, "SELECT max(position) FROM flows.meter_event_log")
            assert await d.projectors.wait_caught_up(head, WAIT_SECONDS)
        with anyio.fail_after(WAIT_SECONDS):
            done = await anyio.run_process(
                [*FLOWSD, "export", "intervals", "--esco", ESCO_CODE, "--from",
                 "2026-10-25", "--to", "2026-10-25", "--database-url", migrated_url],
                env=dict(os.environ),
            )  # fmt: skip
        rows = rows_of(done.stdout.decode())
        reversed_registers = {
            str(row["register_id"])
            for row in await fetch(
                migrated_url,
                "SELECT register_id FROM flows.meter_registers WHERE direction_reversed",
            )
        }
        _check_against_truth(fleet, rows, reversed_registers)


async def _half_hours(url: str) -> int:
    return int(
        await fetchval(
            url,
            """SELECT count(*) FROM flows.register_interval_hh
               WHERE "timestamp" >= '2026-10-24T23:00Z' AND "timestamp" < '2026-10-26T00:00Z'""",
        )
    )


def _check_against_truth(
    fleet: SimulatedFleet, rows: list[dict[str, str]], reversed_registers: set[str]
) -> None:
    """Each row's energy is the simulator's for its half hour and channel (import and export
    swapped for a register with direction_reversed, e.g. a generation meter)."""
    day_start = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # local midnight, BST
    compared = 0
    for meter in fleet.meters:
        mine = [r for r in rows if r["serial"] == meter.serial]
        elements = {"A", "B"} if meter.twin_element else {"SINGLE"}
        assert {r["element"] for r in mine} == elements
        truths = fleet.intervals(meter.index, day_start - HALF_HOUR, day_start + 25 * 2 * HALF_HOUR)
        by_start = {t.start: t for t in truths}
        for element in elements:
            column = [r for r in mine if r["element"] == element]
            assert len(column) == 50
            for row in column:
                start = datetime.fromisoformat(row["start_utc"])
                truth, before = by_start[start], by_start[start - HALF_HOUR]
                valid = (
                    before.status.valid_data and truth.status.valid_data and not truth.status.reset
                )
                energy = truth.import_b if element == "B" else truth.import_a
                exported = truth.export_b if element == "B" else truth.export_a
                if row["register_id"] in reversed_registers:
                    energy, exported = exported, energy
                if not valid or energy < 0:
                    assert row["kwh"] == "", row
                    continue
                assert Decimal(row["kwh"]) == Decimal(energy) / 1000, row
                if row["export_kwh"]:
                    assert Decimal(row["export_kwh"]) == Decimal(exported) / 1000
                compared += 1
    assert compared >= 3 * 50 * 9 // 10
    assert date.fromisoformat(rows[0]["settlement_date"]) == date(2026, 10, 25)
