"""Pure-function properties: folding any batch split equals one fold over everything."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowsd.events.types import RecordedEvent, UnknownBody
from flowsd.projections.base import events_in_range, stored_type, type_of
from flowsd.projections.catalogue import all_projections
from flowsd.projections.interval_hh import (
    ELEMENTS,
    demand_point,
    profile_point,
    slot_rows,
    touched_slots,
)
from flowsd.projections.patches import Patch, PatchProjection
from flowsd.projections.registry import RegistryProjection
from flowsd.projections.rows import RowTableProjection
from flowsd.projections.shadows import ShadowsProjection
from tests.projections.helpers import RECORDED_AT, recorded, simple_registers
from tests.projections.strategies import event_sequences, split, split_points

METERS = [uuid.UUID(int=i + 1) for i in range(3)]
REVERSED = {METERS[2]}
ROW_TABLES = [p for p in all_projections() if isinstance(p, RowTableProjection)]
PATCH_TABLES: list[PatchProjection] = [ShadowsProjection(), RegistryProjection()]
PROJECTED_TYPES = sorted(set().union(*(p.event_types for p in all_projections())))


@st.composite
def events_and_split(draw: st.DrawFn) -> tuple[list[Any], list[list[Any]]]:
    events = recorded(draw(event_sequences(METERS, max_size=60)))
    return events, split(events, split_points(draw, len(events)))


def fold_rows(projection: RowTableProjection, batches: list[list[Any]]) -> dict[Any, Any]:
    table: dict[Any, Any] = {}
    width = len(projection.key)
    for batch in batches:
        registers = simple_registers(projection.register_lookups(batch), REVERSED)
        for _, values in projection.rows(batch, registers):
            table[values[:width]] = values[width:]
    return table


@settings(max_examples=60, deadline=None)
@given(events_and_split())
def test_row_tables_fold_the_same_whatever_the_batches(case: Any) -> None:
    events, batches = case
    for projection in ROW_TABLES:
        assert fold_rows(projection, batches) == fold_rows(projection, [events]), projection.name


@settings(max_examples=60, deadline=None)
@given(events_and_split())
def test_patches_merge_the_same_whatever_the_batches(case: Any) -> None:
    events, batches = case
    for projection in PATCH_TABLES:
        merged: dict[uuid.UUID, Patch] = {}
        for batch in batches:
            for meter, patch in projection.patches(batch).items():
                merged.setdefault(meter, Patch()).merge(patch)
        whole = projection.patches(events)
        assert {m: p.values for m, p in merged.items()} == {m: p.values for m, p in whole.items()}
        assert {m: p.updated_at for m, p in merged.items()} == {
            m: p.updated_at for m, p in whole.items()
        }


@settings(max_examples=60, deadline=None)
@given(events_and_split())
def test_last_event_per_group_is_enough(case: Any) -> None:
    """What the SQL rebuild relies on: only each (meter, group)'s last event matters."""
    events, _ = case
    for projection in PATCH_TABLES:
        last: dict[tuple[uuid.UUID, str], Any] = {}
        for e in events:
            for group in projection.contributions(e):
                last[(e.meter_id, group)] = e
        reduced = projection.patches(last.values())
        assert {m: p.values for m, p in reduced.items()} == {
            m: p.values for m, p in projection.patches(events).items()
        }


@settings(max_examples=60, deadline=None)
@given(events_and_split())
def test_half_hours_are_the_same_whatever_the_batches_and_order(case: Any) -> None:
    events, batches = case
    incremental: dict[Any, Any] = {}
    seen: dict[Any, Any] = {}
    demands: dict[Any, Any] = {}
    for batch in batches:
        seen.update(p for p in map(profile_point, batch) if p is not None)
        demands.update(d for d in map(demand_point, batch) if d is not None)
        slots = touched_slots(batch)
        lookups = [(m, el, start) for m, start in slots for el in ELEMENTS]
        registers = simple_registers(lookups, REVERSED)
        for _, values in slot_rows(slots, seen, registers, demands):
            incremental[values[:2]] = values[2:]
    everything = dict(p for p in map(profile_point, events) if p is not None)
    all_demands = dict(d for d in map(demand_point, events) if d is not None)
    slots = touched_slots(events)
    lookups = [(m, el, start) for m, start in slots for el in ELEMENTS]
    registers = simple_registers(lookups, REVERSED)
    whole = {
        values[:2]: values[2:] for _, values in slot_rows(slots, everything, registers, all_demands)
    }
    assert incremental == whole


def test_unknown_bodies_are_ignored() -> None:
    unknown = RecordedEvent(
        position=1,
        recorded_at=RECORDED_AT,
        meter_id=METERS[0],
        observed_at=RECORDED_AT,
        read_at=None,
        body=UnknownBody(type_id=1999, payload=b"{}"),
        idempotency_key=uuid.uuid4(),
    )
    assert type_of(unknown) == 0  # never projected
    for projection in PATCH_TABLES:
        assert projection.patches([unknown]) == {}
    for row_projection in ROW_TABLES:
        assert row_projection.rows([unknown], {}) == []


@given(
    events=st.builds(recorded, event_sequences(METERS, max_size=60)),
    unknown_types=st.lists(st.sampled_from([*PROJECTED_TYPES, 1999]), max_size=3),
    bounds=st.tuples(st.integers(0, 70), st.integers(0, 70)),
)
@settings(max_examples=150, deadline=None)
def test_each_projections_batch_filter_keeps_exactly_the_events_of_its_stored_types(
    events: list[RecordedEvent], unknown_types: list[int], bounds: tuple[int, int]
) -> None:
    after, through = min(bounds), max(bounds)
    at = len(events)
    for type_id in unknown_types:  # stored bodies this version could not decode
        at += 1
        events.append(
            RecordedEvent(
                position=at,
                recorded_at=RECORDED_AT,
                meter_id=METERS[0],
                observed_at=RECORDED_AT,
                read_at=None,
                body=UnknownBody(type_id=type_id, payload=None),
                idempotency_key=uuid.uuid4(),
            )
        )
    in_range = [e for e in events if after < e.position <= through]
    for projection in all_projections():
        wanted = projection.event_types
        relevant, covered = events_in_range(events, wanted, after=after, through=through)
        assert relevant == [e for e in in_range if stored_type(e) in wanted]
        assert covered == len(in_range)
