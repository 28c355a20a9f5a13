"""Which active registry rows are dialled: hosts compared without masks, unusable addresses
and second rows for one device set aside with a reason, the oldest row dialled."""

from __future__ import annotations

import uuid

import pytest

from flowsd.meters.dialplan import (
    RegistryRow,
    address_problem,
    dial_plan,
    normalise,
    route_problem,
)


def _row(serial: str | None, address: str | None) -> RegistryRow:
    return RegistryRow(uuid.uuid4(), serial, address, "C1.w")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        (None, "no_address"),
        ("", "no_address"),
        ("not an address", "wrong_family"),
        ("2001:db8::1", "wrong_family"),
        ("0.0.0.0", "unspecified_address"),
        ("0.1.2.3", "unspecified_address"),
        ("255.255.255.255", "not_unicast"),
        ("224.0.0.9", "not_unicast"),
        ("240.0.0.1", "not_unicast"),
    ],
)
def test_addresses_that_cannot_be_a_meters(address: str | None, kind: str) -> None:
    problem = address_problem(address)
    assert problem is not None and problem[0] == kind


def test_masks_and_mapped_addresses_are_the_host() -> None:
    assert str(normalise("10.1.2.3/24")) == "10.1.2.3"
    assert str(normalise("::ffff:10.1.2.3")) == "10.1.2.3"
    assert address_problem("::ffff:10.1.2.3") is None
    assert address_problem("127.0.0.1") is None


def test_one_device_is_dialled_once_under_the_oldest_row() -> None:
    rows = [
        _row("EML1", "10.0.0.1"),
        _row("EML2", "10.0.0.1/24"),  # the same host, masked
        _row(" eml1 ", "10.0.0.2"),  # the same serial
        _row("EML3", "::ffff:10.0.0.3"),
        _row("EML4", "10.0.0.3"),  # the same host as the mapped one
        _row("EML5", None),
        _row(None, "10.0.0.6"),
    ]
    plan = dial_plan(rows, unroutable=lambda a: "no route" if a == "10.0.0.6" else None)
    assert [(m.serial, m.ip_address) for m in plan.dialled] == [
        ("EML1", "10.0.0.1"),
        ("EML3", "10.0.0.3"),
    ]
    kinds = {m.serial: m.kind for m in plan.not_dialled}
    assert kinds == {
        "EML2": "duplicate_address",
        " eml1 ": "duplicate_serial",
        "EML4": "duplicate_address",
        "EML5": "no_address",
        None: "unreachable_network",
    }
    reason = next(m.reason for m in plan.not_dialled if m.serial == "EML2")
    assert reason.startswith("address 10.0.0.1 is also meter EML1 (")


def test_the_route_check_asks_the_routing_table_only() -> None:
    assert route_problem("127.0.0.1") is None  # loopback is always routable
