"""``flowsd replay`` / ``flowsd verify`` / ``flowsd projections``: exit statuses and output."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from flowsd.cli import main
from flowsd.commands import projections as projections_command
from flowsd.events import types as t
from flowsd.events.store import append_batch
from flowsd.projections.catalogue import all_projections
from flowsd.projections.projector import apply_batch

BASE = datetime(2026, 3, 1, tzinfo=UTC)


async def _seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        meters = [uuid.uuid4() for _ in range(3)]
        for meter in meters:
            await conn.execute("INSERT INTO flows.meter_registry (id) VALUES ($1)", meter)
            await conn.execute(
                "INSERT INTO flows.meter_registers (register_id, meter_id, element) "
                "VALUES ($1, $2, 'A')",
                uuid.uuid4(),
                meter,
            )
        events = []
        for meter in meters:
            for n in range(6):
                at = BASE + n * timedelta(minutes=30)
                events += [
                    t.Event(
                        meter_id=meter, observed_at=at, read_at=at, body=t.SignalQualityRead(csq=n)
                    ),
                    t.Event(
                        meter_id=meter,
                        observed_at=at,
                        read_at=at,
                        body=t.BalanceRead(balance_gbp=Decimal(n) - 3),
                    ),
                    t.Event(
                        meter_id=meter,
                        observed_at=at,
                        read_at=at,
                        body=t.ProfileLog1Record(status=0x80, import_a_wh=300 * n),
                    ),
                ]
        for meter in meters:
            events += [
                t.Event(
                    meter_id=meter,
                    observed_at=BASE,
                    read_at=BASE,
                    body=t.IdentityRead(hardware="C1.w"),
                ),
                t.Event(
                    meter_id=meter,
                    observed_at=BASE,
                    read_at=BASE,
                    body=t.RegisterRead(element="A", import_active_wh=4_000, export_active_wh=250),
                ),
            ]
        result = await append_batch(conn, events)
        for projection in all_projections():
            await apply_batch(
                conn, projection, result.events, expected=0, through=result.through_position
            )
    finally:
        await conn.close()


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def seeded_url(migrated_url: str) -> str:
    asyncio.run(_seed(migrated_url))
    return migrated_url


def test_verify_is_0_when_equal_and_1_with_differences_after_tampering(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--database-url", seeded_url]) == 0
    out = capsys.readouterr().out
    assert "meter_csq: equal" in out and "register_interval_hh: equal" in out

    asyncio.run(_execute(seeded_url, "UPDATE flows.meter_csq SET csq = 99 WHERE csq = 5"))
    assert main(["verify", "--database-url", seeded_url, "--projection", "meter_csq"]) == 1
    out = capsys.readouterr().out
    assert "meter_csq: 6 rows differ" in out
    assert '"side": "live"' in out and '"side": "rebuilt"' in out and '"csq": 99' in out


# One table of each kind: plain and per-register history, half hours, both state tables.
TAMPERING = {
    "meter_prepay_balance": "DELETE FROM flows.meter_prepay_balance WHERE balance = 0",
    "register_import": "UPDATE flows.register_import SET read = read + 1",
    "register_interval_hh": "UPDATE flows.register_interval_hh SET kwh = kwh * 2",
    "meter_shadows": "UPDATE flows.meter_shadows SET balance = 1000",
    "meter_registry": "UPDATE flows.meter_registry SET hardware = 'B1.w'",
}


@pytest.mark.parametrize("projection", sorted(TAMPERING))
def test_verify_finds_tampering_in_each_kind_of_table(
    seeded_url: str, capsys: pytest.CaptureFixture[str], projection: str
) -> None:
    asyncio.run(_execute(seeded_url, TAMPERING[projection]))
    assert main(["verify", "--database-url", seeded_url]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines if "rows differ" in line] == [projection]


def test_replay_repairs_a_tampered_table(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_execute(seeded_url, "DELETE FROM flows.register_interval_hh"))
    asyncio.run(_execute(seeded_url, "UPDATE flows.meter_shadows SET balance = 1000"))
    assert main(["verify", "--database-url", seeded_url]) == 1
    capsys.readouterr()
    assert main(["replay", "--database-url", seeded_url]) == 0
    assert "replayed meter_registry" in capsys.readouterr().out
    assert main(["verify", "--database-url", seeded_url]) == 0


def test_windowed_replay(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_execute(seeded_url, "DELETE FROM flows.meter_csq"))
    args = ["replay", "--database-url", seeded_url, "--projection", "meter_csq"]
    assert main([*args, "--from-position", "27"]) == 0
    assert main(["verify", "--database-url", seeded_url, "--projection", "meter_csq"]) == 1
    assert main([*args, "--since", "2000-01-01"]) == 0
    assert main(["verify", "--database-url", seeded_url, "--projection", "meter_csq"]) == 0
    capsys.readouterr()


def test_snapshot_then_replay_and_verify_from_it(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    some = ["--database-url", seeded_url, "--projection", "meter_csq"]
    assert main(["replay", "--from-snapshot", *some]) == 2
    assert "no snapshot of meter_csq" in capsys.readouterr().err
    assert main(["projections", "snapshot", *some]) == 0
    assert main(["projections", "snapshot", "--keep", "1", *some]) == 0
    out = capsys.readouterr().out
    assert out.count("meter_csq: snapshot at ") == 2 and "dropped" not in out
    asyncio.run(_execute(seeded_url, "DELETE FROM flows.meter_csq"))
    assert main(["verify", "--from-snapshot", *some]) == 1
    assert "(rebuilt from the snapshot at " in capsys.readouterr().out
    assert main(["replay", "--from-snapshot", *some]) == 0
    assert main(["verify", "--from-snapshot", "--json", *some]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["projections"][0]["since"] > 0
    assert main(["verify", *some]) == 0


def test_user_errors_exit_2(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--database-url", seeded_url, "--projection", "nope"]) == 2
    assert "unknown projection 'nope'" in capsys.readouterr().err
    assert main(["replay", "--database-url", seeded_url, "--since", "yesterday"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_projections_status_and_retry_parked(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="flowsd")
    projections_command.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["projections", *argv, "--database-url", seeded_url])
        status: int = args.handler(args)
        return status

    assert run("status") == 0
    assert "meter_csq" in capsys.readouterr().out
    assert run("retry-parked") == 0
    assert "no parked events left" in capsys.readouterr().out


def test_verify_json_is_one_document_on_stdout(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["verify", "--json", "--database-url", seeded_url, "--projection", "meter_csq"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "ok": True,
        "projections": [
            {
                "name": "meter_csq",
                "equal": True,
                "position": json.loads(out)["projections"][0]["position"],
                "since": 0,
                "differences": 0,
                "parked_events": 0,
                "first": [],
            }
        ],
    }
    asyncio.run(_execute(seeded_url, "UPDATE flows.meter_csq SET csq = 99 WHERE csq = 5"))
    args = ["verify", "--json", "--show", "2", "--database-url", seeded_url]
    assert main(args) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    (csq,) = [p for p in document["projections"] if not p["equal"]]
    assert csq["name"] == "meter_csq" and csq["differences"] == 6 and len(csq["first"]) == 2
    assert {row["side"] for row in csq["first"]} <= {"live", "rebuilt"}
    assert all(p["position"] > 0 for p in document["projections"])


def test_replay_logs_on_stderr_as_configured_and_prints_only_its_result(
    seeded_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "flowsd.toml"
    config.write_text('[logging]\nformat = "json"\n')
    args = ["--config", str(config), "--database-url", seeded_url]
    assert main(["replay", "--projection", "meter_csq", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("replayed meter_csq") and captured.out.count("\n") == 1
    logged = [json.loads(line) for line in captured.err.splitlines()]
    assert {"projection replayed", "replay progress"} <= {line["event"] for line in logged}
    # [logging] level applies: nothing at info when the file asks for warnings only.
    config.write_text('[logging]\nformat = "json"\nlevel = "warning"\n')
    assert main(["replay", "--projection", "meter_csq", *args]) == 0
    assert capsys.readouterr().err == ""


def test_projections_status_json(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["projections", "status", "--json", "--database-url", seeded_url]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    head = document["event_log_head"]
    assert head > 0
    csq = next(p for p in document["projections"] if p["name"] == "meter_csq")
    assert csq == {"name": "meter_csq", "position": head, "lag_events": 0, "parked_events": 0}


async def _park_one_meter(url: str) -> None:
    """Meter EMLOTHER's identity claims the serial of meter EMLTAKEN: parked."""
    conn = await asyncpg.connect(url)
    try:
        taken, other = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO flows.meter_registry (id, serial) VALUES ($1, 'EMLTAKEN'), "
            "($2, 'EMLOTHER')",
            taken,
            other,
        )
        clash = t.Event(
            meter_id=other, observed_at=BASE, read_at=BASE, body=t.IdentityRead(serial="EMLTAKEN")
        )
        result = await append_batch(conn, [clash])
        registry = next(p for p in all_projections() if p.name == "meter_registry")
        await apply_batch(
            conn, registry, result.events, expected=0, through=result.through_position
        )
    finally:
        await conn.close()


def test_retry_parked_takes_a_serial(migrated_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_park_one_meter(migrated_url))
    base = ["projections", "retry-parked", "--projection", "meter_registry"]
    url = ["--database-url", migrated_url]
    assert main([*base, "--meter", "EMLTAKEN", *url]) == 0  # nothing of that meter is parked
    assert "no parked events left" in capsys.readouterr().out
    assert main([*base, "--meter", "emlother", *url]) == 1  # case does not matter
    assert "meter_registry: applied 0, still parked 1" in capsys.readouterr().out
    assert main([*base, "--meter", "EMLNOBODY", *url]) == 2
    assert "no meter with serial or id 'EMLNOBODY'" in capsys.readouterr().err
    asyncio.run(_execute(migrated_url, "UPDATE flows.meter_registry SET serial = NULL"))
    other = asyncio.run(_meter_of_parked(migrated_url))
    assert main([*base, "--meter", str(other), *url]) == 0  # an id still works
    assert "applied 1, still parked 0" in capsys.readouterr().out


async def _meter_of_parked(url: str) -> uuid.UUID:
    conn = await asyncpg.connect(url)
    try:
        meter: uuid.UUID = await conn.fetchval(
            "SELECT meter_id FROM flowsd.projection_parked_event LIMIT 1"
        )
        return meter
    finally:
        await conn.close()
