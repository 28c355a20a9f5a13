"""The change detector: the last known state of each meter, and the changes a reading shows.

:meth:`ChangeDetector.after_reading` compares a reading event with the meter's state and
returns the state-change events it implies (with the reading's ``observed_at``, so a change
derived twice from the same reading has the same idempotency key);
:meth:`ChangeDetector.after_poll` does the same for the end of a poll (online/offline,
health). The state is seeded at start from the database (:mod:`flowsd.ingest.seed`), so a
restart neither repeats a change nor misses one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

from flowsd.events import types
from flowsd.meters.observations import SessionOutcome

if TYPE_CHECKING:
    from flowsd.ingest.seed import MeterStates

# Outcomes that say nothing about the meter (flowsd stopped, or a flowsd bug).
_NOT_ABOUT_THE_METER = frozenset({"stopped", "internal"})


@dataclass(frozen=True, slots=True)
class MeterState:
    """What flowsd last knew about one meter; None means never seen."""

    balance: Decimal | None = None
    active_tariff: types.ActiveTariff | None = None
    future_tariff: types.FutureTariff | None = None
    online: bool | None = None
    offline_since: datetime | None = None
    last_answer_at: datetime | None = None
    health: types.HealthStatus | None = None
    firmware: str | None = None
    hardware: str | None = None
    serial: str | None = None
    prepay_enabled: bool | None = None
    dst_correction: bool | None = None
    drift_above: bool | None = None


def _change(
    meter_id: UUID, observed_at: datetime, read_at: datetime | None, body: types.AnyBody
) -> types.Event:
    return types.Event(meter_id=meter_id, observed_at=observed_at, read_at=read_at, body=body)


class ChangeDetector:
    """Per-meter state plus the rules that turn differences into events."""

    def __init__(
        self,
        *,
        clock_drift_threshold_seconds: float,
        seeds: dict[UUID, MeterState] | None = None,
    ) -> None:
        self.drift_threshold = clock_drift_threshold_seconds
        self.states: dict[UUID, MeterState] = dict(seeds or {})
        self.changes: Counter[str] = Counter()  # state-change events derived, by kind
        self.seed_unreadable = 0  # stored state changes left out of the seeds

    def seed(self, seeds: MeterStates) -> None:
        """Take the last known states of meters joining the fleet."""
        self.states.update(seeds.states)
        self.seed_unreadable += seeds.unreadable

    def state(self, meter_id: UUID) -> MeterState:
        return self.states.get(meter_id) or MeterState()

    def forget(self, meter_id: UUID) -> None:
        self.states.pop(meter_id, None)

    # -- readings -----------------------------------------------------------------------------

    def after_reading(self, reading: types.Event) -> list[types.Event]:
        """State changes shown by one reading event (usually none)."""
        before = self.state(reading.meter_id)
        after, bodies = self._compare(before, reading.body)
        if after is not before:
            self.states[reading.meter_id] = after
        self._count(bodies)
        return [
            _change(reading.meter_id, reading.observed_at, reading.read_at, body) for body in bodies
        ]

    def _compare(
        self, state: MeterState, body: types.AnyBody
    ) -> tuple[MeterState, list[types.AnyBody]]:
        match body:
            case types.BalanceRead(balance_gbp=balance) if balance != state.balance:
                return replace(state, balance=balance), [
                    types.BalanceChanged(previous_gbp=state.balance, balance_gbp=balance)
                ]
            case types.ActiveTariffRead(tariff=tariff) if tariff != state.active_tariff:
                return replace(state, active_tariff=tariff), [
                    types.TariffActivated(previous=state.active_tariff, tariff=tariff)
                ]
            case types.FutureTariffRead(tariff=tariff) if tariff != state.future_tariff:
                return replace(state, future_tariff=tariff), [
                    types.FutureTariffChanged(previous=state.future_tariff, tariff=tariff)
                ]
            case types.IdentityRead():
                return self._identity(state, body)
            case types.FlagsRead():
                return self._flags(state, body)
            case types.ClockRead(drift_seconds=drift):
                above = abs(drift) >= self.drift_threshold
                known = state.drift_above if state.drift_above is not None else False
                after = replace(state, drift_above=above) if above != state.drift_above else state
                if above == known:
                    return after, []
                crossed = types.ClockDriftThresholdCrossed(
                    drift_seconds=drift, threshold_seconds=self.drift_threshold, above=above
                )
                return after, [crossed]
        return state, []

    @staticmethod
    def _identity(
        state: MeterState, body: types.IdentityRead
    ) -> tuple[MeterState, list[types.AnyBody]]:
        changes: list[types.AnyBody] = []
        after = state
        if body.firmware_version is not None and body.firmware_version != state.firmware:
            changes.append(
                types.FirmwareChanged(
                    previous=state.firmware, firmware_version=body.firmware_version
                )
            )
            after = replace(after, firmware=body.firmware_version)
        if body.hardware is not None and body.hardware != state.hardware:
            changes.append(types.HardwareChanged(previous=state.hardware, hardware=body.hardware))
            after = replace(after, hardware=body.hardware)
        if body.serial is not None and body.serial != state.serial:
            changes.append(types.SerialChanged(previous=state.serial, serial=body.serial))
            after = replace(after, serial=body.serial)
        return after, changes

    @staticmethod
    def _flags(state: MeterState, body: types.FlagsRead) -> tuple[MeterState, list[types.AnyBody]]:
        changes: list[types.AnyBody] = []
        after = state
        prepay = body.prepay_enabled
        if prepay is not None and prepay != state.prepay_enabled:
            changes.append(
                types.PrepayModeChanged(previous=state.prepay_enabled, prepay_enabled=prepay)
            )
            after = replace(after, prepay_enabled=prepay)
        dst = body.daylight_savings_correction_enabled
        if dst is not None and dst != state.dst_correction:
            changes.append(
                types.DaylightSavingsCorrectionChanged(previous=state.dst_correction, enabled=dst)
            )
            after = replace(after, dst_correction=dst)
        return after, changes

    # -- poll outcomes ------------------------------------------------------------------------

    def after_poll(self, outcome: SessionOutcome) -> list[types.Event]:
        """Online/offline and health changes at the end of one poll or probe."""
        if outcome.reason in _NOT_ABOUT_THE_METER:
            return []
        state = self.state(outcome.meter_id)
        answered = outcome.ok or outcome.requests > outcome.failed_requests
        at = outcome.read_at
        bodies: list[types.AnyBody] = []
        if answered:
            state = replace(state, last_answer_at=at)
        if outcome.offline and state.online is not False:
            bodies.append(
                types.MeterWentOffline(
                    consecutive_failures=outcome.consecutive_failures,
                    last_error=_describe(outcome),
                    last_answer_at=state.last_answer_at,
                )
            )
            state = replace(state, online=False, offline_since=at)
        elif outcome.online and answered and state.online is not True:
            bodies.append(types.MeterCameOnline(offline_since=state.offline_since))
            state = replace(state, online=True, offline_since=None)
        health: types.HealthStatus = "healthy" if answered else "unhealthy"
        if health != state.health:
            details = "" if answered else _describe(outcome)
            bodies.append(
                types.HealthChanged(previous=state.health, health=health, details=details)
            )
            state = replace(state, health=health)
        self.states[outcome.meter_id] = state
        self._count(bodies)
        return [_change(outcome.meter_id, at, at, body) for body in bodies]

    def _count(self, bodies: list[types.AnyBody]) -> None:
        for body in bodies:
            self.changes[body.NAME.lower()] += 1


def _describe(outcome: SessionOutcome) -> str:
    reason = outcome.reason or "failed"
    return f"{reason}: {outcome.detail}" if outcome.detail else reason
