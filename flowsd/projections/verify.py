"""``flowsd verify``: rebuild projections aside and compare them with the live tables.

Each projection is rebuilt into a shadow table up to its live checkpoint (the live projector
keeps running meanwhile); then, holding the projection's lock so that the live table stands
still, the shadow is extended to the checkpoint as it is at that moment and the two are
compared row for row (EXCEPT ALL both ways). Nothing live is changed.

``from_snapshot``: the rebuild starts from the newest snapshot at or below the checkpoint
(:mod:`flowsd.projections.snapshot`) and reads only the events after it, so equality is
proven over that window of the log (the snapshot itself standing for the log before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from flowsd.events.checkpoints import read_checkpoint
from flowsd.projections.base import Projection
from flowsd.projections.parking import enter_projection
from flowsd.projections.progress import Progress
from flowsd.projections.rebuild import build_range, prepare_session
from flowsd.projections.snapshot import built_shadow, snapshots_for


@dataclass(frozen=True)
class Verdict:
    projection: str
    checkpoint: int
    since: int  # the rebuild read the events after this position (0, or a snapshot's)
    differences: int
    first: tuple[dict[str, Any], ...]  # up to `limit` differing rows, with their side
    parked_events: int

    @property
    def equal(self) -> bool:
        return self.differences == 0


async def verify(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    *,
    limit: int = 10,
    progress: Progress | None = None,
    from_snapshot: bool = False,
) -> list[Verdict]:
    await prepare_session(conn)
    checkpoints = {p.name: await read_checkpoint(conn, p.name) for p in projections}
    starts = dict.fromkeys(checkpoints, 0)
    snapshots = {}
    if from_snapshot:
        for projection in projections:
            snapshots.update(await snapshots_for(conn, [projection], checkpoints[projection.name]))
        starts = {name: snapshot.position for name, snapshot in snapshots.items()}
    if progress is None:
        total = sum(checkpoints[name] - starts[name] for name in checkpoints)
        progress = Progress(total, label="verify")
    verdicts = []
    for projection in projections:
        built = checkpoints[projection.name]
        since = starts[projection.name]
        async with (
            built_shadow(
                conn, projection, "verify", built, progress, snapshot=snapshots.get(projection.name)
            ) as shadow,
            conn.transaction(),
        ):
            await enter_projection(conn, projection.name)
            checkpoint = await read_checkpoint(conn, projection.name)
            if checkpoint > built:
                await build_range(conn, [shadow], built, checkpoint)
            compare = projection.compare_sql(projection.table, shadow.table)
            # One comparison for both the count and the first rows (it is the costly part).
            found = await conn.fetch(
                f"SELECT c.*, count(*) OVER () AS differences FROM ({compare}) c "
                f"LIMIT {max(int(limit), 1)}"
            )
            parked: int = await conn.fetchval(
                "SELECT count(*) FROM flowsd.projection_parked_event WHERE projection = $1",
                projection.name,
            )
        first = [{k: v for k, v in row.items() if k != "differences"} for row in found]
        count = found[0]["differences"] if found else 0
        verdicts.append(
            Verdict(projection.name, checkpoint, since, count, tuple(first[:limit]), parked)
        )
        progress.set_phase(f"compared {projection.name}")
    progress.finish()
    return verdicts
