"""The meter list, from ``flows.meter_registry``, kept current while the daemon runs.

Only active meters are considered (passive meters are never dialled), and of those only the
ones :func:`~flowsd.meters.dialplan.dial_plan` finds diallable: the others (no address, an
unusable one, no route to it, a second row for one device) are handed on as not dialled, and
each is logged once by serial (again only if its reason changes) and counted in
``flowsd_registry_not_dialled{reason}``. The list is re-read every
``[daemon] registry_reload_seconds``, shortly after a ``NOTIFY flowsd_meter_registry`` (sent by
triggers on the table on an insert, delete or truncate, and on an update only when it changes
one of the columns read here, migration 118), and when :meth:`RegistrySource.request_reload`
is called (SIGHUP). The consumer is called only when the plan differs from the one it has; a
failed reload keeps the previous list in force and is retried with the shared backoff.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, InitVar, dataclass, field
from uuid import UUID

import anyio
import anyio.to_thread
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskStatus

from flowsd.backoff import Backoff, Retry
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.errors import DATABASE_ERRORS, describe
from flowsd.db.listen import ListeningConnection
from flowsd.meters.dialplan import (
    NOT_DIALLED_KINDS,
    DialPlan,
    RegistryMeter,
    RegistryRow,
    address_problem,
    dial_plan,
    normalise,
    route_problem,
)
from flowsd.meters.sharing import held_id_objects, shared_text

__all__ = ["DialPlan", "RegistryMeter", "RegistrySource", "load_active_meters"]

log = structlog.get_logger("flowsd.meters.registry")

NOTIFY_CHANNEL = "flowsd_meter_registry"

# What a dial plan is made of, in its order. A periodic reload of an unchanged list reads a
# digest of the same rows instead of 20,000 of them (which it built into a plan, compared and
# threw away); the digest covers the order too.
_DIAL_COLUMNS = "id, serial, host(ip_address) AS address, nullif(hardware, '') AS hardware"
_ACTIVE = "FROM flows.meter_registry WHERE mode = 'active'"
_SELECT_ACTIVE = f"SELECT {_DIAL_COLUMNS} {_ACTIVE} ORDER BY created_at, id"
_DIGEST_ACTIVE = f"""
SELECT md5(coalesce(string_agg(dial::text, ',' ORDER BY created_at, id), ''))
FROM (SELECT {_DIAL_COLUMNS}, created_at {_ACTIVE}) AS dial
"""

# A burst of registry statements (a provisioning script) becomes one reload.
_DEBOUNCE_SECONDS = 0.5


async def load_active_meters(
    conn: asyncpg.Connection, known: Iterable[UUID] = ()
) -> list[RegistryRow]:
    """Every active row, oldest first. A row whose id is among ``known`` carries that id
    object instead of the one the database sent (one object per meter id)."""
    rows = await conn.fetch(_SELECT_ACTIVE)
    same = held_id_objects(known)
    return [
        RegistryRow(
            same(row["id"]),
            shared_text(row["serial"]),
            shared_text(row["address"]),
            shared_text(row["hardware"]),
        )
        for row in rows
    ]


Connect = Callable[[], Awaitable[asyncpg.Connection]]
# Called with the new plan and the source's connection (to read resume points for new meters).
Consumer = Callable[[DialPlan, asyncpg.Connection], Awaitable[None]]


class RegistryStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The meter list in force and its reloads."""

    dialled: int  # active meters flowsd dials
    not_dialled: dict[str, int]  # active meters it does not dial, by reason (every reason)
    reloads: int
    reload_errors: int
    lists_read: int = 0  # reloads that read the rows: the first, and those after a change


@dataclass(eq=False)
class RegistrySource:
    """Reloads the meter list periodically, on NOTIFY and on request."""

    connect: InitVar[Connect]
    consumer: Consumer
    _: KW_ONLY
    reload_seconds: float
    retry: InitVar[Backoff | None] = None
    availability: DatabaseAvailability = field(
        default_factory=lambda: DatabaseAvailability("the meter list's database")
    )
    plan: DialPlan | None = field(default=None, init=False)

    def __post_init__(self, connect: Connect, retry: Backoff | None) -> None:
        self._retry = Retry(retry or Backoff(0.5, 30.0))
        self._wake = anyio.Event()
        self._listening = ListeningConnection(connect, NOTIFY_CHANNEL, self._notified)
        self._routable: set[str] = set()  # addresses found routable (checked once each)
        self._reported: dict[UUID, str] = {}  # not-dialled reasons already logged
        self._reloads = 0
        self._lists_read = 0  # reloads that read the rows (the digest had changed)
        self._reload_errors = 0
        self._digest: str | None = None  # of the rows the plan in force was made from

    @property
    def meters(self) -> list[RegistryMeter] | None:
        """The dialled meters of the plan in force."""
        return None if self.plan is None else self.plan.dialled

    def statistics(self) -> RegistryStatistics:
        plan = self.plan
        not_dialled = plan.not_dialled if plan is not None else []
        return RegistryStatistics(
            dialled=len(plan.dialled) if plan is not None else 0,
            not_dialled={k: sum(m.kind == k for m in not_dialled) for k in NOT_DIALLED_KINDS},
            reloads=self._reloads,
            reload_errors=self._reload_errors,
            lists_read=self._lists_read,
        )

    def request_reload(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the list (retrying until the database answers), report started, keep it current."""
        try:
            while not await self.reload():
                await self._wait_retry()
            task_status.started()
            wait = self.reload_seconds
            while True:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                    await anyio.sleep(_DEBOUNCE_SECONDS)
                self._wake = anyio.Event()
                while not await self.reload():
                    await self._wait_retry()
        finally:
            await self._listening.close()

    async def _wait_retry(self) -> None:
        """The backoff after a failed reload, cut short by a reload request or by another
        component finding the database back."""
        delay = min(self._retry.next_delay(), self.reload_seconds)
        with anyio.move_on_after(delay):
            async with anyio.create_task_group() as tg:

                async def back() -> None:
                    await self.availability.wait(delay)
                    tg.cancel_scope.cancel()

                tg.start_soon(back)
                await self._wake.wait()
                tg.cancel_scope.cancel()
        self._wake = anyio.Event()

    async def reload(self) -> bool:
        """Read the list and hand it on if it changed; False when the database failed."""
        try:
            conn = await self._listening.connection()
            digest = await conn.fetchval(_DIGEST_ACTIVE)
            self._reloads += 1
            if digest != self._digest or not self._settled():
                await self._load(conn)
                self._digest = digest  # of rows no newer than those loaded
            self._retry.reset()
            self.availability.succeeded("meter list")
            return True
        except DATABASE_ERRORS as exc:
            self._reload_errors += 1
            self.availability.failed("meter list", exc)
            log.warning("meter list reload failed; keeping the current list", error=describe(exc))
            await self._listening.close()
            return False

    async def _load(self, conn: asyncpg.Connection) -> None:
        rows = await load_active_meters(conn, self._known_ids())
        self._lists_read += 1
        plan = await self._plan(rows)
        if plan != self.plan:
            await self.consumer(plan, conn)
            if self.plan is not None:
                before = len(self.plan.dialled)
                log.info("meter list changed", meters=len(plan.dialled), before=before)
            self.plan = plan
            self._report(plan)

    def _settled(self) -> bool:
        """A plan is in force that a reload of the same rows would not change: none of its
        meters waits for a route to its network (asked again at every reload)."""
        return self.plan is not None and all(
            m.kind != "unreachable_network" for m in self.plan.not_dialled
        )

    def _known_ids(self) -> Iterator[UUID]:
        """The ids of the plan in force: a reload reuses these objects, which the fleet's
        sessions, the leases and the seeds already hold, rather than adding a second UUID per
        meter (read per reload, so a meter that left is not kept)."""
        if self.plan is not None:
            yield from (m.meter_id for m in self.plan.dialled)
            yield from (m.meter_id for m in self.plan.not_dialled)

    async def _plan(self, rows: Sequence[RegistryRow]) -> DialPlan:
        """The dial plan, asking the routing table (in a thread) about new addresses only."""
        hosts = {
            sys.intern(str(normalise(r.address)))
            for r in rows
            if r.address is not None and address_problem(r.address) is None
        }
        unknown = hosts - self._routable
        if not unknown:
            return dial_plan(rows)
        routes = await anyio.to_thread.run_sync(_route_problems, sorted(unknown))
        self._routable.update(a for a in unknown if routes.get(a) is None)
        return dial_plan(rows, unroutable=routes.get)

    def _report(self, plan: DialPlan) -> None:
        """Log each not-dialled meter once (and again only when its reason changes)."""
        now = {m.meter_id: m for m in plan.not_dialled}
        for meter in plan.not_dialled:
            if self._reported.get(meter.meter_id) != meter.reason:
                log.warning(
                    "active meter not dialled",
                    meter_serial=meter.serial,
                    meter_id=str(meter.meter_id),
                    reason=meter.kind,
                    detail=meter.reason,
                )
        for meter_id in [m for m in self._reported if m not in now]:
            del self._reported[meter_id]
        self._reported.update((m.meter_id, m.reason) for m in plan.not_dialled)

    def _notified(self) -> None:
        self._wake.set()


def _route_problems(addresses: Sequence[str]) -> dict[str, str | None]:
    return {address: route_problem(address) for address in addresses}
