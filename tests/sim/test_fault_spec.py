"""The --faults syntax and the determinism of fault draws."""

from __future__ import annotations

import pytest

from flowsd.sim.faults import Fault, FaultKind, FaultPlan, FaultSpecError, parse_rule


def test_issue_example_parses() -> None:
    plan = FaultPlan.parse(
        "refuse=0.02,blackhole=0.01,slow=0.05:8s,badcrc=0.01,truncate=0.01,garbage=0.01,"
        "split=0.05,trickle=0.01,nak=0.01,offline=0.03"
    )
    assert {r.kind for r in plan.rules} == set(FaultKind) - {FaultKind.TOOSOON}
    slow = plan.rule_for(FaultKind.SLOW, 0, "EML1")
    assert slow is not None
    assert (slow.probability, slow.parameter) == (0.05, 8.0)


@pytest.mark.parametrize(
    ("text", "kind", "probability", "parameter", "target"),
    [
        ("badcrc@3=1.0", FaultKind.BADCRC, 1.0, 0.0, 3),
        ("nak@2-5=0.5:6", FaultKind.NAK, 0.5, 6.0, (2, 5)),
        ("slow@EML2200000007=1:250ms", FaultKind.SLOW, 1.0, 0.25, "EML2200000007"),
        ("offline=0.1:1h", FaultKind.OFFLINE, 0.1, 3600.0, None),
        ("toosoon=1", FaultKind.TOOSOON, 1.0, 2.0, None),
        ("trickle=0.2:1.5", FaultKind.TRICKLE, 0.2, 1.5, None),
    ],
)
def test_rules_parse(
    text: str, kind: FaultKind, probability: float, parameter: float, target: object
) -> None:
    rule = parse_rule(text)
    assert (rule.kind, rule.probability, rule.parameter, rule.target) == (
        kind, probability, parameter, target,
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["bogus=0.1", "refuse=1.5", "refuse=-1", "slow=1:fast", "badcrc=1:3", "nak=1:99",
     "split=1:1", "refuse", "refuse@=1", "refuse@5-2=1", "refuse=x"],
)  # fmt: skip
def test_bad_rules_are_rejected(text: str) -> None:
    with pytest.raises(FaultSpecError):
        FaultPlan.parse(text)


def test_targeted_rule_replaces_the_fleet_wide_one() -> None:
    plan = FaultPlan.parse("nak=0.5,nak@3=1:7,nak@EML9=0")
    assert plan.draw(1, 3, "EMLx", 1) == Fault(FaultKind.NAK, 7.0)
    assert plan.rule_for(FaultKind.NAK, 4, "EML9") == parse_rule("nak@EML9=0")
    assert all(plan.draw(1, 4, "EML9", n) is None for n in range(200))


def test_draws_are_deterministic_per_seed_and_match_the_probability() -> None:
    plan = FaultPlan.parse("badcrc=0.1")
    first = [plan.draw(11, 2, "s", n) for n in range(5_000)]
    again = [plan.draw(11, 2, "s", n) for n in range(5_000)]
    other_seed = [plan.draw(12, 2, "s", n) for n in range(5_000)]
    assert first == again
    assert first != other_seed
    hits = sum(1 for f in first if f is not None)
    assert 400 <= hits <= 600


def test_empty_spec_means_no_faults() -> None:
    assert not FaultPlan.parse("")
    assert not FaultPlan.parse(None)
