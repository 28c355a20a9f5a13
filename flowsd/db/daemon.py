"""The daemon's database: its connections, the wait for the database at start-up, its pool.

:meth:`DaemonDatabase.connect` opens one connection for one component. Before the daemon is
ready a refusal (no such database, wrong password or role, no ``pg_hba`` entry) is raised as
it is, fatal; once it is ready a refusal (e.g. a password changed under the daemon) is retried
like an outage. :meth:`DaemonDatabase.wait_until_open` connects, checks the schema
(:func:`check_schema`: a mismatch is fatal) and opens the pool the projectors, the mediator
and the dispatcher share, retrying an unreachable or unusable server with the shared backoff;
after the first failed attempt systemd hears ``READY=1`` with ``STATUS=waiting for the
database: ...`` (:mod:`flowsd.app` says why).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

import anyio
import asyncpg
import structlog

from flowsd.backoff import Backoff, Retry
from flowsd.config import Config
from flowsd.db.availability import DatabaseAvailability
from flowsd.db.connect import close_quietly, connect, create_pool_from_config, daemon_settings
from flowsd.db.errors import (
    DATABASE_ERRORS,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    describe,
)
from flowsd.db.migrate import applied_versions, check_compatible, load_migrations
from flowsd.errors import UserError
from flowsd.ops.metrics import server_version, set_build_info
from flowsd.ops.notify import SystemdNotifier

log = structlog.get_logger("flowsd.app")


@dataclass(eq=False)
class DaemonDatabase:
    """The connections and the pool of one daemon (``[database]``, fixed at start)."""

    config: Config
    url: str
    _: KW_ONLY
    availability: DatabaseAvailability
    notifier: SystemdNotifier
    ready: anyio.Event  # set once the daemon runs: refusals are retried from then on
    pool: asyncpg.Pool | None = field(default=None, init=False)

    def reconnect_backoff(self) -> Backoff:
        database = self.config.database
        return Backoff(database.reconnect_initial_seconds, database.reconnect_max_seconds)

    async def connect(self) -> asyncpg.Connection:
        """A connection for one component. Once running, a refusal (e.g. a password changed
        under the daemon) is retried like an outage rather than ending the daemon."""
        try:
            return await connect(
                self.url,
                connect_timeout=self.config.database.connect_timeout_seconds,
                settings=daemon_settings(self.config),
            )
        except DatabaseRefusedError as exc:
            if not self.ready.is_set():
                raise
            log.error("the database refused a connection; retrying", error=str(exc))
            raise DatabaseUnavailableError(str(exc)) from exc

    async def wait_until_open(self, stop_requested: anyio.Event) -> bool:
        """Connect, check the schema and open the pool, retrying with the shared backoff
        while the database is unavailable; False if stopped first. A refusal or a schema this
        flowsd cannot run on is a :class:`UserError` (fatal)."""
        retry = Retry(self.reconnect_backoff())
        while not stop_requested.is_set():
            try:
                await self._open()
            except UserError:
                raise
            except DATABASE_ERRORS as exc:
                self.availability.failed("start-up", exc)
                delay = retry.next_delay()
                # Up and waiting, as in any outage: the start timeout must not apply.
                self.notifier.ready_or_status(f"waiting for the database: {describe(exc)}")
                log.warning(
                    "database unavailable at start-up; retrying",
                    database=self.availability.where,
                    error=describe(exc),
                    retry_in_seconds=round(delay, 3),
                )
                with anyio.move_on_after(delay):
                    await stop_requested.wait()
                continue
            self.availability.succeeded("start-up")
            return True
        return False

    async def _open(self) -> None:
        """Check the schema and open the pool, or raise (see :meth:`wait_until_open`)."""
        conn = await self.connect()
        try:
            set_build_info(postgres=server_version(conn))
            await check_schema(conn)
        finally:
            await close_quietly(conn)
        self.pool = await create_pool_from_config(self.config, self.url)

    async def close(self) -> None:
        """Close the pool (if it was opened), giving its connections a few seconds."""
        if self.pool is not None:
            with anyio.move_on_after(5, shield=True):
                await self.pool.close()
            self.pool.terminate()


async def check_schema(conn: asyncpg.Connection) -> None:
    """Refuse to run on a database migrated by a newer flowsd, with an applied migration that
    differs from this flowsd's file, or lacking one of this flowsd's migrations."""
    migrations = load_migrations()
    applied = await applied_versions(conn)
    check_compatible(applied, migrations)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise UserError(
            f"the database lacks migrations {', '.join(map(str, missing))}: run `flowsd migrate`"
        )
