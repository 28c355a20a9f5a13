"""The registry's meter list made this daemon's fleet.

:class:`MeterList` runs the :class:`~flowsd.meters.registry.RegistrySource` and, for each new
list, makes the dialled meters the candidates of this daemon's leases
(:class:`~flowsd.meters.ownership.Ownership`). Whenever the list or the leases held change,
:meth:`MeterList.apply_owned` makes the fleet supervisor's fleet the dialled meters whose lease
this daemon holds: a meter joining the fleet gets its resume point and the change detector's
last known state from the database; one leaving it is forgotten by the ingest pipeline and the
detector; ``fleet_changed`` is called after either. The session tracker gets a row for every
listed meter (with why, for those nobody dials, for ``flowsd status``) and forgets the
unlisted ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field

import anyio
import anyio.abc
import asyncpg
import structlog

from flowsd.backoff import Backoff
from flowsd.db.availability import DatabaseAvailability
from flowsd.ingest.pipeline import Ingest
from flowsd.ingest.seed import load_meter_states, load_resume
from flowsd.ingest.sessions import SessionTracker, load_rows
from flowsd.meters.ownership import Ownership
from flowsd.meters.registry import DialPlan, RegistrySource
from flowsd.meters.supervisor import FleetSupervisor
from flowsd.meters.target import NO_RESUME, MeterTarget

log = structlog.get_logger("flowsd.app")


@dataclass(eq=False)
class MeterList:
    """The meter list in force and what applying it (or a change of leases) does."""

    supervisor: FleetSupervisor
    ownership: Ownership
    ingest: Ingest  # with the change detector to seed
    tracker: SessionTracker
    connect: InitVar[Callable[[], Awaitable[asyncpg.Connection]]]
    reload_seconds: InitVar[float]
    retry: InitVar[Backoff]
    availability: InitVar[DatabaseAvailability]
    fleet_changed: Callable[[], None] | None = None  # after meters joined or left the fleet
    registry: RegistrySource = field(init=False)
    _dial_plan: DialPlan | None = field(default=None, init=False)
    _lock: anyio.Lock = field(default_factory=anyio.Lock, init=False)
    _scope: anyio.CancelScope | None = field(default=None, init=False)

    def __post_init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        reload_seconds: float,
        retry: Backoff,
        availability: DatabaseAvailability,
    ) -> None:
        self.registry = RegistrySource(
            connect,
            self._apply_list,
            reload_seconds=reload_seconds,
            retry=retry,
            availability=availability,
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Keep the list current until :meth:`stop`."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            await self.registry.run(task_status=task_status)

    def stop(self) -> None:
        """Stop reloading the list (the fleet stays as it is)."""
        if self._scope is not None:
            self._scope.cancel()

    async def _apply_list(self, plan: DialPlan, conn: asyncpg.Connection) -> None:
        """A new meter list: its dialled meters are the candidates for this daemon's share."""
        self._dial_plan = plan
        self.ownership.set_candidates(m.meter_id for m in plan.dialled)
        await self.apply_owned(conn)

    async def apply_owned(self, conn: asyncpg.Connection | None) -> None:
        """Make the fleet the dialled meters whose lease this daemon holds (new ones get
        their resume and seed state) and record the meters nobody dials, with why, for
        ``flowsd status``. Without ``conn`` meters can only leave the fleet."""
        async with self._lock:
            if self._dial_plan is not None:
                await self._apply_plan(self._dial_plan, conn)

    async def _apply_plan(self, plan: DialPlan, conn: asyncpg.Connection | None) -> None:
        owns = self.ownership.owns
        meters = [m for m in plan.dialled if owns(m.meter_id)]
        known = self.supervisor.sessions
        new_ids = [m.meter_id for m in meters if m.meter_id not in known]
        if conn is None:
            meters = [m for m in meters if m.meter_id in known]
            new_ids = []
        resume = await load_resume(conn, new_ids) if conn is not None and new_ids else {}
        if conn is not None and new_ids:
            self.ingest.detector.seed(await load_meter_states(conn, new_ids))
        unseen = [m.meter_id for m in meters if m.meter_id not in self.tracker.rows]
        unseen += [m.meter_id for m in plan.not_dialled if m.meter_id not in self.tracker.rows]
        if unseen and conn is not None:
            for meter_id, row in (await load_rows(conn, unseen)).items():
                self.tracker.rows.setdefault(meter_id, row)
        targets = []
        for meter in meters:
            self.ingest.set_hardware(meter.meter_id, meter.hardware)
            targets.append(
                MeterTarget(
                    meter_id=meter.meter_id,
                    serial=meter.serial,
                    ip_address=meter.ip_address,
                    hardware=meter.hardware,
                    resume=resume.get(meter.meter_id, NO_RESUME),
                )
            )
        wanted = {m.meter_id for m in meters}
        gone = [meter_id for meter_id in known if meter_id not in wanted]
        result = self.supervisor.apply(targets)
        for meter_id in gone:
            self.ingest.forget(meter_id)
            self.ingest.detector.forget(meter_id)
        for skipped in plan.not_dialled:
            self.tracker.not_dialled(skipped.meter_id, skipped.serial, skipped.reason)
        listed = wanted | {m.meter_id for m in plan.not_dialled}
        for meter_id in [m for m in self.tracker.rows if m not in listed]:
            self.tracker.forget(meter_id)
        if (result.added or result.removed) and self.fleet_changed is not None:
            self.fleet_changed()
        log.info(
            "meter list applied",
            added=result.added,
            updated=result.updated,
            removed=result.removed,
            unchanged=result.unchanged,
            not_dialled=len(plan.not_dialled),
        )
