"""Record codecs: round trips for every record type, the SPEC's examples, the units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsd.emop import OBJECTS, EmopError, EncodeError, Layout, PayloadError, record_type
from flowsd.emop.codec import RECORD_TYPES
from flowsd.emop.records import (
    Backlight,
    ClockTime,
    CsqNetOp,
    DayOfWeek,
    EventLog,
    FirmwareVersion,
    HardwareVersion,
    IntervalStatus,
    LoadSwitch,
    PrepayBalance,
    ProfileLog1,
    ProfileLog1Record,
    ProfileLog2,
    ProfileLog2TwinRecord,
    ProfileStatus,
    Record,
    Registers,
    Serial,
    ThreePhaseHardwareConfiguration,
    ThreePhaseIntervals,
    TopUpToken,
    U32Value,
    Voltage,
)
from flowsd.emop.records.profile import VALID
from flowsd.emop.units import gbp, gbp_to_raw, three_phase_kw, three_phase_kwh, to_emop_seconds
from tests.emop.strategies import RECORDS

BODY_TYPES = {ProfileLog1, ProfileLog2, EventLog, ThreePhaseIntervals}


def test_every_record_type_has_a_strategy() -> None:
    assert set(RECORD_TYPES.values()) | BODY_TYPES == set(RECORDS)


@pytest.mark.parametrize("record_cls", list(RECORDS), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_record_round_trip(record_cls: type[Record], data: st.DataObject) -> None:
    record = data.draw(RECORDS[record_cls])
    encoded = record.encode()
    if isinstance(record, ProfileLog2):
        assert ProfileLog2.decode_layout(encoded, twin=record.is_twin_element) == record
    else:
        assert record_cls.decode(encoded) == record
    assert isinstance(encoded, bytes)


@pytest.mark.parametrize("record_cls", list(RECORDS), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=120))
def test_decoding_arbitrary_payload_raises_only_codec_errors(
    record_cls: type[Record], payload: bytes
) -> None:
    try:
        record = record_cls.decode(payload)
    except PayloadError:
        return
    # whatever decodes re-encodes to the bytes it used (a prefix of the payload)
    assert payload.startswith(record.encode())


def test_every_catalogue_object_has_a_record_type() -> None:
    assert len(OBJECTS) == 213
    for info in OBJECTS:
        assert record_type(info) is RECORD_TYPES[info.layout]
    raw = [o for o in OBJECTS if o.layout is Layout.RAW]
    assert len(raw) == 20


@pytest.mark.parametrize(("byte", "operator", "csq"), [(0x30, 1, 16), (0x4C, 2, 12), (0x29, 1, 9)])
def test_csq_examples(byte: int, operator: int, csq: int) -> None:
    assert CsqNetOp.decode(bytes((byte,))) == CsqNetOp(operator, csq)


def test_balance_is_signed_and_in_gbp() -> None:
    assert PrepayBalance.decode(bytes.fromhex("e0930400")).gbp == Decimal("3")
    debt = PrepayBalance.decode(bytes.fromhex("c07a03fe"))
    assert debt.balance == -33_326_400
    assert debt.gbp == Decimal("-333.264")
    assert str(gbp(1_523_456)) == "15.23456"
    assert str(gbp(1_500_000)) == "15"


def test_money_encoding_truncates_and_refuses_negative() -> None:
    assert gbp_to_raw("0.251339") == 25133
    assert gbp_to_raw(Decimal("15.00")) == 1_500_000
    with pytest.raises(EncodeError):
        gbp_to_raw("-1")
    with pytest.raises(EncodeError):
        gbp_to_raw("lots")


def test_voltage_raw_kept_and_volts_scaled() -> None:
    voltage = Voltage.decode(bytes.fromhex("5e09"))
    assert (voltage.voltage, voltage.volts) == (2398, 239.8)


def test_register_reads_in_kwh() -> None:
    payload = bytes.fromhex("31324a00") + (12045).to_bytes(4, "little") + bytes(8)
    registers = Registers.decode(payload)
    assert registers.kwh()["import_active"] == 4862.513
    assert registers.kwh()["export_active"] == 12.045


def test_clock_set_payload_matches_spec_example() -> None:
    moment = datetime(2025, 6, 14, 13, 45, 40, tzinfo=UTC)
    clock = ClockTime.from_datetime(moment)
    assert clock.encode().hex() == "19060e0d2d2806"
    assert clock.day_of_week is DayOfWeek.SATURDAY
    assert clock.to_datetime() == moment
    bst = moment.astimezone(timezone(timedelta(hours=1)))
    assert ClockTime.from_datetime(bst) == clock
    with pytest.raises(EncodeError):
        ClockTime.from_datetime(datetime(2025, 6, 14))


def test_real_meter_clock_is_sunday() -> None:
    clock = ClockTime.decode(bytes.fromhex("17080615000100"))
    assert clock.day_of_week is DayOfWeek.SUNDAY
    assert clock.to_datetime() == datetime(2023, 8, 6, 21, 0, 1, tzinfo=UTC)
    with pytest.raises(PayloadError):
        ClockTime(25, 13, 1, 0, 0, 0, 0).to_datetime()


def test_unknown_enum_values_stay_integers() -> None:
    assert Backlight.decode(b"\x50").setting == 0x50
    assert not isinstance(Backlight.decode(b"\x50").setting, Backlight)
    assert LoadSwitch.decode(b"\x01").setting == 1
    assert ClockTime.decode(bytes(6) + b"\x09").day_of_week == 9


@pytest.mark.parametrize(
    ("raw", "model"),
    [
        ("6Cw ", "C1.w"),
        ("6C\0\0", "C1.w"),
        ("3Aw ", "EMA1.w"),
        ("6Bw ", "B1.w"),
        ("1\0\0\0", "SINGLE_PHASE_UNKNOWN"),
        ("", "THREE_PHASE"),
    ],
)
def test_hardware_models(raw: str, model: str) -> None:
    hardware = HardwareVersion.decode(raw.encode("ascii"))
    assert hardware.model == model
    assert hardware.is_twin_element == (model == "C1.w")


def test_firmware_text() -> None:
    assert FirmwareVersion.decode(b"3032").text == "3_03_2"
    assert FirmwareVersion.decode(b"3020").text == "3_02_0"
    assert FirmwareVersion.decode(bytes.fromhex("0107")).text == "0107"


def test_three_phase_configuration_model() -> None:
    assert ThreePhaseHardwareConfiguration.decode(bytes.fromhex("bc000000")).model == "P1.ax"
    assert ThreePhaseHardwareConfiguration.decode(bytes.fromhex("3c000000")).model == "P1.cx"


def test_strings_must_be_ascii() -> None:
    with pytest.raises(PayloadError, match="not ASCII"):
        Serial.decode("EMLé".encode())
    with pytest.raises(EncodeError):
        Serial("EMLé").encode()
    with pytest.raises(EncodeError):
        TopUpToken("12ab").encode()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (U32Value(-1), "out of range"),
        (U32Value(2**32), "out of range"),
        (CsqNetOp(8, 0), "out of range"),
        (PrepayBalance(2**31), "out of range"),
    ],
)
def test_out_of_range_values_are_encode_errors(record: Record, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        record.encode()


def test_short_payloads_are_payload_errors() -> None:
    for cls in (Registers, U32Value, PrepayBalance, ClockTime, ProfileLog1, EventLog):
        with pytest.raises(PayloadError):
            cls.decode(b"\x01")
    with pytest.raises(EmopError):
        ThreePhaseIntervals.decode(bytes(8) + b"\x01")


def test_timestamps_need_a_timezone() -> None:
    assert to_emop_seconds(datetime(2025, 6, 13, tzinfo=UTC)) == 803_088_000
    with pytest.raises(EncodeError):
        to_emop_seconds(datetime(2025, 6, 13))
    with pytest.raises(EncodeError):
        to_emop_seconds(datetime(1999, 12, 31, tzinfo=UTC))


def test_three_phase_scaling() -> None:
    assert three_phase_kw(4200, ct_operated=False) == 4.2
    assert three_phase_kw(4200, ct_operated=True) == 0.42
    assert three_phase_kwh(123_456_789, ct_operated=False) == 123_456.789


def test_interval_start_times() -> None:
    block = ThreePhaseIntervals(True, 1, True, 1, 803_001_600, 30, (0xD79600,), ())
    assert block.interval_start(3) == datetime(2025, 6, 12, 1, 30, tzinfo=UTC)


def test_profile_log_1_encodes_the_five_records_a_meter_sends() -> None:
    records = tuple(ProfileLog1Record(1800 * (i + 1), VALID, 100 + i, 200 + i) for i in range(5))
    body = ProfileLog1.padded(1800, records).encode()
    assert len(body) == 4 + 80
    decoded = ProfileLog1.decode(body)
    assert decoded.records == records[:4]  # the reference's four
    assert decoded.extra[:14] == records[4].timestamp.to_bytes(4, "little") + bytes((0, 0x80)) + (
        (104).to_bytes(4, "little") + (204).to_bytes(4, "little")
    )
    assert decoded.extra[14:] == bytes(10)
    assert decoded.encode() == body
    with pytest.raises(EncodeError, match="at most 5"):
        ProfileLog1(1800, records + records[:1]).encode()
    twin = ProfileLog2TwinRecord(1800, VALID, 1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(EncodeError, match="at most 2"):
        ProfileLog2(True, 1800, (twin,) * 3).encode()


@given(raw=st.binary(min_size=2, max_size=2))
def test_status_words_decode_to_shared_values_and_encode_back(raw: bytes) -> None:
    """Decoded statuses are shared per word and kind (a back-fill decodes thousands of
    records with a handful of words), and any status, decoded or built, encodes to its word."""
    profile, interval = ProfileStatus.from_bytes(raw), IntervalStatus.from_bytes(raw)
    assert ProfileStatus.from_bytes(raw) is profile and type(interval) is IntervalStatus
    assert profile.to_bytes() == interval.to_bytes() == raw
    built = ProfileStatus(*(bool(raw[i // 8] & (0x80 >> i % 8)) for i in range(16)))
    assert built == profile and built.to_bytes() == raw
