"""Hypothesis strategies: one per record type, plus requests and frames."""

from __future__ import annotations

from hypothesis import strategies as st

from flowsd.emop import (
    Address,
    EventLogRequest,
    Frame,
    ProfileLogRequest,
    ReadRequest,
    Request,
    ThreePhaseIntervalsRequest,
    WriteRequest,
)
from flowsd.emop.records import (
    ActivePower,
    Backlight,
    BacklightSetting,
    ClockTime,
    CsqNetOp,
    DayOfWeek,
    Event,
    EventId,
    EventLog,
    FirmwareVersion,
    Fitted,
    Flag,
    HardwareVersion,
    IntervalRecord,
    IntervalStatus,
    LoadSwitch,
    LoadSwitchSetting,
    MeterType,
    MiddleOutputTerminals,
    PrepayBalance,
    ProfileLog1,
    ProfileLog1Record,
    ProfileLog2,
    ProfileLog2Record,
    ProfileLog2SingleRecord,
    ProfileLog2TwinRecord,
    ProfileStatus,
    RawPayload,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThreePhaseIntervals,
    ThresholdMask,
    ThresholdValues,
    TimeSwitches,
    TopUpToken,
    TransactionCount,
    TransactionDetails,
    U8Value,
    U32Value,
    Voltage,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
s32 = st.integers(-(2**31), 2**31 - 1)
ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)


def enum_or_unknown(
    enum_type: type[BacklightSetting | LoadSwitchSetting | DayOfWeek],
) -> st.SearchStrategy[int]:
    known = {int(m) for m in enum_type}
    return st.one_of(st.sampled_from(list(enum_type)), u8.filter(lambda v: v not in known))


profile_status = st.builds(ProfileStatus, *[st.booleans()] * 16)
interval_status = st.builds(IntervalStatus, *[st.booleans()] * 16)
log1_record = st.builds(ProfileLog1Record, u32, profile_status, u32, u32)
log2_single = st.builds(ProfileLog2SingleRecord, u32, profile_status, u32, u32, u32, u32)
log2_twin = st.builds(ProfileLog2TwinRecord, u32, profile_status, *[u32] * 7)


@st.composite
def profile_log_2(draw: st.DrawFn) -> ProfileLog2:
    twin = draw(st.booleans())
    record: st.SearchStrategy[ProfileLog2Record] = log2_twin if twin else log2_single
    count = 2 if twin else 3
    records = draw(st.lists(record, min_size=count, max_size=count))
    return ProfileLog2(twin, draw(u32), tuple(records), draw(st.binary(max_size=30)))


@st.composite
def three_phase_intervals(draw: st.DrawFn) -> ThreePhaseIntervals:
    channels = draw(st.lists(u24, max_size=6))
    interval = st.builds(
        IntervalRecord,
        interval_status,
        st.lists(u32, min_size=len(channels), max_size=len(channels)).map(tuple),
    )
    return ThreePhaseIntervals(
        block_is_last=draw(st.booleans()),
        block_number=draw(st.integers(0, 0x7F)),
        frame_is_last=draw(st.booleans()),
        frame_number=draw(st.integers(0, 0x7F)),
        block_start_time=draw(u32),
        interval_duration=draw(u8),
        channel_ids=tuple(channels),
        intervals=tuple(draw(st.lists(interval, max_size=8))),
    )


event_id = st.one_of(st.sampled_from(list(EventId)), u8.filter(lambda v: v not in set(EventId)))

RECORDS: dict[type[Record], st.SearchStrategy[Record]] = {
    Serial: st.builds(Serial, ascii_text),
    HardwareVersion: st.builds(HardwareVersion, ascii_text),
    FirmwareVersion: st.builds(FirmwareVersion, st.lists(u8, max_size=8).map(tuple)),
    ThreePhaseHardwareConfiguration: st.builds(
        ThreePhaseHardwareConfiguration,
        st.sampled_from(list(MeterType)),
        st.sampled_from(list(MiddleOutputTerminals)),
        *[st.sampled_from(list(Fitted))] * 6,
        unused=st.binary(min_size=3, max_size=3),
    ),
    ClockTime: st.builds(ClockTime, u8, u8, u8, u8, u8, u8, enum_or_unknown(DayOfWeek)),
    CsqNetOp: st.builds(CsqNetOp, st.integers(0, 7), st.integers(0, 31)),
    Voltage: st.builds(Voltage, u16),
    ActivePower: st.builds(ActivePower, u16),
    PrepayBalance: st.builds(PrepayBalance, s32),
    Flag: st.builds(Flag, u8),
    Backlight: st.builds(Backlight, enum_or_unknown(BacklightSetting)),
    LoadSwitch: st.builds(LoadSwitch, enum_or_unknown(LoadSwitchSetting)),
    Registers: st.builds(Registers, u32, u32, u32, u32),
    U32Value: st.builds(U32Value, u32),
    U8Value: st.builds(U8Value, u8),
    ThresholdMask: st.builds(ThresholdMask, *[st.booleans()] * 8),
    ThresholdValues: st.builds(ThresholdValues, *[u16] * 7),
    TransactionCount: st.builds(TransactionCount, u16),
    TransactionDetails: st.builds(TransactionDetails, st.binary(min_size=8, max_size=8), u32, s32),
    TimeSwitches: st.builds(TimeSwitches, st.binary(min_size=80, max_size=80)),
    TopUpToken: st.builds(TopUpToken, st.text("0123456789", min_size=1, max_size=30)),
    RawPayload: st.builds(RawPayload, st.binary(max_size=60)),
    ProfileLog1: st.builds(
        ProfileLog1,
        u32,
        st.lists(log1_record, min_size=4, max_size=4).map(tuple),
        st.binary(max_size=30),
    ),
    ProfileLog2: profile_log_2(),
    EventLog: st.builds(
        EventLog,
        st.binary(min_size=3, max_size=3),
        u8,
        st.lists(st.builds(Event, u32, event_id, u8), max_size=10).map(tuple),
    ),
    ThreePhaseIntervals: three_phase_intervals(),
}

addresses = st.builds(Address, u8, u24)

requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(ReadRequest, u24),
    st.builds(WriteRequest, u24, st.binary(max_size=238)),
    st.builds(ProfileLogRequest, st.sampled_from([1, 2]), u32),
    st.builds(EventLogRequest, st.integers(0, 9)),
    st.builds(ThreePhaseIntervalsRequest, u32, u32, u8),
)

frames = st.builds(
    Frame,
    addresses,
    addresses,
    u8,
    st.binary(min_size=1, max_size=243),
)
