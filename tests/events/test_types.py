"""The event catalogue: stable tags and ids, versioned decoding, deterministic keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest

from flowsd.events import types as t
from flowsd.events.codec import (
    KeyedBatch,
    decode_body,
    decode_from_spill,
    encode_for_spill,
    key_batch,
    payload_json,
)

METER = uuid.UUID("6a1f0c8e-59d3-4f57-9a57-0f3c2d1b9e11")
WHEN = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)

ACTIVE = t.ActiveTariff(
    standing_charge_gbp=Decimal("0.51082"),
    unit_rate_a_gbp=Decimal("0.2843"),
    unit_rate_b_gbp=Decimal("0.2843"),
    emergency_credit_gbp=Decimal("15"),
    ecredit_availability_gbp=Decimal("5"),
    debt_recovery_rate_gbp=Decimal("0.5"),
    threshold_mask=(False,) * 8,
    threshold_values=(0,) * 7,
)
FUTURE = t.FutureTariff(
    standing_charge_gbp=Decimal("0.6"),
    unit_rate_a_gbp=Decimal("0.3"),
    unit_rate_b_gbp=Decimal("0.3"),
    emergency_credit_gbp=Decimal("15"),
    ecredit_availability_gbp=Decimal("5"),
    debt_recovery_rate_gbp=Decimal("0.5"),
    activation_datetime=datetime(2026, 4, 1),
)

# One instance of every body class, with every field set.
SAMPLES: list[t.AnyBody] = [
    t.MeterLogEntry(emlite_type_id=48, event_set=4),
    t.BalanceRead(balance_gbp=Decimal("-3.26"), emergency_credit_gbp=Decimal("15")),
    t.SignalQualityRead(csq=17, network_operator=1),
    t.VoltageRead(voltage_v=Decimal("240.1")),
    t.ThreePhaseVoltageRead(l1_v=Decimal("239.9"), l2_v=None, l3_v=Decimal("241.0")),
    t.ClockRead(meter_time=WHEN + timedelta(seconds=42), drift_seconds=42.0),
    t.RegisterRead(
        element="B",
        import_active_wh=123456,
        export_active_wh=7,
        import_reactive_varh=1,
        export_reactive_varh=2,
    ),
    t.ThreePhaseRegisterRead(counts_per_kwh=10000, active_import=5, active_export=None),
    t.ActiveTariffRead(tariff=ACTIVE),
    t.FutureTariffRead(tariff=FUTURE),
    t.IdentityRead(
        serial="EML2137580826", hardware="C1.w", hardware_raw="6Cw", firmware_version="3_03_2"
    ),
    t.FlagsRead(prepay_enabled=False, daylight_savings_correction_enabled=True),
    t.BacklightRead(raw=0, setting="normal_sp"),
    t.LoadSwitchRead(raw=119, setting="no_button_credit_mode"),
    t.ProfileLog1Record(status=0x0080, import_a_wh=10, import_b_wh=20),
    t.ProfileLog2Record(
        status=0x0100, export_a_wh=1, reactive_import_a_varh=2, reactive_export_a_varh=3
    ),
    t.ThreePhaseIntervalRecord(
        profile=0, interval_minutes=30, status=0x0080, counts_per_kwh=1000, values={"d79600": 5}
    ),
    t.BalanceChanged(previous_gbp=Decimal("1"), balance_gbp=Decimal("21")),
    t.FutureTariffChanged(previous=None, tariff=FUTURE),
    t.TariffActivated(previous=None, tariff=ACTIVE),
    t.MeterWentOffline(consecutive_failures=3, last_error="timeout", last_answer_at=WHEN),
    t.MeterCameOnline(offline_since=WHEN),
    t.HealthChanged(previous="healthy", health="unhealthy", details="deadline exceeded"),
    t.FirmwareChanged(previous="3_02_0", firmware_version="3_03_2"),
    t.HardwareChanged(previous=None, hardware="C1.w"),
    t.SerialChanged(previous=None, serial="EML2137580826"),
    t.PrepayModeChanged(previous=True, prepay_enabled=False),
    t.ClockDriftThresholdCrossed(drift_seconds=75.0, threshold_seconds=60.0, above=True),
    t.DaylightSavingsCorrectionChanged(previous=False, enabled=True),
    t.CommandRequested(
        command_id=uuid.UUID("00000000-0000-4000-8000-000000000007"),
        source="grpc",
        client="CN=ops-tool,OU=internal",
        operation="top_up",
        objects=("prepay_token_send",),
        payload_sha256="ab" * 32,
    ),
    t.CommandSucceeded(
        command_id=uuid.UUID("00000000-0000-4000-8000-000000000007"),
        operation="top_up",
        writes=1,
        readback={"before:prepay_balance": "3.2", "prepay_balance": "28.2"},
        duration_seconds=4.2,
    ),
    t.CommandFailed(
        command_id=uuid.UUID("00000000-0000-4000-8000-000000000008"),
        operation="future_tariff",
        reason="read_timeout",
        writes_acknowledged=5,
        writes_total=11,
        interrupted=True,
    ),
]


def test_every_body_class_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(t.BODY_CLASSES)


def test_type_ids_names_and_tags_are_unique_and_in_their_ranges() -> None:
    own = [cls for cls in t.BODY_CLASSES if cls is not t.MeterLogEntry]
    ids = [cls.TYPE_ID for cls in own]
    assert len(set(ids)) == len(ids)
    assert len({cls.NAME for cls in own}) == len(own)
    tags = [msgspec.inspect.type_info(cls).tag for cls in t.BODY_CLASSES]  # type: ignore[attr-defined]
    assert len(set(tags)) == len(tags)
    for cls in own:
        ranges = (t.READING_TYPE_IDS, t.STATE_CHANGE_TYPE_IDS, t.COMMAND_TYPE_IDS)
        assert any(cls.TYPE_ID in r for r in ranges)
        assert (cls.TYPE_ID in t.COMMAND_TYPE_IDS) == cls.NAME.startswith("COMMAND_")
        assert str(msgspec.inspect.type_info(cls).tag).upper() == cls.NAME  # type: ignore[attr-defined]
        assert (cls.TYPE_ID in t.READING_TYPE_IDS) == cls.NAME.endswith(("_READ", "_RECORD"))


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: type(b).__name__)
def test_event_round_trips_through_spill_and_payload(body: t.AnyBody) -> None:
    event = t.Event(meter_id=METER, observed_at=WHEN, read_at=WHEN, body=body)
    assert decode_from_spill(encode_for_spill(event)) == event
    decoded = decode_body(event.type_id, getattr(body, "event_set", None), payload_json(body))
    assert decoded == body


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: type(b).__name__)
def test_payload_written_before_optional_fields_existed_still_decodes(body: t.AnyBody) -> None:
    """Drop every field that has a default: that is what an older flowsd wrote."""
    if isinstance(body, t.MeterLogEntry):
        return
    info = msgspec.inspect.type_info(type(body))
    assert isinstance(info, msgspec.inspect.StructType)
    document = msgspec.json.decode(payload_json(body) or "")
    for field in info.fields:
        if not field.required:
            document.pop(field.encode_name, None)
    decoded = decode_body(body.type_id(), None, msgspec.json.encode(document).decode())
    assert type(decoded) is type(body)


def test_payload_written_by_a_newer_version_decodes_ignoring_new_fields() -> None:
    payload = '{"type":"balance_read","balance_gbp":"1.5","credit_token":"1234","v2_field":[1]}'
    assert decode_body(1001, None, payload) == t.BalanceRead(balance_gbp=Decimal("1.5"))


def test_unknown_type_decodes_to_unknown_body() -> None:
    body = decode_body(1999, None, '{"type":"from_the_future"}')
    assert isinstance(body, t.UnknownBody)
    assert body.type_id == 1999


def test_a_payload_that_does_not_fit_its_type_decodes_to_unknown_body() -> None:
    """Every reader of the log takes it so (projectors skip it): never a crash."""
    for payload in ('{"type":"balance_read","balance_gbp":"not money"}', "[1, 2"):
        body = decode_body(1001, None, payload)
        assert body == t.UnknownBody(type_id=1001, payload=payload.encode())


# Payloads as this version writes them. They must decode forever: never edit an entry, add new
# ones when a type or field is added.
GOLDEN = {
    1001: '{"type":"balance_read","balance_gbp":"12.34567","emergency_credit_gbp":null}',
    1002: '{"type":"signal_quality_read","csq":17,"network_operator":1}',
    1006: '{"type":"register_read","element":"A","import_active_wh":5,"export_active_wh":0,'
    '"import_reactive_varh":null,"export_reactive_varh":null}',
    1014: '{"type":"profile_log_1_record","status":128,"import_a_wh":10,"import_b_wh":null}',
    1104: '{"type":"meter_went_offline","consecutive_failures":3,"last_error":"timeout",'
    '"last_answer_at":null}',
}


@pytest.mark.parametrize("type_id", sorted(GOLDEN))
def test_golden_payloads_decode(type_id: int) -> None:
    body = decode_body(type_id, None, GOLDEN[type_id])
    assert not isinstance(body, t.UnknownBody)
    assert body.type_id() == type_id
    assert payload_json(body) == GOLDEN[type_id]


def test_money_is_encoded_as_decimal_strings() -> None:
    assert payload_json(t.BalanceRead(balance_gbp=Decimal("0.10"))) == (
        '{"type":"balance_read","balance_gbp":"0.10","emergency_credit_gbp":null}'
    )


def test_idempotency_key_is_deterministic_and_uses_meter_facts_only() -> None:
    first = t.Event(meter_id=METER, observed_at=WHEN, read_at=WHEN, body=SAMPLES[1])
    reread = t.Event(
        meter_id=METER, observed_at=WHEN, read_at=WHEN + timedelta(hours=1), body=SAMPLES[1]
    )
    assert first.idempotency_key() == reread.idempotency_key()
    later = t.Event(
        meter_id=METER, observed_at=WHEN + timedelta(microseconds=1), read_at=WHEN, body=SAMPLES[1]
    )
    assert later.idempotency_key() != first.idempotency_key()


def test_idempotency_key_tells_elements_and_event_sets_apart() -> None:
    def key(body: t.AnyBody) -> uuid.UUID:
        return t.Event(meter_id=METER, observed_at=WHEN, read_at=None, body=body).idempotency_key()

    a = t.RegisterRead(element="A", import_active_wh=1, export_active_wh=0)
    b = t.RegisterRead(element="B", import_active_wh=1, export_active_wh=0)
    assert key(a) != key(b)
    assert key(t.MeterLogEntry(emlite_type_id=33, event_set=1)) != key(
        t.MeterLogEntry(emlite_type_id=33, event_set=2)
    )
    assert key(t.MeterLogEntry(emlite_type_id=33, event_set=1)) != key(
        t.MeterLogEntry(emlite_type_id=34, event_set=1)
    )


# Keys computed before the key derivation was rewritten as one loop over a batch: stored logs
# and spill journals hold such keys, so the formula must never change them.
_MOMENT = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)
GOLDEN_KEYS = [
    (
        t.MeterLogEntry(emlite_type_id=33, event_set=2),
        _MOMENT,
        "019d371a-da7f-cd40-6943-6b17c1251431",
    ),
    (
        t.BalanceRead(balance_gbp=Decimal("1.5"), emergency_credit_gbp=None),
        _MOMENT,
        "019d371a-da7f-59e1-f894-e3273af63ead",
    ),
    (
        t.RegisterRead(element="B", import_active_wh=1, export_active_wh=2),
        _MOMENT.replace(tzinfo=None),
        "019d371a-da7f-c44a-800a-9410db345d90",
    ),
    (
        t.VoltageRead(voltage_v=Decimal("239.4")),
        _MOMENT.astimezone(timezone(timedelta(hours=1))),
        "019d371a-da7f-a1a1-7e20-8501ea37f636",
    ),
    (
        t.VoltageRead(voltage_v=Decimal("239.4")),
        datetime(1969, 12, 31, 23, 59, 59, 999_000, UTC),
        "ffffffff-ffff-58f5-068c-2d69b7ffe5b4",
    ),
]


@pytest.mark.parametrize(("body", "observed_at", "expected"), GOLDEN_KEYS)
def test_keys_keep_their_values(body: t.AnyBody, observed_at: datetime, expected: str) -> None:
    event = t.Event(meter_id=METER, observed_at=observed_at, read_at=None, body=body)
    assert str(event.idempotency_key()) == expected
    batch = key_batch([event, event])
    assert [str(key) for key in batch.keys] == [expected]
    assert batch.key_bytes == [uuid.UUID(expected).bytes]
    assert batch.observed_us == [t.epoch_microseconds(observed_at)]


def test_a_batch_keyed_in_parts_drops_repeats_across_parts() -> None:
    events = [
        t.Event(
            meter_id=METER,
            observed_at=WHEN + timedelta(seconds=n % 5),
            read_at=None,
            body=SAMPLES[1],
        )
        for n in range(12)
    ]
    batch = KeyedBatch(events)
    assert [batch.key(start, start + 3) for start in range(0, 12, 3)] == [3, 5, 5, 5]
    assert batch.ordinals == [0, 1, 2, 3, 4]
    assert batch.keys == [event.idempotency_key() for event in events[:5]]


def test_naive_times_are_taken_as_utc_in_keys() -> None:
    assert t.epoch_microseconds(datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000
    assert t.epoch_microseconds(WHEN) == t.epoch_microseconds(WHEN.replace(tzinfo=None))


def test_meter_log_entries_take_the_emlite_id() -> None:
    entry = t.MeterLogEntry(emlite_type_id=48, event_set=4)
    assert entry.type_id() == 48
    assert t.body_class_for(48) is t.MeterLogEntry
    assert t.body_class_for(1001) is t.BalanceRead
    assert t.body_class_for(4242) is None


def test_profile_status_bits() -> None:
    record = t.ProfileLog1Record(status=0x0180 | 0x40, import_a_wh=1)
    assert record.valid and record.reset and record.power_fail and not record.time_error


def test_meter_cache_derives_once_per_id_and_is_emptied_at_its_limit() -> None:
    derived: list[uuid.UUID] = []

    def derive(meter_id: uuid.UUID) -> str:
        derived.append(meter_id)
        return str(meter_id)

    cache = t.MeterCache(derive, limit=2)
    a, b, c = (uuid.UUID(int=n) for n in (1, 2, 3))
    assert cache[a] == str(a) and cache[a] == str(a) and cache[b] == str(b)
    assert derived == [a, b]
    assert cache[c] == str(c)  # the limit was reached: emptied, then c
    assert list(cache) == [c] and derived == [a, b, c]
    assert t.meter_text(a) == str(a)
