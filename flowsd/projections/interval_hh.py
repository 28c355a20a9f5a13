"""``register_interval_hh``: energy per register and half hour, from the profile logs.

Single-phase meters: profile log 1 records carry cumulative import Wh (elements A and B), log
2 records cumulative export Wh, each stamped with the meter's time at the *end* of a half
hour. The half hour ``[T, T + 30 min)`` (labelled by its start ``T``, as the platform does)
gets ``(Wh at T + 30 min - Wh at T) / 1000`` kWh: import into ``kwh``, export into
``export_kwh`` (swapped for a register with ``direction_reversed``), on the register valid at
``T``.

Three-phase meters: a record of interval profile 0 (:class:`ThreePhaseIntervalRecord`,
stamped with the *start* ``T`` of its interval) carries the interval's average demand, in W
on P1.ax and 0.1 W on P1.cx (``counts_per_kwh`` 1000 / 10000; EMOP SPEC §10 and §1's units
table). A valid 30-minute record gives element A of the half hour ``[T, T + 30 min)``
``demand × 0.5 h / counts_per_kwh`` kWh: active import demand (channel ``d79600``) into
``kwh``, active export demand (``d79601``) into ``export_kwh``, on the same register rule.
Records of other lengths, other profiles, or without the valid flag give nothing. No meter
writes both kinds; if one did, each value comes from the profile logs where they give it.

A delta is only taken between two records exactly 30 minutes apart, both marked valid, the
later one not marked as a register reset, and not going backwards. So a missing record leaves
the half hours on both sides of it empty, a reset starts a new baseline (the half hour ending
at it is empty), and a power-fail record (valid data, outage during the interval) counts
normally. A row is written when its ``kwh`` is known; ``export_kwh`` is NULL when unknown.

Each half hour is a pure function of its (up to) four bounding records and its three-phase
record, and a value once known is never lost (records only add values), so it is recomputed
whenever one of them is committed, whatever the order they arrive in (backfills do arrive out
of order); neighbours are looked up in the log, never beyond the batch being applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from flowsd.events.codec import decode_body
from flowsd.events.types import (
    ProfileLog1Record,
    ProfileLog2Record,
    RecordedEvent,
    ThreePhaseIntervalRecord,
)
from flowsd.projections.registers import (
    Lookup,
    RegisterRef,
    candidate_registers_sql,
    resolve_registers,
)
from flowsd.projections.rows import KeyedRowsProjection, Row

SLOT = timedelta(minutes=30)
VALID = 0x0080
RESET = 0x0100
IMPORT_LOG = ProfileLog1Record.TYPE_ID
EXPORT_LOG = ProfileLog2Record.TYPE_ID
THREE_PHASE = ThreePhaseIntervalRecord.TYPE_ID
ELEMENTS = ("A", "B")
# Three-phase interval profile 0, the one meters log (and the reference client reads), and
# its active demand channels (object ids active_import_demand / active_export_demand).
THREE_PHASE_PROFILE = 0
IMPORT_DEMAND = "d79600"
EXPORT_DEMAND = "d79601"
THREE_PHASE_MINUTES = 30

PointKey = tuple[UUID, int, datetime]  # meter, log type id, record time
SlotKey = tuple[UUID, datetime]  # meter, half-hour start


@dataclass(frozen=True)
class ProfilePoint:
    """The cumulative values of one profile record (A and B channels) and its status."""

    position: int
    status: int
    a: int | None
    b: int | None

    def channel(self, element: str) -> int | None:
        return self.a if element == "A" else self.b


def profile_point(event: RecordedEvent) -> tuple[PointKey, ProfilePoint] | None:
    body = event.body
    if isinstance(body, ProfileLog1Record):
        point = ProfilePoint(event.position, body.status, body.import_a_wh, body.import_b_wh)
        return (event.meter_id, IMPORT_LOG, event.observed_at), point
    if isinstance(body, ProfileLog2Record):
        point = ProfilePoint(event.position, body.status, body.export_a_wh, body.export_b_wh)
        return (event.meter_id, EXPORT_LOG, event.observed_at), point
    return None


@dataclass(frozen=True)
class DemandPoint:
    """The half-hour energy of one three-phase interval record (element A), kWh or None."""

    position: int
    imported: Decimal | None
    exported: Decimal | None


def demand_kwh(demand: int | None, counts_per_kwh: int) -> Decimal | None:
    """A half hour's average demand (counts_per_kwh / 1000 counts per W) as kWh: W × 0.5 h."""
    if demand is None or counts_per_kwh <= 0:
        return None
    return Decimal(demand) / (2 * counts_per_kwh)


def demand_of(position: int, body: ThreePhaseIntervalRecord) -> DemandPoint | None:
    """The energy of a three-phase record (None: not of profile 0, so not a half hour's)."""
    if body.profile != THREE_PHASE_PROFILE:
        return None
    usable = body.status & VALID and body.interval_minutes == THREE_PHASE_MINUTES
    if not usable:
        return DemandPoint(position, None, None)
    values, scale = body.values, body.counts_per_kwh
    return DemandPoint(
        position,
        demand_kwh(values.get(IMPORT_DEMAND), scale),
        demand_kwh(values.get(EXPORT_DEMAND), scale),
    )


def demand_point(event: RecordedEvent) -> tuple[SlotKey, DemandPoint] | None:
    """The half hour a three-phase record starts and its energy (None: not one of those)."""
    body = event.body
    if not isinstance(body, ThreePhaseIntervalRecord):
        return None
    demand = demand_of(event.position, body)
    return None if demand is None else ((event.meter_id, event.observed_at), demand)


def delta_wh(start: ProfilePoint | None, end: ProfilePoint | None, element: str) -> int | None:
    """Wh between two consecutive records of one channel, None when it cannot be known."""
    if start is None or end is None:
        return None
    if not (start.status & VALID and end.status & VALID) or end.status & RESET:
        return None
    first, last = start.channel(element), end.channel(element)
    if first is None or last is None or last < first:
        return None
    return last - first


def wh_to_kwh(wh: int | None) -> Decimal | None:
    return None if wh is None else Decimal(wh).scaleb(-3)


_PROFILE_LOG_BODIES = (ProfileLog1Record, ProfileLog2Record)  # the records profile_point reads


def touched_slots(events: Iterable[RecordedEvent]) -> set[SlotKey]:
    """Half hours bounded by a record in ``events``: the one ending and the one starting at it
    (a profile log record), or the one it starts (a three-phase record of profile 0)."""
    slots: set[SlotKey] = set()
    for e in events:
        body = e.body
        if isinstance(body, _PROFILE_LOG_BODIES):
            slots.add((e.meter_id, e.observed_at - SLOT))
            slots.add((e.meter_id, e.observed_at))
        elif isinstance(body, ThreePhaseIntervalRecord) and body.profile == THREE_PHASE_PROFILE:
            slots.add((e.meter_id, e.observed_at))
    return slots


def slot_rows(
    slots: Iterable[SlotKey],
    points: dict[PointKey, ProfilePoint],
    registers: dict[Lookup, RegisterRef],
    demands: dict[SlotKey, DemandPoint] | None = None,
) -> list[Row]:
    """Pure: the rows of ``slots`` given every record around them and their registers."""
    rows: list[Row] = []
    for meter, start in sorted(slots):
        end = start + SLOT
        import_start, import_end = (
            points.get((meter, IMPORT_LOG, start)),
            points.get((meter, IMPORT_LOG, end)),
        )
        export_start, export_end = (
            points.get((meter, EXPORT_LOG, start)),
            points.get((meter, EXPORT_LOG, end)),
        )
        positions: list[int] = []
        if import_start is not None and import_end is not None:
            positions.append(max(import_start.position, import_end.position))
        if export_start is not None and export_end is not None:
            positions.append(max(export_start.position, export_end.position))
        demand = None if demands is None else demands.get((meter, start))
        if demand is not None:
            positions.append(demand.position)
        if not positions:
            continue  # no pair of records and no demand: nothing about it can be known
        for element in ELEMENTS:
            imported = wh_to_kwh(delta_wh(import_start, import_end, element))
            exported = wh_to_kwh(delta_wh(export_start, export_end, element))
            if demand is not None and element == "A":
                imported = demand.imported if imported is None else imported
                exported = demand.exported if exported is None else exported
            if imported is None and exported is None:
                continue
            register = registers.get((meter, element, start))
            if register is None:
                continue
            if register.direction_reversed:
                imported, exported = exported, imported
            if imported is None:
                continue
            rows.append((max(positions), (register.register_id, start, imported, exported)))
    return rows


# The records around the slots, in one round trip: the profile log records at both ends of
# each slot ($1, $2: meter and time pairs) with their values, and the three-phase records
# starting a slot ($3, $4) with their payload.
_RECORDS = f"""
SELECT e.position, e.meter_id, e.event_type, e."timestamp", (e.payload ->> 'status')::integer,
       (CASE WHEN e.event_type = {IMPORT_LOG} THEN e.payload ->> 'import_a_wh'
             ELSE e.payload ->> 'export_a_wh' END)::bigint,
       (CASE WHEN e.event_type = {IMPORT_LOG} THEN e.payload ->> 'import_b_wh'
             ELSE e.payload ->> 'export_b_wh' END)::bigint,
       NULL::text
FROM flows.meter_event_log e
WHERE e.event_type IN ({IMPORT_LOG}, {EXPORT_LOG}) AND e.position <= $5
  AND (e.meter_id, e."timestamp") IN (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]))
UNION ALL
SELECT e.position, e.meter_id, e.event_type, e."timestamp", NULL, NULL, NULL, e.payload::text
FROM flows.meter_event_log e
WHERE e.event_type = {THREE_PHASE} AND e.position <= $5
  AND (e.meter_id, e."timestamp") IN (SELECT * FROM unnest($3::uuid[], $4::timestamptz[]))
"""


class IntervalProjection(KeyedRowsProjection):
    name = "register_interval_hh"
    table = "flows.register_interval_hh"
    key = ("register_id", "timestamp")
    values = ("kwh", "export_kwh")
    sql_types = ("uuid", "timestamptz", "numeric", "numeric")
    event_types = frozenset({IMPORT_LOG, EXPORT_LOG, THREE_PHASE})
    unique_by_event = True  # one row per (register, half hour) in the shadow, see build()
    needs_registers = True

    async def apply(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        slots = touched_slots(events)
        if not slots:
            return
        through = events[-1].position
        points, demands = await self._records_around(conn, slots, through=through)
        lookups = [(meter, element, start) for meter, start in slots for element in ELEMENTS]
        registers = await resolve_registers(conn, lookups)
        rows = slot_rows(slots, points, registers, demands)
        if rows:
            await self.upsert(conn, self.table, [values for _, values in rows])

    async def _records_around(
        self, conn: asyncpg.Connection, slots: set[SlotKey], *, through: int
    ) -> tuple[dict[PointKey, ProfilePoint], dict[SlotKey, DemandPoint]]:
        """The profile log records at both ends of ``slots`` and the three-phase records
        starting them, committed up to ``through``."""
        wanted = {(meter, at) for meter, start in slots for at in (start, start + SLOT)}
        rows = await conn.fetch(
            _RECORDS,
            [w[0] for w in wanted],
            [w[1] for w in wanted],
            [s[0] for s in slots],
            [s[1] for s in slots],
            through,
        )
        points: dict[PointKey, ProfilePoint] = {}
        demands: dict[SlotKey, DemandPoint] = {}
        for r in rows:
            if r[2] != THREE_PHASE:
                points[(r[1], r[2], r[3])] = ProfilePoint(
                    position=r[0], status=r[4], a=r[5], b=r[6]
                )
                continue
            body = decode_body(THREE_PHASE, None, r[7])
            if isinstance(body, ThreePhaseIntervalRecord):
                demand = demand_of(r[0], body)
                if demand is not None:
                    demands[(r[1], r[3])] = demand
        return points, demands

    async def build(self, conn: asyncpg.Connection, shadow: str, after: int, through: int) -> None:
        # Channels first, into a table with statistics: estimated from a CTE, millions of
        # rows look like a few and the register join gets a plan fit for a few.
        await conn.execute("DROP TABLE IF EXISTS pg_temp.flowsd_interval_channel")
        channels = _FULL_BUILD if after == 0 else _WINDOW_BUILD
        await conn.execute(
            f"CREATE TEMPORARY TABLE flowsd_interval_channel AS {channels}", after, through
        )
        await conn.execute("ANALYZE pg_temp.flowsd_interval_channel")
        columns = '(position, register_id, "timestamp", kwh, export_kwh)'
        # From position 0 into an empty shadow: nothing to replace. (A shadow seeded with the
        # history from before the log, flowsd.projections.snapshot, is not empty.)
        if after == 0 and not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {shadow})"):
            await conn.execute(f"INSERT INTO {shadow} {columns} {_MAP_TO_REGISTERS}")
            return
        # Later half hours replace the shadow's rows with the same key: it stays one row per
        # key, so the swap needs no de-duplication.
        await conn.execute(
            f"DELETE FROM {shadow} s USING ({_MAP_TO_REGISTERS}) AS w(position, register_id, "
            'at, kwh, export_kwh) WHERE s.register_id = w.register_id AND s."timestamp" = w.at'
        )
        await conn.execute(f"INSERT INTO {shadow} {columns} {_MAP_TO_REGISTERS}")


# One parse of each payload (jsonb_to_record) instead of one per field.
_POINT_COLUMNS = f"""e.position, e.meter_id, e.event_type, e."timestamp" AS at, v.status,
           CASE WHEN e.event_type = {IMPORT_LOG} THEN v.import_a_wh ELSE v.export_a_wh END AS a,
           CASE WHEN e.event_type = {IMPORT_LOG} THEN v.import_b_wh ELSE v.export_b_wh END AS b"""
_POINT_VALUES = """CROSS JOIN LATERAL jsonb_to_record(e.payload) AS v(
        status integer, import_a_wh bigint, import_b_wh bigint, export_a_wh bigint,
        export_b_wh bigint)"""


def _delta(channel: str) -> str:
    return f"""CASE WHEN status & {VALID} <> 0 AND prev_status & {VALID} <> 0
                     AND status & {RESET} = 0 AND {channel} >= prev_{channel}
                THEN {channel} - prev_{channel} END"""


def _kwh(wh: str) -> str:
    return f"round(({wh})::numeric / 1000, 3)"


def _demand_kwh(channel: str) -> str:
    # demand_kwh(): trim_scale so a value is stored as written live (0.5, not 0.50000...).
    return f"""CASE WHEN v.status & {VALID} <> 0 AND v.interval_minutes = {THREE_PHASE_MINUTES}
                     AND v.counts_per_kwh > 0
                THEN trim_scale((v."values" ->> '{channel}')::numeric / (2 * v.counts_per_kwh))
                END"""


# Three-phase records of profile 0 as one half hour each (demand_of()); FROM and WHERE follow.
_DEMAND_COLUMNS = f"""e.position, e.meter_id, e."timestamp" AS slot,
           {_demand_kwh(IMPORT_DEMAND)} AS imported, {_demand_kwh(EXPORT_DEMAND)} AS exported"""
_DEMAND_VALUES = """CROSS JOIN LATERAL jsonb_to_record(e.payload) AS v(
        profile integer, interval_minutes integer, status integer, counts_per_kwh integer,
        "values" jsonb)"""


def _channels_from_points(slot_filter: str) -> str:
    """The rest of a WITH list after ``point`` and ``demand``: per meter, half hour and
    element, the kWh (the profile logs' where they give it, else the three-phase record's)."""
    return f"""
paired AS (
    SELECT p.*, lag(p.at) OVER w AS prev_at, lag(p.position) OVER w AS prev_position,
           lag(p.status) OVER w AS prev_status, lag(p.a) OVER w AS prev_a,
           lag(p.b) OVER w AS prev_b
    FROM point p
    WINDOW w AS (PARTITION BY p.meter_id, p.event_type ORDER BY p.at)
),
pair AS (
    SELECT meter_id, event_type, prev_at AS slot, greatest(position, prev_position) AS position,
           {_delta("a")} AS delta_a, {_delta("b")} AS delta_b
    FROM paired
    WHERE prev_at = at - interval '30 minutes'
),
logs AS (
    SELECT coalesce(i.meter_id, x.meter_id) AS meter_id, coalesce(i.slot, x.slot) AS slot,
           greatest(i.position, x.position) AS position, i.delta_a AS import_a,
           i.delta_b AS import_b, x.delta_a AS export_a, x.delta_b AS export_b
    FROM (SELECT * FROM pair WHERE event_type = {IMPORT_LOG}) i
    FULL JOIN (SELECT * FROM pair WHERE event_type = {EXPORT_LOG}) x
      ON x.meter_id = i.meter_id AND x.slot = i.slot
),
slot AS (
    SELECT coalesce(l.meter_id, d.meter_id) AS meter_id, coalesce(l.slot, d.slot) AS slot,
           greatest(l.position, d.position) AS position,
           coalesce({_kwh("l.import_a")}, d.imported) AS import_a, {_kwh("l.import_b")} AS import_b,
           coalesce({_kwh("l.export_a")}, d.exported) AS export_a, {_kwh("l.export_b")} AS export_b
    FROM logs l
    FULL JOIN demand d ON d.meter_id = l.meter_id AND d.slot = l.slot
),
channel AS (
    SELECT s.meter_id, s.slot, s.position, c.element, c.imported, c.exported
    FROM slot s
    CROSS JOIN LATERAL (VALUES ('A', s.import_a, s.export_a),
                               ('B', s.import_b, s.export_b)) AS c(element, imported, exported)
    WHERE (c.imported IS NOT NULL OR c.exported IS NOT NULL) {slot_filter}
)
SELECT meter_id, slot, position, element, imported, exported FROM channel"""


_VALUE = "CASE WHEN reg.direction_reversed THEN c.exported ELSE c.imported END"
_OTHER = "CASE WHEN reg.direction_reversed THEN c.imported ELSE c.exported END"
# The channels (kept in a temporary table with statistics) on their registers.
_MAP_TO_REGISTERS = f"""
SELECT c.position, reg.register_id, c.slot, {_VALUE}, {_OTHER}
FROM flowsd_interval_channel c
{candidate_registers_sql("c", "c.element", "c.slot")}
  AND ({_VALUE}) IS NOT NULL"""


# Every record up to $2 ($1 is 0): one sort by meter, log and time.
_FULL_BUILD = f"""
WITH point AS (
    SELECT {_POINT_COLUMNS}
    FROM flows.meter_event_log e
    {_POINT_VALUES}
    WHERE e.event_type IN ({IMPORT_LOG}, {EXPORT_LOG}) AND e.position > $1 AND e.position <= $2
),
demand AS (
    SELECT {_DEMAND_COLUMNS}
    FROM flows.meter_event_log e
    {_DEMAND_VALUES}
    WHERE e.event_type = {THREE_PHASE} AND e.position > $1 AND e.position <= $2
      AND v.profile = {THREE_PHASE_PROFILE}
),
{_channels_from_points("")}"""

# Records in ($1, $2] and every record (up to $2) around them; only their half hours.
_WINDOW_BUILD = f"""
WITH arrived AS (
    SELECT e.meter_id, e."timestamp" AS at
    FROM flows.meter_event_log e
    WHERE e.event_type IN ({IMPORT_LOG}, {EXPORT_LOG}, {THREE_PHASE})
      AND e.position > $1 AND e.position <= $2
),
touched AS (
    SELECT meter_id, at - interval '30 minutes' AS slot FROM arrived
    UNION
    SELECT meter_id, at FROM arrived
),
around AS (
    SELECT meter_id, slot AS at FROM touched
    UNION
    SELECT meter_id, slot + interval '30 minutes' FROM touched
),
point AS (
    SELECT {_POINT_COLUMNS}
    FROM flows.meter_event_log e
    JOIN around ON around.meter_id = e.meter_id AND around.at = e."timestamp"
    {_POINT_VALUES}
    WHERE e.event_type IN ({IMPORT_LOG}, {EXPORT_LOG}) AND e.position <= $2
),
demand AS (
    SELECT {_DEMAND_COLUMNS}
    FROM flows.meter_event_log e
    JOIN touched ON touched.meter_id = e.meter_id AND touched.slot = e."timestamp"
    {_DEMAND_VALUES}
    WHERE e.event_type = {THREE_PHASE} AND e.position <= $2 AND v.profile = {THREE_PHASE_PROFILE}
),
{_channels_from_points("AND (s.meter_id, s.slot) IN (SELECT meter_id, slot FROM touched)")}"""
