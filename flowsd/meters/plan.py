"""The poll plan: which objects are read at which cadence, per kind of hardware.

Built once from ``[poll]`` (:class:`flowsd.config.PollConfig`) and validated against the
codec's object catalogue, so a typo fails at start-up with the TOML key that holds it.
Plan items are plain object reads, or one of the groups ``tariffs_active`` (12 reads, the
order of the production sync job), ``tariffs_future`` (9 reads), ``event_log`` (paged from
the last seen event) and ``profile_logs`` (half-hourly profile logs 1 and 2 with backfill; a
three-phase meter's interval profile).
"""

from __future__ import annotations

import msgspec

from flowsd.config import PollConfig
from flowsd.emop import UnknownObjectError, by_name
from flowsd.emop.hardware import HardwareFamily, hardware_of
from flowsd.errors import ConfigError

TARIFFS_ACTIVE = (
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
)
TARIFFS_FUTURE = (
    "tariff_future_standing_charge",
    "tariff_future_activation_datetime",
    "tariff_future_threshold_mask",
    "tariff_future_threshold_values",
    "tariff_future_block_8_rate_1",
    "tariff_future_element_b_tou_rate_1",
    "tariff_future_prepayment_emergency_credit",
    "tariff_future_prepayment_ecredit_availability",
    "tariff_future_prepayment_debt_recovery_rate",
)
OBJECT_GROUPS: dict[str, tuple[str, ...]] = {
    "tariffs_active": TARIFFS_ACTIVE,
    "tariffs_future": TARIFFS_FUTURE,
}
EVENT_LOG = "event_log"
PROFILE_LOGS = "profile_logs"


def hardware_family(hardware: str | None) -> HardwareFamily | None:
    """Single- or three-phase from a registry hardware string; None when not known yet."""
    known = hardware_of(hardware)
    return None if known is None else known.family


def is_twin_element(hardware: str | None) -> bool:
    """Twin-element meters (C1.w) have an element B and the wide profile-log-2 layout."""
    known = hardware_of(hardware)
    return known is not None and known.twin_element


class ObjectRead(msgspec.Struct, frozen=True):
    """Read one object with the default format."""

    name: str
    object_id: int


class EventLogRead(msgspec.Struct, frozen=True):
    """Page through the meter's event log from the last seen entry."""


class ProfileLogsRead(msgspec.Struct, frozen=True):
    """Read profile logs 1 and 2 (three-phase: the interval profile) for every completed half
    hour not stored yet."""


PlanItem = ObjectRead | EventLogRead | ProfileLogsRead


class Cadence(msgspec.Struct, frozen=True):
    """A named period and what is read at it."""

    name: str
    period_seconds: float
    items: tuple[PlanItem, ...]

    @property
    def request_count(self) -> int:
        """Requests for the object reads (event log and profile logs vary and are not counted)."""
        return sum(1 for item in self.items if isinstance(item, ObjectRead))


class PollPlan(msgspec.Struct, frozen=True):
    """Cadences per hardware family, each with its items in reading order."""

    single_phase: tuple[Cadence, ...]
    three_phase: tuple[Cadence, ...]

    def cadences(self, family: HardwareFamily) -> tuple[Cadence, ...]:
        return self.single_phase if family == "single_phase" else self.three_phase

    def cadence_names(self) -> tuple[str, ...]:
        names = {c.name for c in self.single_phase} | {c.name for c in self.three_phase}
        return tuple(sorted(names))

    @classmethod
    def from_config(cls, poll: PollConfig) -> PollPlan:
        """Validate ``[poll]`` and expand its groups; raises ConfigError naming the key."""
        return cls(
            single_phase=_family(poll, "single_phase", poll.single_phase),
            three_phase=_family(poll, "three_phase", poll.three_phase),
        )


def _family(poll: PollConfig, family: str, table: dict[str, list[str]]) -> tuple[Cadence, ...]:
    cadences = []
    for cadence_name, names in table.items():
        key = f"poll.{family}.{cadence_name}"
        if cadence_name not in poll.cadences:
            known = ", ".join(sorted(poll.cadences))
            raise ConfigError(f"key '{key}': no cadence of that name in poll.cadences ({known})")
        items: list[PlanItem] = []
        for index, name in enumerate(names):
            items.extend(_expand(name, f"{key}[{index}]"))
        _reject_duplicates(items, key)
        if items:
            cadences.append(Cadence(cadence_name, poll.cadences[cadence_name], tuple(items)))
    return tuple(cadences)


def _expand(name: str, key: str) -> list[PlanItem]:
    if name == EVENT_LOG:
        return [EventLogRead()]
    if name == PROFILE_LOGS:
        return [ProfileLogsRead()]
    members = OBJECT_GROUPS.get(name, (name,))
    items: list[PlanItem] = []
    for member in members:
        try:
            info = by_name(member)
        except UnknownObjectError:
            raise ConfigError(f"key '{key}': unknown object or group {name!r}") from None
        items.append(ObjectRead(info.name, info.id))
    return items


def _reject_duplicates(items: list[PlanItem], key: str) -> None:
    seen: set[PlanItem] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"key '{key}': {item} appears twice")
        seen.add(item)
