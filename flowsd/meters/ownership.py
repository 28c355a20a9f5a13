"""Sharing the fleet between daemons: leases in PostgreSQL, rendezvous shares, fencing epochs.

Every daemon registers a row in ``flowsd.daemon`` (name, host, pid, start, heartbeat, lease
period; migration 110) and polls only the meters it holds a lease for in
``flowsd.meter_lease``. One loop per daemon, every ``[leases] renew_seconds``:

1. in one transaction: the heartbeat, the renewal of every lease it holds (one ``UPDATE``
   for all of them) and the list of live daemons (no stop recorded, a heartbeat younger than
   their own lease period). A lease it held that the renewal no longer finds was taken over
   after it expired (the daemon was paused or cut off): the meter leaves the fleet at once.
   The renewal returns only how many leases it renewed and the sum of their epochs; the rows
   themselves are read when those differ from :attr:`Ownership.held`, after a failed round
   and after a fenced command. A lease lost makes the count smaller, and only a gain in the
   same round could hide that: leases gain this daemon's name by its own takes, which
   ``held`` records, except in a round that failed (a commit it did not see; the rows are
   read next). An epoch moved on under this daemon's name (a second process under the same
   name) changes the sum;
2. its share: each dialled meter goes to the live daemon with the highest rendezvous score
   (a hash of daemon name and meter id), so a daemon joining or leaving moves only the meters
   that go to or come from it;
3. meters it holds outside its share are *held back* (no new routine poll), and those whose
   session is idle leave the fleet and are handed back (lease row freed): a meter changes hands
   only between polls. Handing back keeps the epoch;
4. meters of its share that are free or expired are taken in one statement under the event
   log's append lock, each with a new epoch from ``flowsd.meter_lease_epoch_seq``, and join
   the fleet (resuming where the log stops). A meter still held by another live daemon is
   taken when that one hands it back.

Fencing: :attr:`Ownership.epochs` (meter -> the epoch held, or last held) goes with every
append (:mod:`flowsd.events.store`), and the database refuses the events of a meter whose
epoch has moved on. Because every change of epoch takes the append lock, the check and the
append's commit see the same holder. Commands are fenced too: the command table claims a row
only for a meter whose lease this daemon holds in the database at the epoch of :attr:`held`
(:mod:`flowsd.control.table`), and every command that is not a plain object read (a mediator
write or raw exchange, a claimed table command that writes) asks :meth:`confirm` again as the
meter's session starts it, before anything of it is sent (:meth:`Ownership.fence`, the
command's guard): a claimed row whose lease passed on while it waited in the session is
refused there. Each refusal is counted by :meth:`fenced`, which also renews at once, so the
daemon drops the meters it lost without waiting for the next round.

Self-protection: a renewal must succeed within 0.9 lease periods of the previous one being
sent; otherwise (database away, the process paused) a daemon that last saw other live
daemons drops all its meters before their leases can expire, so two daemons never poll one
meter, even across a network split. A daemon that was alone keeps polling through a database
outage (spilling events, as before leases existed): nobody could take its meters over. A
paused process cannot protect itself: its first appends after waking are fenced.

On stop (:meth:`Ownership.release_all`, after the last polls and the appender's drain): every
lease is handed back and the daemon's row marked stopped, so the others take its meters at
their next renewal instead of after expiry.

With one daemon this is a no-op in effect: it holds every meter (a leftover lease of a daemon
under another name is taken once it expires).
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from uuid import UUID

import anyio
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskStatus

from flowsd.db.availability import DatabaseAvailability
from flowsd.db.connect import close_quietly
from flowsd.db.errors import DATABASE_ERRORS, describe
from flowsd.events.store import APPEND_LOCK_KEY
from flowsd.meters.command import CommandResult, MeterCommand, refused
from flowsd.meters.operations import ReadObject
from flowsd.meters.sharing import held_id_objects
from flowsd.meters.supervisor import FleetSupervisor

log = structlog.get_logger("flowsd.meters.ownership")

Connect = Callable[[], Awaitable[asyncpg.Connection]]
# Called after the held set changed (with the loop's connection, or None when it was
# dropped without one); makes the fleet the dialled meters this daemon holds.
Changed = Callable[[asyncpg.Connection | None], Awaitable[None]]
# The daemon's pool, None until the database first answered.
PoolOf = Callable[[], asyncpg.Pool | None]

# A renewal must succeed within this share of a lease period of the previous one.
SAFETY = 0.9

_REGISTER = """
INSERT INTO flowsd.daemon AS d (name, host, pid, started_at, heartbeat_at, lease_seconds)
VALUES ($1, $2, $3, $4, now(), $5)
ON CONFLICT (name) DO UPDATE
SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    heartbeat_at = now(), lease_seconds = excluded.lease_seconds, stopped_at = NULL
"""
# An earlier run under this name (crashed) left leases: free them, the epochs move on when
# they are taken again.
_FORGET_EARLIER = "UPDATE flowsd.meter_lease SET daemon = NULL WHERE daemon = $1"
_HEARTBEAT = "UPDATE flowsd.daemon SET heartbeat_at = now() WHERE name = $1"
# Not a row per lease: 20,000 records, UUIDs and ints every few seconds, freed at once.
_RENEW = """
WITH renewed AS (
    UPDATE flowsd.meter_lease SET expires_at = now() + make_interval(secs => $2)
    WHERE daemon = $1
    RETURNING epoch
)
SELECT count(*) AS meters, coalesce(sum(epoch), 0) AS epochs FROM renewed
"""
_HELD_ROWS = "SELECT meter_id, epoch FROM flowsd.meter_lease WHERE daemon = $1"
_LIVE = """
SELECT name FROM flowsd.daemon
WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => lease_seconds)
"""
_TAKE_FREE = """
WITH free AS (
    SELECT meter_id, daemon AS previous FROM flowsd.meter_lease
    WHERE meter_id = ANY($1::uuid[]) AND (daemon IS NULL OR expires_at < now())
    FOR UPDATE
)
UPDATE flowsd.meter_lease lease
SET daemon = $2, epoch = nextval('flowsd.meter_lease_epoch_seq'), acquired_at = now(),
    expires_at = now() + make_interval(secs => $3)
FROM free WHERE lease.meter_id = free.meter_id
RETURNING lease.meter_id, lease.epoch, free.previous
"""
_TAKE_NEW = """
INSERT INTO flowsd.meter_lease (meter_id, daemon, epoch, expires_at)
SELECT meter_id, $2, nextval('flowsd.meter_lease_epoch_seq'), now() + make_interval(secs => $3)
FROM unnest($1::uuid[]) AS m(meter_id)
ON CONFLICT (meter_id) DO NOTHING
RETURNING meter_id, epoch
"""
_HAND_BACK = """
UPDATE flowsd.meter_lease SET daemon = NULL, expires_at = now()
WHERE daemon = $1 AND meter_id = ANY($2::uuid[])
"""
# A database that does not answer, or not in time.
_RELEASE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, TimeoutError)
_HOLDER = """
SELECT daemon, epoch, expires_at > now() AS current FROM flowsd.meter_lease WHERE meter_id = $1
"""
# How long a command waits for the database to confirm its meter's lease.
CONFIRM_TIMEOUT = 5.0
# Where a fenced command came from (the label of flowsd_fenced_commands_total).
FENCED_SOURCES = ("database", "grpc")
_STOPPED = "UPDATE flowsd.daemon SET stopped_at = now(), heartbeat_at = now() WHERE name = $1"


def score(daemon: str, meter_id: UUID) -> int:
    """The rendezvous score of a daemon for a meter (highest wins)."""
    digest = hashlib.blake2b(meter_id.bytes + daemon.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(meter_id: UUID, daemons: Iterable[str]) -> str | None:
    """The daemon a meter goes to among ``daemons`` (None if there is none)."""
    best: tuple[int, str] | None = None
    for daemon in daemons:
        candidate = (score(daemon, meter_id), daemon)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


class OwnershipStatistics(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    owned: int
    share: int  # meters of this daemon's share (held or still to be taken)
    live_daemons: list[str]
    renewals: int
    acquired: int
    takeovers: int
    handed_back: int
    lost: int
    fenced_commands: dict[str, int] = {}  # by source: database (table rows), grpc (mediator)


@dataclass(eq=False)
class Ownership:
    """The lease loop of one daemon (see the module docstring)."""

    connect: Connect
    supervisor: FleetSupervisor
    changed: Changed
    _: KW_ONLY
    name: str
    lease_seconds: float
    renew_seconds: float = 0.0  # 0: a third of lease_seconds
    availability: DatabaseAvailability | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone(), init=False)
    # meter -> epoch, leases held now
    held: dict[UUID, int] = field(default_factory=dict, init=False)
    # meter -> epoch held or last held (fencing)
    epochs: dict[UUID, int] = field(default_factory=dict, init=False)
    # dialled meters (the registry's)
    candidates: frozenset[UUID] = field(default=frozenset(), init=False)
    live: tuple[str, ...] = field(default=(), init=False)
    _share: AbstractSet[UUID] = field(default_factory=frozenset, init=False)
    _share_key: tuple[frozenset[UUID], tuple[str, ...]] | None = field(default=None, init=False)
    # monotonic: the held leases are dropped after this
    _deadline: float = field(default=-math.inf, init=False)
    _conn: asyncpg.Connection | None = field(default=None, init=False)
    _registered: bool = field(default=False, init=False)
    # The next renewal reads the lease rows, not only their count and epoch sum.
    _list_leases: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        self.renew_seconds = self.renew_seconds or self.lease_seconds / 3
        self._stopping = False
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one user of the connection at a time
        self._counts = {"renewals": 0, "acquired": 0, "takeovers": 0, "handed_back": 0, "lost": 0}
        self._fenced = dict.fromkeys(FENCED_SOURCES, 0)

    # ----------------------------------------------------------------- public

    def owns(self, meter_id: UUID) -> bool:
        return meter_id in self.held

    def set_candidates(self, meter_ids: Iterable[UUID]) -> None:
        """The dialled meters (from the meter list); a change is looked at soon."""
        candidates = frozenset(meter_ids)
        if candidates != self.candidates:
            self.candidates = candidates
            self._wake.set()

    def statistics(self) -> OwnershipStatistics:
        return OwnershipStatistics(
            name=self.name,
            owned=len(self.held),
            share=len(self._share),
            live_daemons=list(self.live),
            fenced_commands=dict(self._fenced),
            **self._counts,
        )

    def fenced(self, source: str, count: int = 1) -> None:
        """Count commands refused because this daemon's lease had passed on, and renew now:
        the renewal finds the leases lost and drops their meters."""
        self._fenced[source] += count
        self._list_leases = True
        self.renew_soon()

    def renew_soon(self) -> None:
        """Start the next round now (a lease was found lost or lapsed)."""
        self._wake.set()

    @property
    def alone(self) -> bool:
        """No other live daemon at the last renewal."""
        return all(name == self.name for name in self.live)

    async def confirm(self, pool: asyncpg.Pool, meter_id: UUID, *, source: str) -> str | None:
        """None if the database says this daemon holds the meter's lease now, at the epoch
        it believes (:attr:`held`); otherwise why not, naming the holder (counted as fenced
        from ``source`` when the lease passed on). A lease still this daemon's but lapsed
        (not renewed in time) and a database that cannot answer refuse too, unless this
        daemon last saw itself alone: nobody could take its meters over (it keeps them
        through an outage, see the module docstring)."""
        epoch = self.held.get(meter_id)
        if epoch is None:
            return "this daemon no longer holds the meter's lease"
        try:
            row = await pool.fetchrow(_HOLDER, meter_id, timeout=CONFIRM_TIMEOUT)
        except _RELEASE_ERRORS as exc:
            if self.alone:
                return None
            return f"the database cannot confirm this daemon's lease ({describe(exc)})"
        if row is not None and row["daemon"] == self.name and row["epoch"] == epoch:
            if row["current"] or self.alone:
                return None
            self.renew_soon()
            return "this daemon's lease of the meter lapsed; it is being renewed"
        if row is None or row["daemon"] is None:
            why = "nobody holds the meter's lease now (this daemon's lapsed)"
        elif row["daemon"] != self.name:
            why = f"the meter's lease is held by daemon {row['daemon']}"
        else:
            why = "this daemon's lease of the meter lapsed and was taken again"
        self.fenced(source)
        return why

    def fence(self, command: MeterCommand, pool: PoolOf, meter_id: UUID) -> None:
        """Give ``command`` (not yet queued) the lease check as its guard unless it is a plain
        object read: as the session starts it, before anything is sent, :meth:`confirm`
        (counted by the command's source); a refusal is its result, ``unavailable`` with why."""
        if isinstance(command.operation, ReadObject):
            return
        source = command.source

        async def guard() -> CommandResult | None:
            current = pool()
            if current is None:
                return refused("unavailable", "the database is not reachable yet")
            why = await self.confirm(current, meter_id, source=source)
            return None if why is None else refused("unavailable", why)

        command.guard = guard

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew, rebalance and take over until :meth:`release_all`; the first round is done
        (or failed) before this reports started."""
        started = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._expiry_watch)
                while not self._stopping:
                    async with self._lock:
                        if self._stopping:
                            break
                        await self._round()
                    if not started:
                        task_status.started()
                        started = True
                    with anyio.move_on_after(self.renew_seconds):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                tg.cancel_scope.cancel()
        finally:
            if not started:
                task_status.started()

    async def release_all(self) -> None:
        """Hand every lease back and mark this daemon stopped (call after the last polls and
        the appender's drain). A database that is away leaves the leases to expire."""
        self._stopping = True
        self._wake.set()
        async with self._lock:
            await self._release_all()

    async def _release_all(self) -> None:
        held = list(self.held)
        await self._close()  # a round cancelled mid-statement may have left it unusable
        try:
            with anyio.fail_after(10):
                conn = await self._connection()
                async with conn.transaction():
                    if held:
                        await conn.execute(_HAND_BACK, self.name, held)
                    await conn.execute(_STOPPED, self.name)
        except _RELEASE_ERRORS as exc:
            log.warning("leases not handed back; they expire instead", error=describe(exc))
            return
        finally:
            await self._close()
        self._counts["handed_back"] += len(held)
        self.held.clear()
        log.info("leases handed back", meters=len(held))

    # ----------------------------------------------------------------- one round

    async def _round(self) -> None:
        try:
            conn = await self._connection()
            await self._renew(conn)
            if self._stopping:
                return
            self._rebalance_share()
            await self._hand_back(conn)
            await self._take(conn)
            if self.availability is not None:
                self.availability.succeeded("leases")
        except DATABASE_ERRORS as exc:
            self._list_leases = True  # a take may have committed unseen
            if self.availability is not None:
                self.availability.failed("leases", exc)
            log.warning("leases not renewed; will retry", error=describe(exc))
            await self._close()

    async def _renew(self, conn: asyncpg.Connection) -> None:
        sent = time.monotonic()
        # Taken before the first await: a fence meanwhile asks the next round again.
        list_rows, self._list_leases = self._list_leases, False
        async with conn.transaction():
            if not self._registered:
                await conn.execute(
                    _REGISTER,
                    self.name,
                    socket.gethostname(),
                    os.getpid(),
                    self.started_at,
                    self.lease_seconds,
                )
                await conn.execute(_FORGET_EARLIER, self.name)
            else:
                await conn.execute(_HEARTBEAT, self.name)
            summary = await conn.fetchrow(_RENEW, self.name, self.lease_seconds)
            assert summary is not None
            as_held = (
                not list_rows
                and summary["meters"] == len(self.held)
                and summary["epochs"] == sum(self.held.values())
            )
            rows = None if as_held else await conn.fetch(_HELD_ROWS, self.name)
            live = await conn.fetch(_LIVE)
        self._registered = True
        self._deadline = sent + SAFETY * self.lease_seconds
        self._counts["renewals"] += 1
        self.live = tuple(sorted(row["name"] for row in live))
        if rows is None:
            return
        renewed = {row["meter_id"]: row["epoch"] for row in rows}
        lost = [m for m in self.held if renewed.get(m) != self.held[m]]
        if lost:
            self._counts["lost"] += len(lost)
            log.warning("leases taken over by another daemon: meters dropped", meters=len(lost))
        if lost or renewed.keys() != self.held.keys():
            # Keyed by the id objects the daemon holds already, not the database's copies.
            same = held_id_objects(self.candidates, self.held)
            self.held = {same(m): epoch for m, epoch in renewed.items()}
            self.epochs.update(self.held)
            await self.changed(conn)

    def _rebalance_share(self) -> None:
        live = self.live if self.name in self.live else (*self.live, self.name)
        key = (self.candidates, live)
        if key == self._share_key:
            return
        self._share_key = key
        if live == (self.name,):
            self._share = self.candidates  # alone: all of them (no second set of 20,000)
        else:
            self._share = frozenset(m for m in self.candidates if owner_of(m, live) == self.name)

    async def _hand_back(self, conn: asyncpg.Connection) -> None:
        """Meters held outside the share: held back, and handed back once idle."""
        surplus = [m for m in self.held if m not in self._share]
        supervisor = self.supervisor
        supervisor.hold_back(
            [m for m in supervisor.held_back if m in self._share and m in self.held], release=True
        )
        if not surplus:
            return
        supervisor.hold_back(surplus)
        idle = [m for m in surplus if supervisor.idle(m)]
        if not idle:
            return
        for meter_id in idle:
            del self.held[meter_id]
        await self.changed(conn)  # they leave the fleet before anyone else may dial them
        await conn.execute(_HAND_BACK, self.name, idle)
        self._counts["handed_back"] += len(idle)
        log.info("leases handed back for rebalancing", meters=len(idle), live=len(self.live))

    async def _take(self, conn: asyncpg.Connection) -> None:
        wanted = [m for m in self._share if m not in self.held]
        if not wanted:
            return
        async with conn.transaction():
            # Ordered with every append: no append checks an epoch while it changes.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
            taken = await conn.fetch(_TAKE_FREE, wanted, self.name, self.lease_seconds)
            found = {row["meter_id"] for row in taken}
            fresh = await conn.fetch(
                _TAKE_NEW, [m for m in wanted if m not in found], self.name, self.lease_seconds
            )
        if not taken and not fresh:
            return
        takeovers = sum(1 for row in taken if row["previous"] not in (None, self.name))
        # The candidates' id objects (the meter list's, which its sessions hold), not the
        # database's copies: one UUID per meter.
        same = held_id_objects(wanted)
        for row in (*taken, *fresh):
            meter_id = same(row["meter_id"])
            self.held[meter_id] = row["epoch"]
            self.epochs.pop(meter_id, None)  # an older id object of a meter held before
            self.epochs[meter_id] = row["epoch"]
        acquired = len(taken) + len(fresh)
        self._counts["acquired"] += acquired
        self._counts["takeovers"] += takeovers
        await self.changed(conn)
        log.info("leases taken", meters=acquired, takeovers=takeovers, live=len(self.live))

    async def _expiry_watch(self) -> None:
        """Drop every meter when no renewal succeeded in time (see the module docstring)."""
        while True:
            delay = self._deadline - time.monotonic()
            if delay > 0:
                await anyio.sleep(min(delay, self.renew_seconds))
                continue
            if self.held and any(name != self.name for name in self.live):
                dropped = len(self.held)
                self.held = {}
                self._counts["lost"] += dropped
                log.error(
                    "leases not renewed in time: every meter dropped until the database answers",
                    meters=dropped,
                )
                await self.changed(None)
            await anyio.sleep(min(self.renew_seconds, 0.5))

    # ----------------------------------------------------------------- connection

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.connect()
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await close_quietly(conn)
