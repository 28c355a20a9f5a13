"""The object catalogue against the vector file's 213 names."""

from __future__ import annotations

import pytest

from flowsd.emop import OBJECTS, UnknownObjectError, by_id, by_name, object_id
from flowsd.emop.objects import Quantity, parse_object_ref
from tests.emop import vectors


def test_catalogue_matches_the_reference_enum() -> None:
    expected = vectors.document()["object_ids"]
    assert {o.name: o.hex for o in OBJECTS} == expected
    assert len(OBJECTS) == 213 == len({o.id for o in OBJECTS})


def test_lookups() -> None:
    assert object_id("prepay_balance") == 0xFFC802
    assert by_name("serial").triplet == "96.1.0"
    info = by_id(0xFFF939)
    assert info is not None and info.name == "tariff_active_block_8_rate_1"
    assert info.quantity is Quantity.MONEY
    assert by_id(0x800309) is None
    with pytest.raises(UnknownObjectError):
        by_name("no_such_object")


@pytest.mark.parametrize(
    ("text", "oid"),
    [
        ("prepay_balance", 0xFFC802),
        ("ffc802", 0xFFC802),
        ("0xFFC802", 0xFFC802),
        ("255.200.2", 0xFFC802),
    ],
)
def test_object_references(text: str, oid: int) -> None:
    assert parse_object_ref(text) == oid


@pytest.mark.parametrize("text", ["", "256.0.0", "ffc8", "balance"])
def test_bad_object_references(text: str) -> None:
    with pytest.raises(UnknownObjectError):
        parse_object_ref(text)
