"""The appender's connection to the event log and its commits.

:meth:`LogWriter.commit` appends a batch with :func:`flowsd.events.store.append_batch` over one
connection (opened on demand with the appender's statement and lock timeouts, dropped by the
caller after a database error), fenced by :attr:`LogWriter.epochs`. A commit that outlives the
timeouts plus 5 seconds is abandoned (the server's ``statement_timeout`` cannot fire across a
dead network); the idempotency keys make the retry safe. A batch the database refuses on its
own merits (SQLSTATE classes 22 and 23) is halved until each refused part is one event, which is
stored whole in ``flowsd.rejected_event``; the rest commits in order. Database errors of any
other kind are raised to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from uuid import UUID

import asyncpg
import msgspec
import structlog

from flowsd.config import AppenderConfig
from flowsd.db.connect import close_quietly
from flowsd.db.errors import is_data_rejection
from flowsd.db.meter_names import serials_of
from flowsd.events import metrics
from flowsd.events.codec import payload_json
from flowsd.events.store import AppendResult, append_batch
from flowsd.events.types import Event

Connect = Callable[[], Awaitable[asyncpg.Connection]]

log = structlog.get_logger("flowsd.events.appender")


class LogWriter:
    """Commits batches to the event log over one connection, setting aside rejected events."""

    def __init__(self, connect: Connect, config: AppenderConfig, connect_timeout: float) -> None:
        self._connect = connect
        self._config = config
        self._connect_timeout = connect_timeout
        self._append_timeout = config.statement_timeout_seconds + config.lock_timeout_seconds + 5
        self._conn: asyncpg.Connection | None = None
        # Meter -> lease epoch held (or last held); empty: no fencing (one daemon, no leases).
        self.epochs: Mapping[UUID, int] = {}
        self.committed = 0  # new events written to the log
        self.duplicates = 0  # events the log already held
        self.rejected = 0  # events the database refused on their own merits
        self.fenced = 0  # events refused because their meter's lease had moved on
        self.head_position = 0  # the last committed batch's through_position

    async def commit(self, batch: list[Event]) -> list[AppendResult]:
        """Commit ``batch``, in order, less the events the database refuses on their own merits
        (set aside); the committed appends. Raises database errors of other kinds."""
        conn = await self.connection()
        try:
            return [await self._timed_append(conn, batch)]
        except asyncpg.PostgresError as exc:
            if not is_data_rejection(exc):
                raise
            return await self._append_individually(conn, batch)

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncio.wait_for(self._connect(), self._connect_timeout)
            try:
                await conn.execute(
                    "SELECT set_config('statement_timeout', $1, false),"
                    " set_config('lock_timeout', $2, false)",
                    f"{int(self._config.statement_timeout_seconds * 1000)}ms",
                    f"{int(self._config.lock_timeout_seconds * 1000)}ms",
                )
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    async def drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    async def _timed_append(self, conn: asyncpg.Connection, batch: list[Event]) -> AppendResult:
        started = time.perf_counter()
        result = await asyncio.wait_for(
            append_batch(conn, batch, epochs=self.epochs), self._append_timeout
        )
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        if result.fenced_events:
            self.fenced += result.fenced_events
            log.warning(
                "events refused: their meters' leases passed to another daemon",
                events=result.fenced_events,
                meters=len(result.fenced),
            )
        metrics.BATCH_SIZE.observe(len(batch))
        self.committed += len(result.events)
        self.duplicates += result.duplicates
        self.head_position = result.through_position
        return result

    async def _append_individually(
        self, conn: asyncpg.Connection, batch: list[Event]
    ) -> list[AppendResult]:
        """Commit what the database accepts of a refused ``batch``, in order; reject the rest.

        The batch is halved until each refused part is a single event, so one bad event in a
        batch of N costs about 2·log2(N) appends rather than N.
        """
        results: list[AppendResult] = []
        await self._append_halves(conn, batch, results)
        return results

    async def _append_halves(
        self, conn: asyncpg.Connection, refused: list[Event], results: list[AppendResult]
    ) -> None:
        middle = len(refused) // 2
        for part in (refused[:middle], refused[middle:]):
            if not part:
                continue
            try:
                results.append(await self._timed_append(conn, part))
            except asyncpg.PostgresError as exc:
                if not is_data_rejection(exc):
                    raise
                if len(part) == 1:
                    await self._reject(conn, part[0], exc)
                else:
                    await self._append_halves(conn, part, results)

    async def _reject(self, conn: asyncpg.Connection, event: Event, exc: BaseException) -> None:
        await conn.execute(
            """
            INSERT INTO flowsd.rejected_event (idempotency_key, meter_id, event_type, event, error)
            VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (idempotency_key) DO NOTHING
            """,
            event.idempotency_key(),
            event.meter_id,
            event.type_id,
            msgspec.json.encode(event).decode(),
            str(exc),
        )
        self.rejected += 1
        serials = await serials_of(conn, [event.meter_id])
        log.error(
            "event rejected by the database",
            meter_serial=serials[event.meter_id],
            meter_id=str(event.meter_id),
            event_type=event.type_id,
            payload=payload_json(event.body),
            error=str(exc),
        )
