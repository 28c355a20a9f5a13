"""State that moves with simulated time, and writes that change it, seen over the wire."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from flowsd.emop import NakCode, NakError, ProfileLogRequest, ReadRequest, WriteRequest, object_id
from flowsd.emop.records import ClockTime, ProfileLog1, ProfileLog1Record, RawPayload, Registers
from flowsd.emop.writes import future_tariff_writes, set_backlight, set_clock, set_flag, top_up
from flowsd.sim.clock import SimClock, to_emop
from flowsd.sim.consumption import outage_on
from flowsd.sim.fleet import MeterInfo, SimulatedFleet
from flowsd.sim.tokens import make_token
from tests.sim.client import ask

BASE = "127.77.14.1"
DAY = 86_400


async def read_value(meter: MeterInfo, name: str) -> int:
    record = (await ask(meter, ReadRequest(object_id(name)))).record
    for field in ("value", "balance", "enabled_flag", "setting"):
        if hasattr(record, field):
            return int(getattr(record, field))
    raise AssertionError(f"{name}: {record!r} has no single value")


async def read_registers(meter: MeterInfo, element: str) -> Registers:
    record = (await ask(meter, ReadRequest(object_id(f"read_element_{element}")))).record
    assert isinstance(record, Registers)
    return record


async def write(meter: MeterInfo, request: WriteRequest) -> None:
    response = await ask(meter, request)
    assert response.record is None  # an acknowledgement


def quiet_meter(fleet: SimulatedFleet, start: float, end: float) -> MeterInfo:
    """A twin-element meter with no debt to recover and no top-up in [start, end]."""
    for meter in fleet.meters:
        identity = fleet.state.identity(meter.index)
        quiet = not identity.opening_debt and not fleet.credits(meter.index, start - 1, end)
        if meter.twin_element and quiet:
            return meter
    raise AssertionError("no quiet meter in the fleet")


async def test_balance_falls_by_the_tariff_rates(frozen_clock: SimClock) -> None:
    start = frozen_clock.now()
    async with SimulatedFleet(
        30, seed=21, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w"]
    ) as fleet:
        meter = quiet_meter(fleet, start, start + 5 * 3600)
        before = await read_value(meter, "prepay_balance")
        a0, b0 = await read_registers(meter, "a"), await read_registers(meter, "b")
        standing = await read_value(meter, "tariff_active_standing_charge")
        rate_a = await read_value(meter, "tariff_active_price")
        rate_b = await read_value(meter, "tariff_active_element_b_price")
        frozen_clock.advance(hours=5)
        after = await read_value(meter, "prepay_balance")
        a1, b1 = await read_registers(meter, "a"), await read_registers(meter, "b")

    slots = int((start + 5 * 3600) // 1800 - start // 1800)
    energy = (rate_a * (a1.import_active - a0.import_active)
              + rate_b * (b1.import_active - b0.import_active)) / 1000  # fmt: skip
    expected = energy + standing * slots / 48
    assert a1.import_active > a0.import_active
    assert abs((before - after) - expected) <= 2


async def test_future_tariff_written_like_the_reference_activates_on_time(
    frozen_clock: SimClock,
) -> None:
    activation = frozen_clock.now_datetime().replace(microsecond=0) + timedelta(hours=2)
    async with SimulatedFleet(
        2, seed=22, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w", "EMA1.w"]
    ) as fleet:
        for meter in fleet.meters:
            old_standing = await read_value(meter, "tariff_active_standing_charge")
            for request in future_tariff_writes(
                unit_rate="0.31234", standing_charge="0.61", activation=activation
            ):
                await write(meter, request)
            assert await read_value(meter, "tariff_future_standing_charge") == 61_000
            assert await read_value(meter, "tariff_future_block_8_rate_1") == 31_234
            assert await read_value(meter, "tariff_future_element_b_tou_rate_1") == 31_234
            assert await read_value(meter, "tariff_future_prepayment_emergency_credit") == (
                1_500_000
            )
            assert await read_value(meter, "tariff_future_activation_datetime") == int(
                to_emop(activation)
            )
            assert await read_value(meter, "tariff_active_standing_charge") == old_standing
        frozen_clock.advance(hours=1, minutes=59)
        assert await read_value(fleet.meters[0], "tariff_active_price") != 31_234
        frozen_clock.advance(minutes=2)
        for meter in fleet.meters:
            assert await read_value(meter, "tariff_active_standing_charge") == 61_000
            assert await read_value(meter, "tariff_active_price") == 31_234
            assert await read_value(meter, "tariff_active_element_b_price") == 31_234
            truth = fleet.truth(meter.index)
            assert truth.active_tariff is not None
            assert truth.active_tariff.unit_rate_a == 31_234


async def test_profile_intervals_sum_to_the_register_increase(frozen_clock: SimClock) -> None:
    now = int(frozen_clock.now())
    day_start = now - now % DAY - DAY
    async with SimulatedFleet(
        1, seed=23, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w"]
    ) as fleet:
        meter = fleet.meters[0]
        records: list[ProfileLog1Record] = []
        for hour in range(0, 26, 2):
            log = (await ask(meter, ProfileLogRequest(1, day_start + hour * 3600))).record
            assert isinstance(log, ProfileLog1)
            records += log.records[:4]
        truth_start = fleet.truth(0, at=day_start)
        truth_end = fleet.truth(0, at=day_start + DAY)
        intervals = fleet.intervals(0, day_start, day_start + DAY)

    by_time = {r.timestamp: r for r in records}
    assert sorted(by_time)[:49] == list(range(day_start, day_start + DAY + 1, 1800))
    energies_a = [by_time[t + 1800].import_a - by_time[t].import_a
                  for t in range(day_start, day_start + DAY, 1800)]  # fmt: skip
    energies_b = [by_time[t + 1800].import_b - by_time[t].import_b
                  for t in range(day_start, day_start + DAY, 1800)]  # fmt: skip
    assert all(e >= 0 for e in energies_a + energies_b)
    assert (
        sum(energies_a) == truth_end.element_a.import_active - truth_start.element_a.import_active
    )
    assert (
        sum(energies_b) == truth_end.element_b.import_active - truth_start.element_b.import_active
    )
    assert energies_a == [i.import_a for i in intervals]
    assert energies_b == [i.import_b for i in intervals]
    # Day and night differ: the heat register (B) is mostly night load.
    assert sum(energies_b[:14]) > sum(energies_b[14:28])


async def test_outages_show_in_profile_status_and_event_log(frozen_clock: SimClock) -> None:
    now = frozen_clock.now()
    async with SimulatedFleet(
        60, seed=24, base_address=BASE, port=0, clock=frozen_clock, hardware=["EMA1.w"],
        history_days=20,
    ) as fleet:  # fmt: skip
        found = None
        for meter in fleet.meters:
            identity = fleet.state.identity(meter.index)
            for day in range(int(now // DAY) - 8, int(now // DAY)):
                outage = outage_on(identity.seed, identity.index, identity.commission_day, day)
                if outage is not None and outage[1] - outage[0] > 1800:
                    found = (meter, outage)
                    break
            if found:
                break
        assert found is not None, "no long outage in 60 meters x 8 days"
        meter, (down, up) = found
        first = int(down // 1800) * 1800
        log = (await ask(meter, ProfileLogRequest(1, first))).record
        events = [e for e in fleet.events(meter.index) if down <= e.timestamp <= up]

    assert isinstance(log, ProfileLog1)
    flagged = [r for r in log.records if r.status.power_fail]
    assert flagged, "records overlapping the outage carry power_fail"
    assert any(not r.status.valid_data for r in log.records)
    assert {e.event_id for e in events} >= {33, 34}


async def test_clock_drift_grows_and_a_clock_set_fixes_it(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        5, seed=25, base_address=BASE, port=0, clock=frozen_clock, hardware=["EMA1.w"]
    ) as fleet:
        meter = max(fleet.meters, key=lambda m: abs(fleet.state.identity(m.index).drift_ppm))
        first = await read_clock_drift(meter, frozen_clock)
        frozen_clock.advance(days=30)
        later = await read_clock_drift(meter, frozen_clock)
        await write(meter, set_clock(frozen_clock.now_datetime()))
        fixed = await read_clock_drift(meter, frozen_clock)
    assert abs(later) > abs(first) + 5
    assert abs(fixed) <= 1


async def read_clock_drift(meter: MeterInfo, clock: SimClock) -> float:
    record = (await ask(meter, ReadRequest(object_id("time")))).record
    assert isinstance(record, ClockTime)
    reported = datetime(
        2000 + record.year, record.month, record.date, record.hour, record.minute,
        record.second, tzinfo=UTC,
    )  # fmt: skip
    return (reported - clock.now_datetime()).total_seconds()


async def test_top_up_token_raises_the_balance_and_logs_an_event(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        1, seed=26, base_address=BASE, port=0, clock=frozen_clock, hardware=["B1.w"]
    ) as fleet:
        meter = fleet.meters[0]
        before = await read_value(meter, "prepay_balance")
        token = make_token(2_500, 42)
        await write(meter, top_up(token))
        after = await read_value(meter, "prepay_balance")
        log = (await ask(meter, ReadRequest(object_id("event_log")))).record
        try:
            await ask(meter, top_up(token))
            reused = 0
        except NakError as nak:
            reused = nak.code
        newest = fleet.events(0, limit=1)[0]
    assert after - before == 2_500_000
    assert reused == NakCode.SECURITY_NOT_GRANTED
    assert (newest.timestamp, newest.event_id) == (int(frozen_clock.now()), 52)
    # event_log read in the default format comes back as raw bytes: the newest record first.
    assert isinstance(log, RawPayload)
    assert log.payload[:6] == struct.pack("<IBB", int(frozen_clock.now()), 52, 0)


async def test_flags_and_settings_change(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        2, seed=27, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w", "P1.ax"]
    ) as fleet:
        single, three = fleet.meters[0], fleet.meters[1]
        for enabled in (True, False, True):
            await write(single, set_flag("prepay_enabled_flag", enabled))
            assert await read_value(single, "prepay_enabled_flag") == int(enabled)
        await write(single, set_backlight(30))
        await write(three, set_backlight(255))
        assert await read_value(single, "backlight") == 30
        assert await read_value(three, "backlight") == 255
        try:
            await ask(three, set_flag("prepay_enabled_flag", True))
            code = 0
        except NakError as nak:
            code = nak.code
    assert code == NakCode.OBJECT_NOT_RECOGNISED


async def test_state_is_a_function_of_seed_index_and_time(frozen_clock: SimClock) -> None:
    def snapshot(seed: int) -> list[object]:
        fleet = SimulatedFleet(20, seed=seed, base_address=BASE, port=0, clock=frozen_clock)
        return [fleet.truth(i) for i in range(20)]

    assert snapshot(1) == snapshot(1)
    assert snapshot(1) != snapshot(2)
    fleet = SimulatedFleet(3, seed=1, base_address=BASE, port=0, clock=frozen_clock)
    csq = {fleet.truth(0, at=frozen_clock.now() + 600 * k).csq for k in range(50)}
    volts = {fleet.truth(0, at=frozen_clock.now() + 600 * k).voltage for k in range(50)}
    assert len(csq) > 3
    assert all(0 <= c <= 31 for c in csq)
    assert len(volts) > 10
    assert all(2_300 <= v <= 2_500 for v in volts)
