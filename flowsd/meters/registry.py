"""The meter list, from ``flows.meter_registry``, kept current while the daemon runs.

Only active meters with an address are polled (passive meters are never dialled). The list
is re-read every ``[daemon] registry_reload_seconds``, shortly after a ``NOTIFY
flowsd_meter_registry`` (sent by a statement trigger on the table, migration 30), and when
:meth:`RegistrySource.request_reload` is called (SIGHUP). The consumer is called only when
the list differs from the one it has; a failed reload keeps the previous list in force.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

import anyio
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskStatus
from prometheus_client import Counter, Gauge

from flowsd.db.connect import CONNECTION_ERRORS
from flowsd.errors import UserError
from flowsd.ops.metrics import REGISTRY

log = structlog.get_logger("flowsd.meters.registry")

NOTIFY_CHANNEL = "flowsd_meter_registry"

REGISTRY_METERS = Gauge(
    "flowsd_registry_meters",
    "Active meters with an address in meter_registry at the last reload.",
    registry=REGISTRY,
)
REGISTRY_RELOADS = Counter(
    "flowsd_registry_reloads", "Reloads of the meter list.", registry=REGISTRY
)
REGISTRY_RELOAD_ERRORS = Counter(
    "flowsd_registry_reload_errors",
    "Failed reloads of the meter list (the previous list stays in force).",
    registry=REGISTRY,
)

_SELECT_ACTIVE = """
SELECT id, serial, host(ip_address) AS ip_address, nullif(hardware, '') AS hardware
FROM flows.meter_registry
WHERE mode = 'active' AND ip_address IS NOT NULL
ORDER BY id
"""

# A burst of registry statements (a provisioning script) becomes one reload.
_DEBOUNCE_SECONDS = 0.5
_RETRY_SECONDS = 5.0
_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, UserError, asyncpg.PostgresError)


class RegistryMeter(msgspec.Struct, frozen=True):
    """One pollable meter as the registry describes it."""

    meter_id: UUID
    serial: str | None
    ip_address: str
    hardware: str | None


async def load_active_meters(conn: asyncpg.Connection) -> list[RegistryMeter]:
    """Active meters with an IP address, in id order."""
    rows = await conn.fetch(_SELECT_ACTIVE)
    return [
        RegistryMeter(row["id"], row["serial"], row["ip_address"], row["hardware"]) for row in rows
    ]


Connect = Callable[[], Awaitable[asyncpg.Connection]]
# Called with the new list and the source's connection (to read resume points for new meters).
Consumer = Callable[[list[RegistryMeter], asyncpg.Connection], Awaitable[None]]


class RegistrySource:
    """Reloads the meter list periodically, on NOTIFY and on request."""

    def __init__(self, connect: Connect, consumer: Consumer, *, reload_seconds: float) -> None:
        self._connect = connect
        self._consumer = consumer
        self.reload_seconds = reload_seconds
        self._wake = anyio.Event()
        self._conn: asyncpg.Connection | None = None
        self.meters: list[RegistryMeter] | None = None

    def request_reload(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the list (retrying until the database answers), report started, keep it current."""
        try:
            while not await self.reload():
                with anyio.move_on_after(_RETRY_SECONDS):
                    await self._wake.wait()
                self._wake = anyio.Event()
            task_status.started()
            wait = self.reload_seconds
            while True:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                    await anyio.sleep(_DEBOUNCE_SECONDS)
                self._wake = anyio.Event()
                ok = await self.reload()
                wait = self.reload_seconds if ok else min(_RETRY_SECONDS, self.reload_seconds)
        finally:
            await self._close()

    async def reload(self) -> bool:
        """Read the list and hand it on if it changed; False when the database failed."""
        try:
            conn = await self._connection()
            meters = await load_active_meters(conn)
            REGISTRY_RELOADS.inc()
            if meters != self.meters:
                await self._consumer(meters, conn)
                if self.meters is not None:
                    log.info("meter list changed", meters=len(meters), before=len(self.meters))
                self.meters = meters
            REGISTRY_METERS.set(len(meters))
            return True
        except _FAILURES as exc:
            REGISTRY_RELOAD_ERRORS.inc()
            log.warning("meter list reload failed; keeping the current list", error=str(exc))
            await self._close()
            return False

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            # A lost connection loses NOTIFYs too: reconnect (and re-read) at once.
            conn.add_termination_listener(self._notified)
            self._conn = conn
        return self._conn

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._notified)
        if not conn.is_closed():
            with anyio.move_on_after(2, shield=True):
                await conn.close()
            if not conn.is_closed():
                conn.terminate()
