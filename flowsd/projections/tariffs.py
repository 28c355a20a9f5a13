"""The production JSON of ``meter_shadows.tariffs_active`` / ``tariffs_future``.

Money is a decimal string in GBP, exactly as the meter's value was recorded in the event
(e.g. ``"0.51082"``); ``threshold_mask`` / ``threshold_values`` are objects ``rate1..`` /
``th1..``; keys production always writes as null are present and null, so the
``meter_shadows_tariffs`` view and the consumers that read these columns keep working.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowsd.events.types import ActiveTariff, FutureTariff

_ACTIVE_NULL_KEYS = (
    "price_current",
    "price_index_current",
    "tou_rate",  # read by the meter poll but, as in production, not stored (SPEC §6.12)
    "gas",
    "element_b_block_rate",
    "element_b_price_index_current",
    "element_b_tou_rate_1",
    "element_b_tou_rate_2",
    "element_b_tou_rate_3",
    "element_b_tou_rate_4",
    "pricings",
)
_FUTURE_NULL_KEYS = (
    "pricings",
    "element_b_tou_rate_1",
    "element_b_tou_rate_2",
    "element_b_tou_rate_3",
    "element_b_tou_rate_4",
)


def _money_and_thresholds(tariff: ActiveTariff | FutureTariff) -> dict[str, Any]:
    plain = msgspec.to_builtins(tariff)  # Decimal -> the same string the payload holds
    return {
        "standing_charge": plain["standing_charge_gbp"],
        "unit_rate_element_a": plain["unit_rate_a_gbp"],
        "unit_rate_element_b": plain["unit_rate_b_gbp"],
        "prepayment_emergency_credit": plain["emergency_credit_gbp"],
        "prepayment_ecredit_availability": plain["ecredit_availability_gbp"],
        "prepayment_debt_recovery_rate": plain["debt_recovery_rate_gbp"],
        "threshold_mask": {f"rate{i}": v for i, v in enumerate(tariff.threshold_mask, 1)},
        "threshold_values": {f"th{i}": v for i, v in enumerate(tariff.threshold_values, 1)},
    }


def active_tariff_json(tariff: ActiveTariff) -> dict[str, Any]:
    found = _money_and_thresholds(tariff)
    found["block_rate"] = tariff.block_rate
    found["element_b_tou_rate"] = tariff.element_b_tou_rate
    found.update(dict.fromkeys(_ACTIVE_NULL_KEYS))
    return found


def future_tariff_json(tariff: FutureTariff) -> dict[str, Any]:
    found = _money_and_thresholds(tariff)
    found["activation_datetime"] = msgspec.to_builtins(tariff.activation_datetime)
    found.update(dict.fromkeys(_FUTURE_NULL_KEYS))
    return found
