"""Every object and every hardware kind, over real loopback sockets, decoded by the codec."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowsd.emop import (
    OBJECTS,
    EventLogRequest,
    NakCode,
    NakError,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ThreePhaseIntervalsRequest,
)
from flowsd.emop.records import (
    ClockTime,
    CsqNetOp,
    EventLog,
    HardwareVersion,
    PrepayBalance,
    ProfileLog1,
    ProfileLog2,
    Registers,
    Serial,
    ThreePhaseIntervals,
    U32Value,
    Voltage,
)
from flowsd.sim.clock import SimClock, to_emop
from flowsd.sim.fleet import MeterInfo, SimulatedFleet
from tests.sim.client import ask
from tests.sim.conftest import ALL_HARDWARE

BASE = "127.77.11.1"
HARDWARE_STRINGS = {"C1.w": {"6Cw", "6C"}, "B1.w": {"6Bw"}, "EMA1.w": {"3Aw"}}
THREE_PHASE_ANSWERS = {
    "firmware_version", "time", "csq_net_op", "backlight", "three_phase_serial",
    "three_phase_hardware_configuration", "three_phase_read", "three_phase_initiate_read",
    "three_phase_total_active_import", "three_phase_total_active_export",
    "three_phase_total_reactive_import", "three_phase_total_reactive_export",
    "three_phase_total_apparent_import", "three_phase_total_apparent_export",
    "three_phase_instantaneous_voltage_l1", "three_phase_instantaneous_voltage_l2",
    "three_phase_instantaneous_voltage_l3", "instantaneous_active_power",
    "instantaneous_reactive_power", "instantaneous_current", "average_current",
    "average_voltage", "instantaneous_power_factor", "instantaneous_frequency",
    "average_frequency", "hardware_version",
} | {o.name for o in OBJECTS if o.name.endswith("_demand")}  # fmt: skip


def single_phase_answers(name: str) -> bool:
    return not name.startswith("three_phase_") and not name.endswith("_demand")


async def read_all_objects(meter: MeterInfo) -> tuple[dict[str, object], dict[str, int]]:
    answered: dict[str, object] = {}
    naks: dict[str, int] = {}
    for info in OBJECTS:
        try:
            answered[info.name] = (await ask(meter, ReadRequest(info.id))).record
        except NakError as nak:
            naks[info.name] = nak.code
    return answered, naks


@pytest.mark.parametrize("hardware", ALL_HARDWARE)
async def test_every_object_answers_or_naks_as_its_kind_does(
    hardware: str, frozen_clock: SimClock
) -> None:
    index = ALL_HARDWARE.index(hardware)
    async with SimulatedFleet(
        len(ALL_HARDWARE), seed=7, base_address=BASE, port=0, clock=frozen_clock,
        hardware=ALL_HARDWARE,
    ) as fleet:  # fmt: skip
        meter = fleet.meters[index]
        answered, naks = await read_all_objects(meter)
        truth = fleet.truth(index)

    assert meter.hardware == hardware
    assert set(answered) | set(naks) == {o.name for o in OBJECTS}
    if meter.three_phase:
        expected = THREE_PHASE_ANSWERS - {"hardware_version"}
        assert expected <= set(answered)
        assert set(answered) <= THREE_PHASE_ANSWERS
        assert all(code == NakCode.OBJECT_NOT_RECOGNISED for code in naks.values())
        # SPEC §5.2: a three-phase meter NAKs hardware_version or returns it empty.
        if "hardware_version" in answered:
            assert answered["hardware_version"] == HardwareVersion("")
        assert truth.three_phase_totals is not None
        total = answered["three_phase_total_active_import"]
        assert total == U32Value(truth.three_phase_totals["active_import"])
        assert isinstance(answered["three_phase_serial"], Serial)
        assert answered["three_phase_serial"].serial.strip() == meter.serial
        config = answered["three_phase_hardware_configuration"]
        assert config.meter_type.value == (1 if hardware == "P1.ax" else 0)  # type: ignore[attr-defined]
        assert isinstance(answered["three_phase_instantaneous_voltage_l1"], Voltage)
    else:
        expected_answered = {o.name for o in OBJECTS if single_phase_answers(o.name)}
        assert set(answered) == expected_answered - {"prepay_token_send"}
        assert naks.pop("prepay_token_send") == NakCode.SECURITY_NOT_GRANTED
        assert all(code == NakCode.OBJECT_NOT_RECOGNISED for code in naks.values())
        hw = answered["hardware_version"]
        assert isinstance(hw, HardwareVersion)
        assert hw.hardware.replace("\0", "").strip() in HARDWARE_STRINGS[hardware]
        assert answered["serial"] == Serial(meter.serial.ljust(16))
        assert answered["prepay_balance"] == PrepayBalance(truth.balance or 0)
        a, b = truth.element_a, truth.element_b
        assert answered["read_element_a"] == Registers(
            a.import_active, a.export_active, a.import_reactive, a.export_reactive
        )
        assert answered["read_element_b"] == Registers(
            b.import_active, b.export_active, b.import_reactive, b.export_reactive
        )
        if hardware != "C1.w":
            assert answered["read_element_b"] == Registers(0, 0, 0, 0)
        assert truth.active_tariff is not None
        assert answered["tariff_active_standing_charge"] == U32Value(
            truth.active_tariff.standing_charge
        )
        assert answered["tariff_active_price"] == U32Value(truth.active_tariff.unit_rate_a)
        assert truth.future_activation is not None
        assert answered["tariff_future_activation_datetime"] == U32Value(
            int(to_emop(truth.future_activation))
        )
        assert isinstance(answered["instantaneous_voltage"], Voltage)
        assert answered["instantaneous_voltage"].voltage == truth.voltage
    clock = answered["time"]
    assert isinstance(clock, ClockTime)
    reported = truth.meter_clock.replace(microsecond=0)
    assert (clock.year + 2000, clock.month, clock.date, clock.hour, clock.minute, clock.second) == (
        reported.year, reported.month, reported.day, reported.hour, reported.minute,
        reported.second,
    )  # fmt: skip
    assert answered["csq_net_op"] == CsqNetOp(
        network_operator=fleet.state.identity(index).network_operator, csq=truth.csq
    )


@pytest.mark.parametrize("hardware", ALL_HARDWARE)
async def test_logs_and_intervals_follow_the_hardware_kind(
    hardware: str, frozen_clock: SimClock
) -> None:
    index = ALL_HARDWARE.index(hardware)
    now = int(frozen_clock.now())
    two_hours_ago = now - now % 1800 - 7200
    async with SimulatedFleet(
        len(ALL_HARDWARE), seed=7, base_address=BASE, port=0, clock=frozen_clock,
        hardware=ALL_HARDWARE,
    ) as fleet:  # fmt: skip
        meter = fleet.meters[index]
        requests: list[Request] = [
            ProfileLogRequest(1, two_hours_ago),
            ProfileLogRequest(2, two_hours_ago),
            EventLogRequest(0),
            EventLogRequest(9),
            ThreePhaseIntervalsRequest(two_hours_ago - 7200, two_hours_ago + 7200),
        ]
        outcomes: list[object] = []
        for request in requests:
            try:
                outcomes.append((await ask(meter, request)).record)
            except NakError as nak:
                outcomes.append(nak.code)
        intervals = fleet.intervals(index, frozen_clock.now_datetime() - timedelta(hours=4),
                                    frozen_clock.now_datetime())  # fmt: skip

    log1, log2, events0, events9, three_phase = outcomes
    if meter.three_phase:
        assert [log1, log2, events0, events9] == [NakCode.OBJECT_NOT_RECOGNISED] * 4
        assert isinstance(three_phase, ThreePhaseIntervals)
        assert len(three_phase.intervals) == 8
        assert three_phase.block_start_time == two_hours_ago - 7200
        scale = 20 if hardware == "P1.cx" else 2  # Wh per half hour -> W (or 0.1 W)
        by_start = {int(to_emop(i.start)): i for i in intervals}
        for number, interval in enumerate(three_phase.intervals):
            start = three_phase.block_start_time + 1800 * number
            assert interval.channel_data[0] == by_start[start].import_a * scale
        return
    assert three_phase == NakCode.OBJECT_NOT_RECOGNISED
    assert isinstance(log1, ProfileLog1)
    assert [r.timestamp for r in log1.records] == [two_hours_ago + 1800 * i for i in range(4)]
    truth_by_end = {int(to_emop(i.end)): i for i in intervals}
    for record in log1.records:
        assert record.import_a == truth_by_end[record.timestamp].registers_at_end[0]
        assert record.import_b == truth_by_end[record.timestamp].registers_at_end[1]
        assert record.status.valid_data == truth_by_end[record.timestamp].status.valid_data
    # Like a real meter it sends a fifth record, which the reference does not decode.
    fifth = two_hours_ago + 4 * 1800
    assert int.from_bytes(log1.extra[:4], "little") == fifth
    assert int.from_bytes(log1.extra[6:10], "little") == truth_by_end[fifth].registers_at_end[0]
    assert isinstance(log2, ProfileLog2)
    assert log2.is_twin_element == (hardware == "C1.w")
    assert len(log2.records) == (2 if hardware == "C1.w" else 3)
    assert log2.records[0].active_export_a == truth_by_end[two_hours_ago].registers_at_end[2]
    assert isinstance(events0, EventLog)
    assert isinstance(events9, EventLog)
    assert len(events0.events) == 10
    stamps = [e.timestamp for e in events0.events + events9.events if e.timestamp]
    assert stamps[:10] == sorted(stamps[:10], reverse=True)
    assert events0.events[0].timestamp <= now
    # Page 9 holds events older than page 0's (or is empty padding on a young log).
    assert all(e.timestamp <= events0.events[-1].timestamp for e in events9.events)
    expected = fleet.events(index, limit=10)
    assert [(e.timestamp, int(e.event_id)) for e in events0.events] == [
        (e.timestamp, e.event_id) for e in expected
    ]


async def test_nak_for_unknown_object_echoes_the_request_header(frozen_clock: SimClock) -> None:
    async with SimulatedFleet(
        1, seed=7, base_address=BASE, port=0, clock=frozen_clock, hardware=["C1.w"]
    ) as fleet:
        with pytest.raises(NakError) as raised:
            await ask(fleet.meters[0], ReadRequest(0x800309))
    assert raised.value.code == NakCode.OBJECT_NOT_RECOGNISED
    assert raised.value.object_id == 0x800309
