"""Hypothesis strategies: plausible event sequences for a few meters."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import strategies as st

from flowsd.events import types as t

BASE = datetime(2026, 3, 1, tzinfo=UTC)
SLOT = timedelta(minutes=30)

money = st.integers(-5_000_000, 50_000_000).map(lambda i: Decimal(i).scaleb(-5).normalize())
volts = st.integers(1800, 2600).map(lambda i: Decimal(i).scaleb(-1))
statuses = st.sampled_from([0x0080, 0x0080, 0x0080, 0x00C0, 0x0000, 0x0180])


@functools.cache
def active_tariff() -> st.SearchStrategy[t.ActiveTariff]:
    return st.builds(
        t.ActiveTariff,
        standing_charge_gbp=money,
        unit_rate_a_gbp=money,
        unit_rate_b_gbp=money,
        emergency_credit_gbp=money,
        ecredit_availability_gbp=money,
        debt_recovery_rate_gbp=money,
        threshold_mask=st.tuples(*[st.booleans()] * 8),
        threshold_values=st.tuples(*[st.integers(0, 100)] * 7),
        block_rate=st.none() | st.integers(0, 7),
        element_b_tou_rate=st.none() | st.integers(0, 3),
    )


@functools.cache
def future_tariff() -> st.SearchStrategy[t.FutureTariff]:
    return st.builds(
        t.FutureTariff,
        standing_charge_gbp=money,
        unit_rate_a_gbp=money,
        unit_rate_b_gbp=money,
        emergency_credit_gbp=money,
        ecredit_availability_gbp=money,
        debt_recovery_rate_gbp=money,
        activation_datetime=st.none() | st.just(datetime(2026, 4, 1)),
        threshold_mask=st.tuples(*[st.booleans()] * 8),
        threshold_values=st.tuples(*[st.integers(0, 100)] * 7),
    )


@functools.cache
def bodies(meter_index: int) -> st.SearchStrategy[Any]:
    serial = st.sampled_from([f"EML{meter_index}A", f"EML{meter_index}B"])
    wh = st.integers(0, 10_000_000)
    return st.one_of(
        st.builds(t.BalanceRead, balance_gbp=money, emergency_credit_gbp=st.none() | money),
        st.builds(t.BalanceChanged, previous_gbp=st.none() | money, balance_gbp=money),
        st.builds(t.SignalQualityRead, csq=st.integers(0, 31)),
        st.builds(t.VoltageRead, voltage_v=volts),
        st.builds(
            t.ThreePhaseVoltageRead,
            l1_v=st.none() | volts,
            l2_v=st.none() | volts,
            l3_v=st.none() | volts,
        ),
        st.builds(
            t.ClockRead,
            meter_time=st.just(BASE),
            drift_seconds=st.floats(-200, 200, allow_nan=False).map(lambda f: round(f, 1)),
        ),
        st.builds(
            t.RegisterRead,
            element=st.sampled_from(["A", "B", "SINGLE"]),
            import_active_wh=wh,
            export_active_wh=wh,
        ),
        st.builds(
            t.ThreePhaseRegisterRead,
            counts_per_kwh=st.sampled_from([1000, 10000]),
            active_import=st.none() | wh,
            active_export=st.none() | wh,
        ),
        st.builds(t.ActiveTariffRead, tariff=active_tariff()),
        st.builds(t.TariffActivated, previous=st.none(), tariff=active_tariff()),
        st.builds(t.FutureTariffRead, tariff=future_tariff()),
        st.builds(t.FutureTariffChanged, previous=st.none(), tariff=future_tariff()),
        st.builds(
            t.IdentityRead,
            serial=st.none() | serial,
            hardware=st.none() | st.sampled_from(["C1.w", "EMA1.w", "P1.ax"]),
            firmware_version=st.none() | st.sampled_from(["3_03_2", "3_04_0"]),
        ),
        st.builds(
            t.FlagsRead,
            prepay_enabled=st.none() | st.booleans(),
            daylight_savings_correction_enabled=st.none() | st.booleans(),
        ),
        st.builds(t.BacklightRead, raw=st.integers(0, 3), setting=st.sampled_from(["normal_sp"])),
        st.builds(t.LoadSwitchRead, raw=st.integers(0, 3), setting=st.none() | st.just("on")),
        st.builds(
            t.HealthChanged,
            previous=st.none(),
            health=st.sampled_from(["healthy", "unhealthy"]),
            details=st.sampled_from(["", "timeout"]),
        ),
        st.builds(
            t.MeterWentOffline, consecutive_failures=st.just(3), last_error=st.just("refused")
        ),
        st.builds(t.MeterCameOnline),
        st.builds(t.SerialChanged, previous=st.none(), serial=serial),
        st.builds(t.FirmwareChanged, previous=st.none(), firmware_version=st.just("3_05_0")),
        st.builds(t.PrepayModeChanged, previous=st.none(), prepay_enabled=st.booleans()),
        st.builds(t.MeterLogEntry, emlite_type_id=st.just(33), event_set=st.integers(0, 9)),
    )


@st.composite
def profile_event(draw: st.DrawFn, meter: uuid.UUID) -> t.Event:
    slot = draw(st.integers(0, 8))
    at = BASE + slot * SLOT
    base = slot * 400 + draw(st.sampled_from([0, 0, 0, -5000, 37]))
    status = draw(statuses)
    kind = draw(st.integers(0, 2))
    if kind == 2:
        # A three-phase interval record, stamped with its interval's start; some of another
        # profile or length, some without the export channel.
        values = {"d79600": max(base, 0) * 2 + draw(st.sampled_from([0, 1]))}
        if draw(st.booleans()):
            values["d79601"] = max(base // 3, 0) * 2
        body: Any = t.ThreePhaseIntervalRecord(
            profile=draw(st.sampled_from([0, 0, 0, 1])),
            interval_minutes=draw(st.sampled_from([30, 30, 30, 15])),
            status=status,
            counts_per_kwh=draw(st.sampled_from([1000, 10000])),
            values=values,
        )
    elif kind == 1:
        body = t.ProfileLog1Record(
            status=status,
            import_a_wh=max(base, 0),
            import_b_wh=draw(st.none() | st.just(max(base // 2, 0))),
        )
    else:
        body = t.ProfileLog2Record(
            status=status,
            export_a_wh=max(base // 3, 0),
            reactive_import_a_varh=0,
            reactive_export_a_varh=0,
            export_b_wh=draw(st.none() | st.just(max(base // 4, 0))),
        )
    return t.Event(meter_id=meter, observed_at=at, read_at=at + timedelta(minutes=5), body=body)


@st.composite
def event_sequences(draw: st.DrawFn, meters: list[uuid.UUID], max_size: int = 40) -> list[t.Event]:
    events: list[t.Event] = []
    for _ in range(draw(st.integers(0, max_size))):
        index = draw(st.integers(0, len(meters) - 1))
        meter = meters[index]
        if draw(st.integers(0, 2)) == 0:
            events.append(draw(profile_event(meter)))
            continue
        minute = draw(st.integers(0, 6 * 60))
        at = BASE + timedelta(minutes=minute)
        body = draw(bodies(index))
        if isinstance(body, t.IdentityRead | t.SerialChanged) and body.serial is not None:
            # Serials are unique in meter_registry: keep each meter's to itself.
            body = msgspec.structs.replace(body, serial=f"{meter.hex[:12]}{body.serial}")
        events.append(t.Event(meter_id=meter, observed_at=at, read_at=at, body=body))
    return events


def split_points(draw: st.DrawFn, size: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, size), max_size=5))
    return sorted(set(cuts))


def split(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    parts, start = [], 0
    for cut in [*cuts, len(items)]:
        parts.append(items[start:cut])
        start = cut
    return [p for p in parts if p] or [[]]
