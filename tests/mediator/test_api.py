"""The mediator API against the daemon and simulated meters: reads, writes, refusals, events."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from flowsd.emop import EventLogRequest, object_id
from flowsd.emop.messages import request_data
from flowsd.emop.records import ClockTime, PrepayBalance, Serial
from flowsd.emop.units import from_emop_seconds
from flowsd.sim.events import EventId
from flowsd.sim.tokens import make_token
from tests.integration.daemon import (
    fetch,
)
from tests.support import wait_until

from .helpers import client, events_of, served

SERIAL = object_id("serial")
BALANCE = object_id("prepay_balance")
TOKEN_SEND = object_id("prepay_token_send")
CLOCK = object_id("time")


def balance_of(payload: bytes) -> Decimal:
    return PrepayBalance.decode(payload).gbp


async def test_reads_answer_the_payload_and_become_events(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s, client(s.address) as c:
        meter = s.fleet.meters[0]
        payload = await c.read(meter.serial, SERIAL)
        assert Serial.decode(payload).value == meter.serial
        balance = balance_of(await c.read(meter.serial, BALANCE))
        assert balance == s.fleet.truth(meter.index).balance_gbp
        # A raw read answers the data field without its format byte.
        raw = await c.raw(meter.serial, bytes.fromhex("01600100") + b"\x00")
        assert raw[:4] == bytes.fromhex("60010000") and Serial.decode(raw[4:]).value == meter.serial
        await s.daemon.appender.flush()
        reads = await events_of(migrated_url, "BALANCE_READ")
        assert [Decimal(r["balance_gbp"]) for r in reads] == [balance]


async def test_a_raw_event_log_read_is_logged_as_the_log_keys_entries(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s, client(s.address) as c:
        meter = s.fleet.meters[0]
        second = int(s.clock.now())
        # Three entries in one second: the same id in two event sets, and one of them again.
        power_up = int(EventId.POWER_UP)
        s.fleet.state.writable(meter.index).events.extend(
            [(second, power_up, 1), (second, power_up, 2), (second, power_up, 1)]
        )
        await c.raw(meter.serial, request_data(EventLogRequest(0)))
        await s.daemon.appender.flush()
        rows = await fetch(
            migrated_url,
            """SELECT event_set FROM flows.meter_event_log
               WHERE event_type = $1 AND "timestamp" = $2 ORDER BY event_set""",
            power_up,
            from_emop_seconds(second),
        )
        repeats = s.daemon.ingest.statistics().meter_log_repeats
    # The log keeps one entry per (second, id, set); only the third entry was a repeat.
    assert [r["event_set"] for r in rows] == [1, 2]
    assert repeats == 1


async def test_a_top_up_raises_the_balance_and_the_same_token_is_refused(
    migrated_url: str, tmp_path: Path
) -> None:
    async with served(migrated_url, tmp_path) as s, client(s.address) as c:
        meter = s.fleet.meters[0]
        before = balance_of(await c.read(meter.serial, BALANCE))
        token = make_token(2500, 11)
        await c.write(meter.serial, TOKEN_SEND, token.encode())
        after = balance_of(await c.read(meter.serial, BALANCE))
        assert after == before + Decimal("25.00")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.write(meter.serial, TOKEN_SEND, token.encode())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SECURITY_NOT_GRANTED" in (refused.value.details() or "")
        assert balance_of(await c.read(meter.serial, BALANCE)) == after
        await s.daemon.appender.flush()
        await wait_until(lambda: _count(migrated_url, "COMMAND_FAILED", 1))
        requested = await events_of(migrated_url, "COMMAND_REQUESTED")
        succeeded = await events_of(migrated_url, "COMMAND_SUCCEEDED")
        failed = await events_of(migrated_url, "COMMAND_FAILED")
    assert [r["operation"] for r in requested] == ["write_element", "write_element"]
    assert requested[0]["payload_sha256"] == requested[1]["payload_sha256"]
    assert requested[0]["client"].startswith("peer ") and requested[0]["source"] == "grpc"
    assert succeeded[0]["readback"]["prepay_balance"] == str(after)
    assert failed[0]["nak"] == "SECURITY_NOT_GRANTED" and failed[0]["reason"] == "nak"
    assert failed[0]["readback"]["prepay_balance"] == str(after)
    # The token is nowhere in the log.
    rows = await fetch(migrated_url, "SELECT payload::text AS p FROM flows.meter_event_log")
    assert not [r for r in rows if r["p"] and token in r["p"]]


async def _count(url: str, name: str, at_least: int) -> bool:
    return len(await events_of(url, name)) >= at_least


async def test_a_clock_set_is_read_back(migrated_url: str, tmp_path: Path) -> None:
    async with served(migrated_url, tmp_path) as s, client(s.address) as c:
        meter = s.fleet.meters[1]
        now = s.clock.now_datetime()
        wrong = now - timedelta(hours=3)
        await c.write(meter.serial, CLOCK, ClockTime.from_datetime(wrong).encode())
        read = ClockTime.decode(await c.read(meter.serial, CLOCK)).to_datetime()
        assert abs((read - wrong).total_seconds()) <= 1
        # (The clock is frozen: a later read at the same instant would be the same event.)
        s.clock.advance(seconds=5)
        now = s.clock.now_datetime()
        await c.write(meter.serial, CLOCK, ClockTime.from_datetime(now).encode())
        await s.daemon.appender.flush()
        clock_reads = await events_of(migrated_url, "CLOCK_READ")
    # Each write was read back at once: the last clock read shows the meter on time.
    assert abs(clock_reads[-1]["drift_seconds"]) <= 2


async def test_unknown_passive_and_offline_meters(migrated_url: str, tmp_path: Path) -> None:
    async with served(migrated_url, tmp_path, meters=3) as s, client(s.address) as c:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await c.read("NO-SUCH-METER", SERIAL)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        passive = s.fleet.meters[2].serial
        await fetch(
            migrated_url, "UPDATE flows.meter_registry SET mode = 'passive' WHERE serial = $1",
            passive,
        )  # fmt: skip
        await wait_until(lambda: s.daemon.supervisor.meter_id_of(passive) is None)
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await c.read(passive, SERIAL)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "passive" in (unavailable.value.details() or "")
        info = json.loads(await c.info(passive))
        assert info["registry"]["serial"] == passive and info["shadow"]["id"]
        listed = json.loads(await c.meters())
        assert {m["serial"] for m in listed} == {m.serial for m in s.fleet.meters}
