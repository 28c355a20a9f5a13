"""The change detector: each kind of state change, seeded state, idempotent derivation."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from flowsd.events import types
from flowsd.ingest.detector import ChangeDetector, MeterState
from tests.ingest.helpers import METER, at, bodies, event, outcome

ACTIVE = types.ActiveTariff(
    standing_charge_gbp=Decimal("0.5"),
    unit_rate_a_gbp=Decimal("0.25"),
    unit_rate_b_gbp=Decimal("0.25"),
    emergency_credit_gbp=Decimal("15"),
    ecredit_availability_gbp=Decimal("5"),
    debt_recovery_rate_gbp=Decimal("0.1"),
)
FUTURE = types.FutureTariff(
    standing_charge_gbp=Decimal("0.55"),
    unit_rate_a_gbp=Decimal("0.27"),
    unit_rate_b_gbp=Decimal("0.27"),
    emergency_credit_gbp=Decimal("15"),
    ecredit_availability_gbp=Decimal("5"),
    debt_recovery_rate_gbp=Decimal("0.1"),
)


def detector(**seed: object) -> ChangeDetector:
    seeds = {METER: MeterState(**seed)} if seed else None  # type: ignore[arg-type]
    return ChangeDetector(clock_drift_threshold_seconds=20.0, seeds=seeds)


def test_balance_change_carries_previous_and_the_reading_time() -> None:
    d = detector()
    first = d.after_reading(event(types.BalanceRead(balance_gbp=Decimal("10.5")), t=0))
    same = d.after_reading(event(types.BalanceRead(balance_gbp=Decimal("10.50")), t=60))
    lower = d.after_reading(event(types.BalanceRead(balance_gbp=Decimal("9.25")), t=120))
    assert bodies(first) == [types.BalanceChanged(previous_gbp=None, balance_gbp=Decimal("10.5"))]
    assert same == []
    assert bodies(lower) == [
        types.BalanceChanged(previous_gbp=Decimal("10.5"), balance_gbp=Decimal("9.25"))
    ]
    assert lower[0].observed_at == at(120)


def test_seeded_state_suppresses_a_repeat_after_restart() -> None:
    d = detector(balance=Decimal("10.5"), firmware="3_03_2", prepay_enabled=False)
    assert d.after_reading(event(types.BalanceRead(balance_gbp=Decimal("10.5")))) == []
    identity = types.IdentityRead(firmware_version="3_03_2", serial=None)
    assert d.after_reading(event(identity)) == []
    assert d.after_reading(event(types.FlagsRead(prepay_enabled=False))) == []


def test_tariffs_activated_and_future_changed() -> None:
    d = detector(active_tariff=ACTIVE)
    assert d.after_reading(event(types.ActiveTariffRead(tariff=ACTIVE))) == []
    newer = msgspec.structs.replace(ACTIVE, unit_rate_a_gbp=Decimal("0.27"))
    activated = d.after_reading(event(types.ActiveTariffRead(tariff=newer), t=1))
    assert bodies(activated) == [types.TariffActivated(previous=ACTIVE, tariff=newer)]
    future = d.after_reading(event(types.FutureTariffRead(tariff=FUTURE), t=2))
    assert bodies(future) == [types.FutureTariffChanged(previous=None, tariff=FUTURE)]
    assert d.after_reading(event(types.FutureTariffRead(tariff=FUTURE), t=3)) == []


def test_identity_changes_each_field_only_when_read_and_different() -> None:
    d = detector(firmware="3_03_2", hardware="C1.w", serial="EML1")
    changes = d.after_reading(
        event(types.IdentityRead(serial="EML2", hardware="C1.w", firmware_version="3_04_0"))
    )
    assert bodies(changes) == [
        types.FirmwareChanged(previous="3_03_2", firmware_version="3_04_0"),
        types.SerialChanged(previous="EML1", serial="EML2"),
    ]
    # A poll that did not read the hardware says nothing about it.
    assert d.after_reading(event(types.IdentityRead(hardware=None, serial="EML2"))) == []
    hw = d.after_reading(event(types.IdentityRead(hardware="B1.w")))
    assert bodies(hw) == [types.HardwareChanged(previous="C1.w", hardware="B1.w")]


def test_prepay_mode_and_daylight_savings_flags() -> None:
    d = detector(prepay_enabled=True, dst_correction=False)
    changes = d.after_reading(
        event(types.FlagsRead(prepay_enabled=False, daylight_savings_correction_enabled=True))
    )
    assert bodies(changes) == [
        types.PrepayModeChanged(previous=True, prepay_enabled=False),
        types.DaylightSavingsCorrectionChanged(previous=False, enabled=True),
    ]


@pytest.mark.parametrize(
    ("drifts", "expected"),
    [
        ([5.0, 19.9, -19.9], []),
        ([25.0], [True]),
        ([25.0, 30.0, -21.0], [True]),
        ([25.0, 3.0, -20.0], [True, False, True]),
    ],
)
def test_clock_drift_crossings(drifts: list[float], expected: list[bool]) -> None:
    d = detector()
    crossings = []
    for i, drift in enumerate(drifts):
        clock = types.ClockRead(meter_time=at(i), drift_seconds=drift)
        crossings += d.after_reading(event(clock, t=i))
    assert [c.body.above for c in crossings] == expected  # type: ignore[union-attr]
    assert all(c.body.threshold_seconds == 20.0 for c in crossings)  # type: ignore[union-attr]


def test_offline_after_failures_and_online_at_first_answer() -> None:
    d = detector(online=True, health="healthy")
    failing = outcome(ok=False, online=True, failed=1, failures=1, reason="connect_timeout")
    assert [type(b) for b in bodies(d.after_poll(failing))] == [types.HealthChanged]
    down = d.after_poll(
        outcome(ok=False, online=False, t=60, failed=1, failures=3, reason="refused", detail="x")
    )
    assert [type(b) for b in bodies(down)] == [types.MeterWentOffline]
    went = down[0].body
    assert isinstance(went, types.MeterWentOffline)
    assert went.consecutive_failures == 3 and went.last_error == "refused: x"
    assert d.after_poll(outcome(ok=False, online=False, t=120, failed=1, failures=4)) == []
    back = d.after_poll(outcome(ok=True, online=True, t=180))
    assert bodies(back) == [
        types.MeterCameOnline(offline_since=at(60)),
        types.HealthChanged(previous="unhealthy", health="healthy"),
    ]
    assert back[0].observed_at == at(180)


def test_first_success_ever_is_online_and_healthy() -> None:
    d = detector()
    changes = bodies(d.after_poll(outcome(ok=True, online=True)))
    assert changes == [
        types.MeterCameOnline(offline_since=None),
        types.HealthChanged(previous=None, health="healthy"),
    ]


def test_health_follows_whether_the_meter_answered() -> None:
    d = detector(online=True, health="healthy")
    nak_only = outcome(ok=True, online=True, requests=2, failed=1)
    assert d.after_poll(nak_only) == []
    silent = outcome(
        ok=False, online=True, t=1, requests=1, failed=1, failures=1, reason="read_timeout"
    )
    assert bodies(d.after_poll(silent)) == [
        types.HealthChanged(previous="healthy", health="unhealthy", details="read_timeout")
    ]
    stopped = outcome(ok=False, online=True, t=2, requests=0, reason="stopped")
    assert d.after_poll(stopped) == []


def test_seeded_offline_meter_is_not_reported_offline_again() -> None:
    d = detector(online=False, offline_since=at(-3600), health="unhealthy")
    assert d.after_poll(outcome(ok=False, online=False, failed=1, failures=9)) == []


def test_changes_derived_twice_have_the_same_idempotency_key() -> None:
    reading = event(types.BalanceRead(balance_gbp=Decimal("3")), t=5)
    first = detector().after_reading(reading)
    again = detector().after_reading(reading)
    assert [e.idempotency_key() for e in first] == [e.idempotency_key() for e in again]
