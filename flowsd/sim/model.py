"""One meter's observable state at a simulated time: what it would answer, as numbers.

:class:`MeterModel` joins a meter's identity (seed-driven habits) with its overrides
(writes) and computes every quantity on demand; nothing is ticked forward. The wire layer
(:mod:`flowsd.sim.responder`) and the ground-truth API (:mod:`flowsd.sim.truth`) both read
through it, so what a test is told the meter said is exactly what the meter sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowsd.sim.consumption import (
    SLOT_SECONDS,
    instantaneous_power,
    outage_on,
    outage_overlap,
    reactive_at,
    register_at,
)
from flowsd.sim.events import Event, event_page, recent_events
from flowsd.sim.identity import SECONDS_PER_DAY, ChannelId, MeterIdentity
from flowsd.sim.overrides import Credit, MeterOverrides
from flowsd.sim.prepay import balance_at, charges_until, customer_topups_between
from flowsd.sim.rand import Stream, smooth, uniform
from flowsd.sim.tariffs import Tariff, TariffView


@dataclass(frozen=True, slots=True)
class ElementRegisters:
    """One element's four cumulative registers (Wh / varh)."""

    import_active: int
    export_active: int
    import_reactive: int
    export_reactive: int


@dataclass(frozen=True, slots=True)
class RecordStatus:
    """Profile-record status flags for the half hour ending at the record's timestamp."""

    reset: bool
    valid_data: bool
    power_fail: bool


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One half-hourly profile record (both logs' values; log 1 and log 2 pick theirs)."""

    timestamp: int
    status: RecordStatus
    import_a: int
    import_b: int
    export_a: int
    reactive_import_a: int
    reactive_export_a: int
    voltage: int
    export_b: int
    reactive_import_b: int
    reactive_export_b: int


@dataclass(frozen=True, slots=True)
class ThreePhaseInterval:
    """One three-phase interval starting at ``start``: average demands in wire units."""

    start: int
    valid_data: bool
    power_fail: bool
    active_import: int
    active_export: int
    reactive_import: int
    reactive_export: int


class MeterModel:
    """Everything one meter reports, as functions of simulated time (EMOP seconds)."""

    __slots__ = ("history_days", "identity", "overrides", "tariffs")

    def __init__(
        self, identity: MeterIdentity, overrides: MeterOverrides | None, history_days: int
    ) -> None:
        self.identity = identity
        self.overrides = overrides
        self.history_days = history_days
        self.tariffs = TariffView(
            identity.seed,
            identity.hardware.twin_element,
            overrides.tariffs if overrides is not None else None,
        )

    # --- energy -------------------------------------------------------------------------

    def element(self, element: str, t: float) -> ElementRegisters:
        """Registers of element ``"A"`` or ``"B"`` (zeros-based for a single-element B)."""
        identity = self.identity
        imp, exp = (
            (ChannelId.IMPORT_A, ChannelId.EXPORT_A)
            if element == "A"
            else (ChannelId.IMPORT_B, ChannelId.EXPORT_B)
        )
        reactive_in, reactive_out = reactive_at(identity, imp, t)
        return ElementRegisters(
            register_at(identity, imp, t), register_at(identity, exp, t), reactive_in, reactive_out
        )

    @property
    def energy_scale(self) -> int:
        """Wire units per Wh of three-phase registers (0.1 Wh on P1.cx)."""
        return self.identity.hardware.counts_per_kwh // 1000

    def three_phase_totals(self, t: float) -> dict[str, int]:
        """The six three-phase total registers in wire units (wrapping at 2^32)."""
        a = self.element("A", t)
        scale = self.energy_scale
        apparent_import = math.floor(math.hypot(a.import_active, a.import_reactive))
        values = {
            "active_import": a.import_active,
            "active_export": a.export_active,
            "reactive_import": a.import_reactive,
            "reactive_export": a.export_reactive,
            "apparent_import": apparent_import,
            "apparent_export": a.export_active,
        }
        return {k: (v * scale) & 0xFFFFFFFF for k, v in values.items()}

    def power(self, element: str, t: float) -> int:
        channel = ChannelId.IMPORT_A if element == "A" else ChannelId.IMPORT_B
        return min(0xFFFF, instantaneous_power(self.identity, channel, t))

    # --- instantaneous readings ------------------------------------------------------------

    def clock(self, t: float) -> float:
        """The meter's own clock (EMOP seconds): true time plus a drift that grows."""
        identity, overrides = self.identity, self.overrides
        rate = identity.drift_ppm * 1e-6
        if overrides is not None and overrides.clock_set is not None:
            fix = overrides.clock_set
            if t >= fix.set_at:
                return fix.value + (t - fix.set_at) * (1 + rate)
        return t + identity.initial_clock_offset + rate * (t - identity.commissioned_at)

    def csq(self, t: float) -> int:
        identity = self.identity
        wander = smooth(900.0, t, identity.seed, identity.index, Stream.CSQ)
        return max(0, min(31, identity.csq_base + round(5 * wander)))

    def voltage(self, t: float, phase: int = 0) -> int:
        """Voltage in 0.1 V (phase 0 = single phase, 1..3 = L1..L3)."""
        identity = self.identity
        wander = smooth(600.0, t, identity.seed, identity.index, Stream.VOLTAGE, phase)
        return 2_400 + round(70 * wander)

    def phase_voltage_naks(self, t: float, phase: int) -> bool:
        """Whether an L2/L3 read NAKs now (short/NAK answers were seen there in practice)."""
        if phase < 2:
            return False
        minute = int(t // 60)
        return (
            uniform(self.identity.seed, self.identity.index, Stream.THREE_PHASE_NAK, minute, phase)
            < 0.05
        )

    def flag(self, object_id: int, default: int) -> int:
        overrides = self.overrides
        if overrides is not None and object_id in overrides.flags:
            return overrides.flags[object_id]
        return default

    def setting(self, object_id: int, default: bytes) -> bytes:
        overrides = self.overrides
        if overrides is not None and object_id in overrides.settings:
            return overrides.settings[object_id]
        return default

    # --- prepay -----------------------------------------------------------------------------

    def balance(self, t: float) -> int:
        return balance_at(self.identity, self.overrides, self.tariffs, t)

    def active_tariff(self, t: float) -> Tariff:
        return self.tariffs.active_at(t)[1]

    def future_tariff(self, t: float) -> tuple[int, Tariff]:
        return self.tariffs.future_at(t)

    def credits(self, start: float, end: float) -> list[Credit]:
        """Top-ups and applied tokens with start < time <= end, oldest first."""
        found = customer_topups_between(self.identity, start, end)
        if self.overrides is not None:
            found += [c for c in self.overrides.tokens if start < c.time <= end]
        return sorted(found, key=lambda c: c.time)

    def transactions(self, t: float) -> list[Credit]:
        return self.credits(float(self.identity.commissioned_at) - 1, t)

    def charges(self, t: float) -> tuple[int, int, int]:
        c = charges_until(self.identity, self.tariffs, t)
        return c.energy, c.standing, c.debt_recovered

    # --- logs ---------------------------------------------------------------------------------

    def events(self, t: float, limit: int = 100) -> list[Event]:
        return recent_events(self.identity, self.overrides, t, limit)

    def event_page(self, t: float, page: int) -> list[Event]:
        return event_page(self.identity, self.overrides, t, page)

    def oldest_record(self, now: float) -> int:
        """Timestamp of the oldest profile record still in the log at ``now``."""
        first = -(-self.identity.commissioned_at // SLOT_SECONDS) * SLOT_SECONDS
        newest = self.newest_record(now)
        return max(first, newest - self.history_days * SECONDS_PER_DAY)

    @staticmethod
    def newest_record(now: float) -> int:
        return int(now // SLOT_SECONDS) * SLOT_SECONDS

    def record_status(self, timestamp: int) -> RecordStatus:
        identity = self.identity
        day = (timestamp - 1) // SECONDS_PER_DAY
        outage = outage_on(identity.seed, identity.index, identity.commission_day, day)
        covered = outage_overlap(outage, timestamp - SLOT_SECONDS, timestamp)
        return RecordStatus(
            reset=timestamp == -(-identity.commissioned_at // SLOT_SECONDS) * SLOT_SECONDS,
            valid_data=covered < SLOT_SECONDS,
            power_fail=covered > 0,
        )

    def profile_record(self, timestamp: int) -> ProfileRecord:
        a = self.element("A", timestamp)
        b = self.element("B", timestamp)
        return ProfileRecord(
            timestamp=timestamp,
            status=self.record_status(timestamp),
            import_a=a.import_active,
            import_b=b.import_active,
            export_a=a.export_active,
            reactive_import_a=a.import_reactive,
            reactive_export_a=a.export_reactive,
            voltage=self.voltage(timestamp),
            export_b=b.export_active,
            reactive_import_b=b.import_reactive,
            reactive_export_b=b.export_reactive,
        )

    def profile_records(self, requested: int, count: int, now: float) -> list[ProfileRecord]:
        """Up to ``count`` records from the first at or after ``requested`` (oldest if older)."""
        start = max(-(-requested // SLOT_SECONDS) * SLOT_SECONDS, self.oldest_record(now))
        newest = self.newest_record(now)
        return [
            self.profile_record(ts)
            for ts in range(start, start + count * SLOT_SECONDS, SLOT_SECONDS)
            if ts <= newest
        ]

    def interval_minutes(self, default: int) -> int:
        """The interval length the three-phase profile reports."""
        configured = None if self.overrides is None else self.overrides.interval_minutes
        return configured or default

    def three_phase_intervals(
        self, start: int, end: int, now: float, limit: int
    ) -> tuple[int, list[ThreePhaseInterval]]:
        """(block start, intervals) for completed half hours starting in [start, end)."""
        first = max(-(-start // SLOT_SECONDS) * SLOT_SECONDS, self.oldest_record(now))
        holes = () if self.overrides is None else self.overrides.interval_holes

        def held(ts: int) -> bool:
            return not any(low <= ts < high for low, high in holes)

        # A block's records are consecutive from its start: it starts at the first half hour
        # held, and ends before the next hole.
        ts = first
        while ts < end and not held(ts):
            ts += SLOT_SECONDS
        if ts < end:
            first = ts
        scale = self.energy_scale * 2  # Wh per half hour -> average W (0.1 W on P1.cx)
        found: list[ThreePhaseInterval] = []
        while ts < end and ts + SLOT_SECONDS <= now and len(found) < limit and held(ts):
            low, high = self.element("A", ts), self.element("A", ts + SLOT_SECONDS)
            status = self.record_status(ts + SLOT_SECONDS)
            found.append(
                ThreePhaseInterval(
                    start=ts,
                    valid_data=status.valid_data,
                    power_fail=status.power_fail,
                    active_import=(high.import_active - low.import_active) * scale,
                    active_export=(high.export_active - low.export_active) * scale,
                    reactive_import=(high.import_reactive - low.import_reactive) * scale,
                    reactive_export=(high.export_reactive - low.export_reactive) * scale,
                )
            )
            ts += SLOT_SECONDS
        return first, found
