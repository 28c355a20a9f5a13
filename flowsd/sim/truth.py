"""Ground truth: what a simulated meter reports at a time, for tests to compare against.

Everything here is read through the same :class:`~flowsd.sim.model.MeterModel` the wire
layer uses, so a value in a truth object is exactly what the meter would have sent at that
simulated time (registers in Wh, or wire units for three-phase totals; money in 1e-5 GBP).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flowsd.sim.clock import from_emop
from flowsd.sim.consumption import SLOT_SECONDS
from flowsd.sim.events import Event
from flowsd.sim.model import ElementRegisters, MeterModel, RecordStatus
from flowsd.sim.overrides import Credit
from flowsd.sim.tariffs import Tariff


@dataclass(frozen=True, slots=True)
class MeterTruth:
    """A meter's reported state at one simulated time."""

    at: datetime
    serial: str
    hardware: str
    element_a: ElementRegisters
    element_b: ElementRegisters
    three_phase_totals: dict[str, int] | None
    balance: int | None
    # Emergency credit drawn (the part of a negative balance it covers) and debt still to
    # recover, both 1e-5 GBP; None on three-phase meters.
    emergency_credit_in_use: int | None
    debt_outstanding: int | None
    active_tariff: Tariff | None
    future_tariff: Tariff | None
    future_activation: datetime | None
    meter_clock: datetime
    csq: int
    voltage: int
    flags: dict[str, bool]

    @property
    def balance_gbp(self) -> Decimal | None:
        return None if self.balance is None else Decimal(self.balance) / 100_000


@dataclass(frozen=True, slots=True)
class IntervalTruth:
    """One half hour ending at ``end`` (the profile record's timestamp): energies in Wh."""

    start: datetime
    end: datetime
    import_a: int
    import_b: int
    export_a: int
    export_b: int
    registers_at_end: tuple[int, int, int, int]  # import A, import B, export A, export B
    status: RecordStatus


def meter_truth(model: MeterModel, t: float) -> MeterTruth:
    identity = model.identity
    three_phase = identity.hardware.three_phase
    activation, future = model.future_tariff(t)
    balance = None if three_phase else model.balance(t)
    active = None if three_phase else model.active_tariff(t)
    in_use = debt = None
    if balance is not None and active is not None:
        in_use = min(active.emergency_credit, max(0, -balance))
        debt = identity.opening_debt - model.charges(t)[2]
    return MeterTruth(
        at=from_emop(t),
        serial=identity.serial,
        hardware=identity.hardware.value,
        element_a=model.element("A", t),
        element_b=model.element("B", t),
        three_phase_totals=model.three_phase_totals(t) if three_phase else None,
        balance=balance,
        emergency_credit_in_use=in_use,
        debt_outstanding=debt,
        active_tariff=active,
        future_tariff=None if three_phase else future,
        future_activation=None if three_phase else from_emop(activation),
        meter_clock=from_emop(model.clock(t)),
        csq=model.csq(t),
        voltage=model.voltage(t, 1 if three_phase else 0),
        flags={
            "prepay_enabled": bool(model.flag(0xFFFF0D, int(identity.prepay_enabled))),
            "daylight_savings_correction": bool(model.flag(0xFFFF0B, int(identity.dst_enabled))),
        },
    )


def interval_truths(model: MeterModel, start: float, end: float) -> list[IntervalTruth]:
    """Half hours whose end lies in (start, end], as the profile logs report them."""
    first = int(start // SLOT_SECONDS) * SLOT_SECONDS + SLOT_SECONDS
    found = []
    for stamp in range(first, int(end) + 1, SLOT_SECONDS):
        low, high = model.profile_record(stamp - SLOT_SECONDS), model.profile_record(stamp)
        found.append(
            IntervalTruth(
                start=from_emop(stamp - SLOT_SECONDS),
                end=from_emop(stamp),
                import_a=high.import_a - low.import_a,
                import_b=high.import_b - low.import_b,
                export_a=high.export_a - low.export_a,
                export_b=high.export_b - low.export_b,
                registers_at_end=(high.import_a, high.import_b, high.export_a, high.export_b),
                status=high.status,
            )
        )
    return found


def event_truths(model: MeterModel, t: float, limit: int = 100) -> list[Event]:
    return model.events(t, limit)


def credit_truths(model: MeterModel, start: float, end: float) -> list[Credit]:
    return model.credits(start, end)
