"""The SPEC §7 writes build exactly the reference's frames."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from flowsd.emop import EncodeError, WriteRequest, encode_request
from flowsd.emop.records import BacklightSetting, LoadSwitchSetting
from flowsd.emop.writes import (
    future_tariff_writes,
    set_backlight,
    set_clock,
    set_flag,
    set_load_switch,
    time_switches_off,
    top_up,
)
from tests.emop import vectors


def _vector_requests(vector_id: str) -> list[str]:
    vector = next(v for v in vectors.document()["vectors"] if v["id"] == vector_id)
    return [e["request_frame_hex"] for e in vector["exchanges"]]


def _wire(requests: list[WriteRequest]) -> list[str]:
    return [encode_request(r).hex() for r in requests]


def test_future_tariff_sequence() -> None:
    writes = future_tariff_writes(
        unit_rate="0.25133",
        standing_charge=Decimal("0.5831"),
        activation=datetime(2025, 7, 1, tzinfo=UTC),
    )
    assert _wire(writes) == _vector_requests("pub-write-tariffs_future_write")


@pytest.mark.parametrize(
    ("field", "amount"),
    [("unit_rate", "1.00001"), ("unit_rate", "0.123456"), ("standing_charge", "2")],
)
def test_future_tariff_prices_are_validated(field: str, amount: str) -> None:
    prices = {"unit_rate": "0.2", "standing_charge": "0.5", field: amount}
    with pytest.raises(EncodeError):
        future_tariff_writes(activation=datetime(2025, 7, 1, tzinfo=UTC), **prices)


def test_future_tariff_needs_an_aware_activation_time() -> None:
    with pytest.raises(EncodeError):
        future_tariff_writes(
            unit_rate="0.2", standing_charge="0.5", activation=datetime(2025, 7, 1)
        )


def test_top_up_clock_flags_and_settings() -> None:
    assert _wire([top_up("56904218736409127358")]) == _vector_requests(
        "pub-write-prepay_token_send"
    )
    now = datetime(2025, 6, 14, 13, 45, 40, tzinfo=UTC)
    assert _wire([set_clock(now)]) == _vector_requests("pub-write-time")
    assert _wire([set_flag("prepay_enabled_flag", False)]) == _vector_requests(
        "pub-write-prepay_enabled-off"
    )
    assert (
        _wire([set_flag("prepay_enabled_flag", True)])
        == _vector_requests("pub-write-prepay_enabled-on")[1:]
    )
    assert _wire([set_flag("daylight_savings_correction_flag", True)]) == _vector_requests(
        "pub-write-daylight_savings"
    )
    assert _wire([set_backlight(BacklightSetting.ALWAYS_ON_SP)]) == _vector_requests(
        "pub-write-backlight"
    )
    assert _wire([set_load_switch(LoadSwitchSetting.NEVER_BUTTON_REQUIRED)]) == _vector_requests(
        "pub-write-load_switch"
    )


def test_time_switches_off_and_bad_arguments() -> None:
    request = time_switches_off("b")
    assert request.payload == bytes(80)
    assert encode_request(request).hex().startswith("7e61000000000021ae4205010d00ff01")
    with pytest.raises(EncodeError):
        time_switches_off("c")
    with pytest.raises(EncodeError):
        set_flag("backlight", True)
    with pytest.raises(EncodeError):
        top_up("1234-5678")
