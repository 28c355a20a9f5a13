"""Which register an observation belongs to: ``meter_registers`` by meter, element and time.

The rule, shared by the live projectors (through :func:`resolve_registers`) and the SQL
rebuilds (through :func:`candidate_registers_sql`), so both pick the same register:

* element ``A`` readings go to the meter's ``A`` register, else to its ``SINGLE`` one;
  ``B`` to ``B``; ``SINGLE`` to ``SINGLE``;
* the register must be valid at the observation's time: ``start_time <= t < end_time`` (open
  ends when NULL), and either enabled or closed by an ``end_time`` (a ``replaced`` register with
  no end is never chosen);
* among several valid ones: the exact element first, then the latest ``start_time``, then the
  smallest ``register_id``.

A meter replaced mid-day has new registers (on the new meter, or on the same one with a new
``start_time``): each observation lands on the register valid at its own time.

The register is chosen when an event is applied. Rows already written are not re-mapped when
an operator later edits ``meter_registers`` (a new register, a changed window, element or
``direction_reversed``): rebuild the per-register tables after such an edit, whole (a windowed
replay keeps earlier rows on the registers they had), with ``flowsd replay --projection
register_import --projection register_export --projection register_interval_hh``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

Lookup = tuple[UUID, str, datetime]  # meter, element of the reading, observation time


@dataclass(frozen=True)
class RegisterRef:
    register_id: UUID
    direction_reversed: bool


def _valid_at(registers: str, at: str) -> str:
    return f"""({registers}.start_time IS NULL OR {registers}.start_time <= {at})
        AND ({registers}.end_time IS NULL OR {at} < {registers}.end_time)
        AND (coalesce({registers}.status::text, 'enabled') = 'enabled'
             OR {registers}.end_time IS NOT NULL)"""


_RESOLVE = f"""
SELECT u.ordinal, chosen.register_id, chosen.direction_reversed
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
     WITH ORDINALITY AS u(meter_id, element, at, ordinal)
CROSS JOIN LATERAL (
    SELECT r.register_id, r.direction_reversed
    FROM flows.meter_registers r
    WHERE r.meter_id = u.meter_id
      AND (r.element::text = u.element OR (u.element = 'A' AND r.element::text = 'SINGLE'))
      AND {_valid_at("r", "u.at")}
    ORDER BY (r.element::text = u.element) DESC, r.start_time DESC NULLS LAST, r.register_id
    LIMIT 1
) AS chosen
"""


async def resolve_registers(
    conn: asyncpg.Connection, lookups: Iterable[Lookup]
) -> dict[Lookup, RegisterRef]:
    """The register of each lookup that has one (lookups without a register are absent)."""
    wanted = list(dict.fromkeys(lookups))
    if not wanted:
        return {}
    rows = await conn.fetch(
        _RESOLVE, [w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]
    )
    return {
        wanted[row["ordinal"] - 1]: RegisterRef(row["register_id"], row["direction_reversed"])
        for row in rows
    }


SEGMENT_TABLE = "pg_temp.flowsd_register_segment"

# The rule as a timeline: for each (meter, requested element), the time axis cut at every
# start_time / end_time of its candidates; within a segment no candidate's validity changes,
# so the register chosen at the segment's start is the one for all of it. The segments do not
# overlap, so a rebuild maps millions of rows with a plain range join.
_SEGMENTS = f"""
WITH candidate AS (
    SELECT r.meter_id, wanted.element, r.register_id, r.direction_reversed, r.start_time,
           r.end_time, r.status,
           row_number() OVER (PARTITION BY r.meter_id, wanted.element
                              ORDER BY (r.element::text = wanted.element) DESC,
                                       r.start_time DESC NULLS LAST, r.register_id) AS rank
    FROM flows.meter_registers r
    JOIN (VALUES ('A'), ('B'), ('SINGLE')) AS wanted(element)
      ON r.element::text = wanted.element
         OR (wanted.element = 'A' AND r.element::text = 'SINGLE')
),
cut AS (
    SELECT meter_id, element, timestamptz '-infinity' AS at FROM candidate
    UNION SELECT meter_id, element, start_time FROM candidate WHERE start_time IS NOT NULL
    UNION SELECT meter_id, element, end_time FROM candidate WHERE end_time IS NOT NULL
),
segment AS (
    SELECT meter_id, element, at AS seg_start,
           coalesce(lead(at) OVER (PARTITION BY meter_id, element ORDER BY at),
                    timestamptz 'infinity') AS seg_end
    FROM cut
)
SELECT DISTINCT ON (s.meter_id, s.element, s.seg_start)
       s.meter_id, s.element, s.seg_start, s.seg_end, c.register_id, c.direction_reversed
FROM segment s
JOIN candidate c
  ON c.meter_id = s.meter_id AND c.element = s.element AND {_valid_at("c", "s.seg_start")}
ORDER BY s.meter_id, s.element, s.seg_start, c.rank
"""


async def prepare_candidates(conn: asyncpg.Connection) -> None:
    """(Re)create this session's table of register segments for a rebuild.

    A temporary table with an index and statistics, so the planner maps rows to registers
    with a hash or index join.
    """
    await conn.execute(f"DROP TABLE IF EXISTS {SEGMENT_TABLE}")
    await conn.execute(f"CREATE TEMPORARY TABLE flowsd_register_segment AS {_SEGMENTS}")
    await conn.execute(
        f"CREATE INDEX ON {SEGMENT_TABLE} (meter_id, element, seg_start); ANALYZE {SEGMENT_TABLE}"
    )


def candidate_registers_sql(source: str, element: str, at: str) -> str:
    """FROM-clause fragment joining ``source`` rows to their register as ``reg``.

    Needs :func:`prepare_candidates` first in the session. Ends with a WHERE clause: callers
    add conditions with AND.
    """
    return f"""JOIN {SEGMENT_TABLE} reg
      ON reg.meter_id = {source}.meter_id AND reg.element = {element}
     AND reg.seg_start <= {at} AND {at} < reg.seg_end
    WHERE true"""
