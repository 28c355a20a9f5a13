"""Every projection flowsd maintains, by name (the order replays and the runner use)."""

from __future__ import annotations

from collections.abc import Iterable

from flowsd.errors import UserError
from flowsd.projections.base import Projection
from flowsd.projections.health_history import HealthHistoryProjection
from flowsd.projections.interval_hh import IntervalProjection
from flowsd.projections.register_reads import RegisterReadProjection
from flowsd.projections.registry import RegistryProjection
from flowsd.projections.series import (
    CsqProjection,
    PrepayBalanceProjection,
    ThreePhaseVoltageProjection,
    VoltageProjection,
)
from flowsd.projections.shadows import ShadowsProjection


def all_projections() -> list[Projection]:
    return [
        RegistryProjection(),
        ShadowsProjection(),
        PrepayBalanceProjection(),
        RegisterReadProjection("import"),
        RegisterReadProjection("export"),
        IntervalProjection(),
        VoltageProjection(),
        ThreePhaseVoltageProjection(),
        CsqProjection(),
        HealthHistoryProjection(),
    ]


PROJECTION_NAMES: tuple[str, ...] = tuple(p.name for p in all_projections())


def select_projections(names: Iterable[str] | None) -> list[Projection]:
    """The named projections (all when ``names`` is empty), or a UserError naming the bad one."""
    wanted = list(names or [])
    known = {p.name: p for p in all_projections()}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UserError(f"unknown projection {unknown[0]!r} (known: {', '.join(PROJECTION_NAMES)})")
    if not wanted:
        return list(known.values())
    return [p for name, p in known.items() if name in wanted]
