"""``flowsd events``: one meter's events from the log, and (``--follow``) the new ones as they
are committed.

``--meter`` takes a serial or an id. Without ``--since`` the last ``--last N`` (20) events
are shown; with it, every event recorded at or after TIME (as ``flowsd replay --since``).
``--type NAME`` (repeatable) keeps those types: flowsd's names (``BALANCE_READ``,
``METER_WENT_OFFLINE``, ...), ``METER_LOG_ENTRY`` for the meter's own event-log entries, or
numeric ids. ``--follow`` then tails the log by position until interrupted (SIGINT or
SIGTERM: exit status 0), woken by the appenders' NOTIFY and polling every
``--poll-seconds`` besides; it never skips a committed event
(:func:`flowsd.events.reader.follow`). One line per event: position, observed time (UTC),
type, payload; ``--json`` prints one JSON object per line instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from flowsd.commands import add_command
from flowsd.commands.output import to_json
from flowsd.commands.replay import add_since_argument, parse_time, with_connection
from flowsd.commands.run import add_common_arguments
from flowsd.db.meter_names import MeterName, find_meter
from flowsd.errors import UserError
from flowsd.events.reader import (
    EventFilter,
    follow,
    head_position,
    iter_batches,
    listen_for_appends,
)
from flowsd.events.types import MeterLogEntry, RecordedEvent, UnknownBody, catalogue
from flowsd.projections.replay import Connect, position_since

METER_LOG_ENTRY = MeterLogEntry.NAME
_TYPE_IDS = {name: type_id for type_id, name in catalogue()}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "events", "one meter's events (--follow: as they come)", __doc__
    )
    parser.add_argument("--meter", metavar="SERIAL", required=True, help="serial or id")
    add_since_argument(parser, "events")
    parser.add_argument(
        "--type",
        metavar="NAME",
        action="append",
        default=[],
        help=f"only this type (repeatable): a name, {METER_LOG_ENTRY} or an id",
    )
    parser.add_argument(
        "--last", metavar="N", type=int, default=20, help="without --since: the last N events"
    )
    parser.add_argument("--follow", action="store_true", help="then wait for new events")
    parser.add_argument(
        "--poll-seconds",
        metavar="S",
        type=float,
        default=2.0,
        help="--follow: read the log at least this often",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    add_common_arguments(parser)
    parser.set_defaults(handler=run)


def type_filter(names: list[str]) -> tuple[list[int] | None, bool]:
    """``--type`` values as (type ids, meter-log entries too); (None, False): all types."""
    if not names:
        return None, False
    ids: list[int] = []
    native = False
    for name in names:
        wanted = name.strip().upper()
        if wanted == METER_LOG_ENTRY:
            native = True
        elif wanted in _TYPE_IDS:
            ids.append(_TYPE_IDS[wanted])
        elif wanted.isdigit():
            ids.append(int(wanted))
        else:
            raise UserError(
                f"--type: unknown event type {name!r} (known: {METER_LOG_ENTRY}, "
                f"{', '.join(sorted(_TYPE_IDS))})"
            )
    return ids, native


def type_name(event: RecordedEvent) -> str:
    body = event.body
    if isinstance(body, UnknownBody):
        return f"UNKNOWN_{body.type_id}"
    return body.NAME


def _payload(event: RecordedEvent) -> Any:
    """The body's fields (without msgspec's tag), or the stored text of an unknown type."""
    body = event.body
    if isinstance(body, UnknownBody):
        return (body.payload or b"").decode("utf-8", "replace")
    fields: dict[str, Any] = msgspec.to_builtins(body)
    fields.pop("type", None)
    return fields


def describe(event: RecordedEvent) -> str:
    payload = _payload(event)
    text = payload if isinstance(payload, str) else to_json(payload)
    observed = event.observed_at.isoformat().replace("+00:00", "Z")
    return f"{event.position:>12}  {observed}  {type_name(event)}  {text}"


def document(event: RecordedEvent, meter: MeterName) -> dict[str, Any]:
    body = event.body
    type_id = body.type_id if isinstance(body, UnknownBody) else body.type_id()
    return {
        "position": event.position,
        "recorded_at": event.recorded_at,
        "meter_id": event.meter_id,
        "serial": meter.serial,
        "observed_at": event.observed_at,
        "read_at": event.read_at,
        "type": type_name(event),
        "type_id": type_id,
        "payload": _payload(event),
    }


async def _start(conn: asyncpg.Connection, where: EventFilter, args: argparse.Namespace) -> int:
    """The position after which to show events."""
    if args.since:
        return await position_since(conn, parse_time(args.since))
    if args.last == 0:
        return await head_position(conn)
    # The N-th newest matching event; everything after it is shown.
    found: int | None = await conn.fetchval(
        """SELECT position - 1 FROM flows.meter_event_log
           WHERE meter_id = $1
             AND ($2::integer[] IS NULL OR event_type = ANY($2::integer[])
                  OR ($3 AND event_type BETWEEN 1 AND 999))
           ORDER BY position DESC OFFSET $4 LIMIT 1""",
        where.meter_id,
        None if where.type_ids is None else list(where.type_ids),
        where.meter_log_entries,
        args.last - 1,
    )
    if found is not None:
        return found
    return 0  # fewer than N: all of them


def run(args: argparse.Namespace) -> int:
    type_ids, native = type_filter(args.type)  # a bad name fails before connecting
    if args.last < 0:
        raise UserError("--last must be 0 or more")
    if args.poll_seconds <= 0:
        raise UserError("--poll-seconds must be above 0")

    async def work(conn: asyncpg.Connection, more: Connect) -> int:
        meter = await find_meter(conn, args.meter)
        where = EventFilter(meter_id=meter.meter_id, type_ids=type_ids, meter_log_entries=native)
        after = await _start(conn, where, args)

        def show(batch: list[RecordedEvent]) -> None:
            for event in batch:
                line = to_json(document(event, meter)) if args.json else describe(event)
                sys.stdout.write(line + "\n")
            sys.stdout.flush()

        if not args.follow:
            async for batch in iter_batches(conn, after, where=where):
                show(batch)
            return 0
        return await _follow(conn, more, after, where, poll_seconds=args.poll_seconds, show=show)

    return with_connection(args, work)


async def _follow(
    conn: asyncpg.Connection,
    more: Connect,
    after: int,
    where: EventFilter,
    *,
    poll_seconds: float,
    show: Callable[[list[RecordedEvent]], None],
) -> int:
    stop = asyncio.Event()
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    listener = await more()
    try:
        await listen_for_appends(listener, lambda _head: woken.set())

        async def wait() -> bool:
            if stop.is_set():
                return False
            waiters = [asyncio.ensure_future(e.wait()) for e in (woken, stop)]
            try:
                await asyncio.wait(waiters, timeout=poll_seconds, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waiters:
                    waiter.cancel()
            woken.clear()
            return not stop.is_set()

        async for batch in follow(conn, after, wait=wait, where=where):
            show(batch)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        with contextlib.suppress(Exception):
            await listener.close()
    return 0
