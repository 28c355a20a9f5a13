"""The poll plan: defaults, groups, per-hardware variants and validation."""

from __future__ import annotations

import pytest

from flowsd.config import Config, PollConfig, decode_config, load_config
from flowsd.emop.hardware import Hardware, HardwareFamily, hardware_of
from flowsd.errors import ConfigError
from flowsd.meters.plan import (
    EventLogRead,
    ObjectRead,
    PollPlan,
    ProfileLogsRead,
    hardware_family,
    is_twin_element,
)
from flowsd.sim.identity import Hardware as SimHardware


def _names(plan: PollPlan, family: str, cadence: str) -> list[str]:
    for c in plan.cadences(family):  # type: ignore[arg-type]
        if c.name == cadence:
            return [i.name if isinstance(i, ObjectRead) else type(i).__name__ for i in c.items]
    return []


def test_default_single_phase_plan_is_the_production_35_requests() -> None:
    plan = PollPlan.from_config(PollConfig())
    total = sum(c.request_count for c in plan.single_phase)
    # 34 object reads + the first event-log page = the SPEC §12.2 full poll of 35 requests.
    assert total + 1 == 35
    hourly = _names(plan, "single_phase", "hourly")
    assert hourly == ["prepay_balance", "csq_net_op", "instantaneous_voltage", "EventLogRead"]
    assert "ProfileLogsRead" in _names(plan, "single_phase", "half_hourly")
    daily = _names(plan, "single_phase", "daily")
    assert daily[2:14] == [
        "tariff_active_standing_charge",
        "tariff_active_threshold_mask",
        "tariff_active_threshold_values",
        "tariff_active_block_8_rate_1",
        "tariff_active_price",
        "tariff_active_block_rate",
        "tariff_active_tou_rate",
        "tariff_active_element_b_price",
        "tariff_active_element_b_tou_rate",
        "tariff_active_prepayment_emergency_credit",
        "tariff_active_prepayment_ecredit_availability",
        "tariff_active_prepayment_debt_recovery_rate",
    ]


def test_three_phase_plan_skips_prepay_tariffs_event_log_and_load_switch() -> None:
    plan = PollPlan.from_config(PollConfig())
    names = [i for c in plan.three_phase for i in c.items]
    assert sum(c.request_count for c in plan.three_phase) == 16
    assert EventLogRead() not in names
    # Half-hourly, as on single-phase meters: a three-phase meter's interval profile.
    (half_hourly,) = [c for c in plan.three_phase if ProfileLogsRead() in c.items]
    assert half_hourly.period_seconds == 1800.0
    flat = {i.name for i in names if isinstance(i, ObjectRead)}
    assert not {n for n in flat if n.startswith(("prepay", "tariff"))}
    assert "load_switch" not in flat
    assert {"three_phase_instantaneous_voltage_l2", "three_phase_serial"} <= flat


def test_unknown_object_is_a_config_error_naming_the_key() -> None:
    poll = decode_config(b'[poll.single_phase]\nhourly = ["csq_net_op", "balance"]\n').poll
    with pytest.raises(ConfigError, match=r"poll\.single_phase\.hourly\[1\].*'balance'"):
        PollPlan.from_config(poll)


def test_unknown_cadence_and_duplicates_are_rejected() -> None:
    poll = decode_config(b'[poll.single_phase]\nweekly = ["csq_net_op"]\n').poll
    with pytest.raises(ConfigError, match="weekly"):
        PollPlan.from_config(poll)
    dup = decode_config(b'[poll.single_phase]\nhourly = ["csq_net_op", "csq_net_op"]\n').poll
    with pytest.raises(ConfigError, match="twice"):
        PollPlan.from_config(dup)


def test_hardware_families() -> None:
    assert hardware_family("C1.w") == "single_phase"
    assert hardware_family("EMA1.w") == "single_phase"
    assert hardware_family("P1.ax") == "three_phase"
    assert hardware_family("THREE_PHASE_UNKNOWN") == "three_phase"
    assert hardware_family(None) is None
    assert is_twin_element("C1.w") and not is_twin_element("B1.w")


def test_shipped_config_files_hold_the_defaults_and_a_valid_demo_plan() -> None:
    shipped = load_config("config/flowsd.toml", environ={})
    assert shipped.meters == Config().meters
    assert shipped.poll == Config().poll
    demo = load_config("config/flowsd-demo.toml", environ={})
    plan = PollPlan.from_config(demo.poll)
    # Every object of the production plans is read at least once a minute in the demo.
    production = PollPlan.from_config(PollConfig())
    families: tuple[HardwareFamily, ...] = ("single_phase", "three_phase")
    for family in families:
        wanted = {i for c in production.cadences(family) for i in c.items}
        fast = {i for c in plan.cadences(family) if c.period_seconds <= 60 for i in c.items}
        assert wanted <= fast, family
    assert demo.meters.min_gap_seconds < 2.0


def test_one_hardware_value_decides_family_elements_and_scale() -> None:
    assert hardware_of(None) is None and hardware_of("") is None
    c1w, p1cx, ax = Hardware.named("C1.w"), Hardware.named("P1.cx"), Hardware.named("AX")
    assert (c1w.family, c1w.elements, c1w.counts_per_kwh) == ("single_phase", 2, 1000)
    assert (p1cx.family, p1cx.elements, p1cx.counts_per_kwh) == ("three_phase", 1, 10_000)
    assert ax.three_phase and not ax.twin_element and ax.counts_per_kwh == 1000
    assert hardware_of("THREE_PHASE_UNKNOWN") == Hardware.named("THREE_PHASE_UNKNOWN")
    # The simulator's kinds answer from the same value.
    for kind in SimHardware:
        assert (kind.three_phase, kind.twin_element) == (
            Hardware.named(kind.value).three_phase,
            Hardware.named(kind.value).twin_element,
        )
