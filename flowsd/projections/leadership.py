"""Which daemon runs which projection: one session-level advisory lock per projection.

Several daemons on one database would otherwise all project every event into every projection,
all but one of them losing each batch to the checkpoint's compare-and-set. Instead each
projection's projector is *active* in the one daemon whose leadership connection holds the
projection's lock (``pg_try_advisory_lock`` on :func:`leader_key`, a key distinct from the
per-transaction :func:`flowsd.projections.parking.lock_key`, which the active projector's own
transactions take on other connections); in the other daemons it *stands by*. The connection is
the runner's LISTEN connection: when it is lost, the locks go with its session, and every
projection stands by until a new connection holds them again. The connection also holds
:data:`PRESENCE_KEY` in shared mode: the number of its holders (``pg_locks``) is the number of
daemons sharing the projections, always current (a session that ends drops it at once, where
the lease registry's heartbeats would only lapse after a lease period).

:class:`Leadership` does rounds on that connection: at connect, then at each check of the
connection (``max(poll_interval_seconds, 1)`` apart) and at once on a NOTIFY on
:data:`LEADERSHIP_CHANNEL` (sent when a daemon lets locks go). A round:

1. the share is ``ceil(projections / daemons present)`` (alone: every projection); counting
   them also checks that the connection answers (a round not done within five checks' time
   ends the connection, as a lost one);
2. locks held beyond the share are let go (the projections last in this daemon's order) and
   the others told by NOTIFY;
3. below the share, the locks not held are tried in this daemon's order (projections sorted by
   a hash of instance name and projection name, so that daemons prefer different ones) until
   the share is held. A projection that two rounds in a row saw run by nobody (the daemons
   enabling it are at their shares: daemons that enable different ``[projections] enabled``)
   is taken beyond the share, *adopted*: not let go in step 2 until the number of daemons
   changes;
4. the checkpoints of the projections standing by are read, so that their status and metrics
   show the projection's progress wherever it runs (one statement).

A projector that is stood down finishes the transaction it is in and applies nothing more
until it is active again; made active, it reads its checkpoint and catches up from the log.
Correctness does not rest on the locks: every batch is still a compare-and-set of the
checkpoint (:mod:`flowsd.projections.projector`), so a late transaction of a projector just
stood down, or a ``flowsd replay`` swapping a projection in (it takes the per-transaction lock,
never these), makes the other side re-read, as before. The locks only keep the daemons from
doing the same work. A connection lost on this side whose backend lingers on the server (a cut
network) keeps its locks, and counts as a daemon present, until the server ends that session:
its projections are run by nobody meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import anyio
import asyncpg
import structlog

from flowsd.db.errors import DATABASE_ERRORS

log = structlog.get_logger("flowsd.projections")

LEADERSHIP_CHANNEL = "flowsd_projector_leadership"
# How long a stopping daemon spends letting its locks go (they go with the session anyway).
_RELEASE_SECONDS = 1.0


def leader_key(projection: str) -> int:
    """The session advisory-lock key whose holder runs ``projection`` (signed 64 bits)."""
    return _key(f"flowsd.projector.leader.{projection}")


def _key(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Held in shared mode by every daemon's leadership connection.
PRESENCE_KEY = _key("flowsd.projector.presence")
# pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits).
_HOLDERS = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = $3
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $1::bigint::oid AND objid = $2::bigint::oid
"""


_LEADERS = """
SELECT classid::bigint, objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = 'ExclusiveLock'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# Rounds a projection must be seen run by nobody before a daemon at its share adopts it.
_UNRUN_ROUNDS = 2


def _split(key: int) -> tuple[int, int]:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


async def _leaders(conn: asyncpg.Connection) -> set[tuple[int, int]]:
    """Every advisory lock held in exclusive mode in this database, as :func:`_split` gives."""
    return {(row["classid"], row["objid"]) for row in await conn.fetch(_LEADERS)}


async def _holders(conn: asyncpg.Connection, key: int, mode: str) -> list[int]:
    rows = await conn.fetch(_HOLDERS, *_split(key), mode)
    return [row["pid"] for row in rows]


async def holders(conn: asyncpg.Connection, projections: Sequence[str]) -> dict[str, int]:
    """The backend pid of the leadership connection running each of ``projections`` (those
    nobody runs are left out)."""
    found = {}
    for name in projections:
        for pid in await _holders(conn, leader_key(name), "ExclusiveLock"):
            found[name] = pid
    return found


class Led(Protocol):
    """What :class:`Leadership` needs of a projector task."""

    @property
    def name(self) -> str: ...

    def activate(self) -> None: ...

    def stand_down(self) -> None: ...

    def observe_checkpoint(self, position: int) -> None: ...


class Leadership:
    """The locks of one daemon's projections, held on one connection (see the module)."""

    def __init__(
        self,
        tasks: Sequence[Led],
        *,
        instance: str = "",
    ) -> None:
        self._tasks = sorted(tasks, key=lambda t: _preference(instance, t.name))
        self.held: set[str] = set()
        self.daemons = 1  # daemons present at the last round, this one included
        self._unrun: dict[str, int] = {}  # consecutive rounds that saw nobody run it
        self._adopted: set[str] = set()  # held beyond the share, kept until daemons change
        self._nudge = asyncio.Event()

    async def keep(self, conn: asyncpg.Connection, lost: asyncio.Event, check_every: float) -> None:
        """Do rounds on ``conn`` (after :meth:`start`) until it is lost or a round fails
        (raised); when cancelled, let the locks go and tell the other daemons."""
        try:
            while not lost.is_set():
                self._nudge.clear()
                with anyio.move_on_after(check_every):
                    await first_of(lost.wait(), self._nudge.wait())
                if not lost.is_set():
                    # A connection that died without a FIN (a cut network) never says so.
                    await asyncio.wait_for(self.round(conn), check_every * 5)
        except asyncio.CancelledError:
            await self._let_go(conn)
            raise

    async def start(self, conn: asyncpg.Connection) -> None:
        """LISTEN for other daemons letting locks go on ``conn``, then do the first round."""
        await conn.add_listener(LEADERSHIP_CHANNEL, self._on_notify)
        await conn.execute(f"SELECT pg_advisory_lock_shared({PRESENCE_KEY})")
        await self.round(conn)

    async def round(self, conn: asyncpg.Connection) -> None:
        """One round on ``conn`` (see the module docstring)."""
        daemons = max(len(await _holders(conn, PRESENCE_KEY, "ShareLock")), 1)
        if daemons != self.daemons:
            self.daemons = daemons
            self._adopted.clear()
        share = math.ceil(len(self._tasks) / self.daemons)
        run = await _leaders(conn)
        for task in self._tasks:
            unrun = _split(leader_key(task.name)) not in run
            self._unrun[task.name] = self._unrun.get(task.name, 0) + 1 if unrun else 0
        held = [t for t in self._tasks if t.name in self.held and t.name not in self._adopted]
        extra = held[share:]
        for task in extra:
            task.stand_down()
            await conn.fetchval("SELECT pg_advisory_unlock($1)", leader_key(task.name))
            self.held.discard(task.name)
        if extra:
            await conn.execute(f"NOTIFY {LEADERSHIP_CHANNEL}")
            log.info("projections let go for other daemons", projections=[t.name for t in extra])
        for task in self._tasks:
            if task.name in self.held:
                continue
            # Unrun for two rounds: no daemon below its share enables it; adopted beyond ours.
            adopt = self._unrun[task.name] >= _UNRUN_ROUNDS
            if len(self.held) - len(self._adopted) >= share and not adopt:
                continue
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", leader_key(task.name)):
                self.held.add(task.name)
                if len(self.held) - len(self._adopted) > share:
                    self._adopted.add(task.name)
                task.activate()
        standing_by = [t for t in self._tasks if t.name not in self.held]
        if not standing_by:
            return
        rows = await conn.fetch(
            "SELECT name, position FROM flowsd.projector_checkpoint WHERE name = ANY($1::text[])",
            [t.name for t in standing_by],
        )
        positions = {row["name"]: row["position"] for row in rows}
        for task in standing_by:
            task.observe_checkpoint(positions.get(task.name, 0))

    def lost(self) -> None:
        """The connection is gone, and its locks with it: every projection stands by."""
        for task in self._tasks:
            if task.name in self.held:
                task.stand_down()
        self.held.clear()
        self._adopted.clear()

    async def remove(self, conn: asyncpg.Connection) -> None:
        """Stop LISTENing on ``conn`` (shielded and bounded: also when cancelled)."""
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_RELEASE_SECONDS),
            contextlib.suppress(*DATABASE_ERRORS),
        ):
            await conn.remove_listener(LEADERSHIP_CHANNEL, self._on_notify)

    async def _let_go(self, conn: asyncpg.Connection) -> None:
        """Unlock and tell the other daemons, so a stop hands over at once (best effort)."""
        if not self.held or conn.is_closed():
            return
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_RELEASE_SECONDS),
            contextlib.suppress(*DATABASE_ERRORS),
        ):
            await conn.execute(f"SELECT pg_advisory_unlock_all(); NOTIFY {LEADERSHIP_CHANNEL}")
        self.lost()

    def _on_notify(self, *_: object) -> None:
        self._nudge.set()


def _preference(instance: str, projection: str) -> bytes:
    """Sorts a daemon's projections in its own order (see :meth:`Leadership.round`)."""
    return hashlib.blake2b(f"{instance}/{projection}".encode(), digest_size=8).digest()


async def first_of(*waits: Awaitable[Any]) -> None:
    """Return once any of ``waits`` is done (the others are cancelled)."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
