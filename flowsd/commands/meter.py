"""``flowsd meter SERIAL [ACTION]``: one meter, and commands for it.

Without an action: the meter as the database knows it (registry row, the daemon's session
state and last error, shadow values, latest events, recent commands). With one, a command
goes through ``flowsd.meter_command`` to whichever daemon polls the meter, and the answer is
its outcome (exit status 0 when it succeeded, 1 when it failed or no daemon ran it in time):

    flowsd meter SERIAL read OBJECT
    flowsd meter SERIAL top-up TOKEN
    flowsd meter SERIAL set-clock
    flowsd meter SERIAL future-tariff --from 2026-07-01T00:00:00 --standing-charge 0.6
        --unit-rate 0.25 [--emergency-credit 15] [--ecredit-availability 10]
        [--debt-recovery-rate 0.3]
    flowsd meter SERIAL prepay on|off
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import msgspec

from flowsd.commands.run import add_common_arguments, database_url, load
from flowsd.control import requests
from flowsd.db.connect import connect
from flowsd.emop import UnknownObjectError, by_name
from flowsd.errors import UserError

DEFAULT_TIMEOUT_SECONDS = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "meter",
        help="one meter: its state, or a command for it (read, top-up, set-clock, ...)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("serial", metavar="SERIAL", help="the meter's serial")
    add_common_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--events", type=int, default=10, metavar="N", help="latest events shown")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    read = _action(actions, "read", "read one object (its value, and an event like a poll's)")
    read.add_argument("object", metavar="OBJECT", help="object name, e.g. prepay_balance")
    top_up = _action(actions, "top-up", "send a top-up token and read the balance before/after")
    top_up.add_argument("token", metavar="TOKEN", help="the token's digits")
    _action(actions, "set-clock", "set the meter clock to UTC now and read it back")
    tariff = _action(actions, "future-tariff", "write the future tariff (11 writes) and read it")
    tariff.add_argument(
        "--from",
        dest="activation",
        required=True,
        metavar="DATETIME",
        help="activation, ISO 8601 (meter time; naive is taken as UTC)",
    )
    for option, what, required in (
        ("--standing-charge", "GBP per day (at most 1.00, 5 decimals)", True),
        ("--unit-rate", "GBP per kWh (at most 1.00, 5 decimals)", True),
        ("--emergency-credit", "GBP (default 15.00)", False),
        ("--ecredit-availability", "GBP (default 10.00)", False),
        ("--debt-recovery-rate", "GBP per day (default 0.30)", False),
    ):
        tariff.add_argument(option, type=_money, required=required, metavar="GBP", help=what)
    prepay = _action(actions, "prepay", "prepay mode on (needs a balance of £10) or off")
    prepay.add_argument("mode", choices=("on", "off"))
    parser.set_defaults(handler=run)


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    add_waiting_arguments(parser)
    # The same options after the action (defaults suppressed: they must not undo earlier ones).
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS)
    parser.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def add_waiting_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait; a command not started by then is never run (default 120)",
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the same key again answers the same command instead of sending another",
    )
    parser.add_argument("--client", metavar="NAME", help="who asks, recorded with the command")


def _money(text: str) -> str:
    try:
        Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    return text


def command_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The table's (kind, arguments) for the parsed action."""
    match args.action:
        case "read":
            try:
                return "read", {"object": by_name(args.object).name}
            except UnknownObjectError as exc:
                raise UserError(str(exc)) from None
        case "top-up":
            return "top_up", {"token": args.token}
        case "set-clock":
            return "set_clock", {}
        case "prepay":
            return "prepay", {"enabled": args.mode == "on"}
        case "future-tariff":
            try:
                datetime.fromisoformat(args.activation)
            except ValueError:
                raise UserError(
                    f"--from: not an ISO 8601 date and time: {args.activation}"
                ) from None
            arguments = {"activation": args.activation}
            for name in (
                "standing_charge",
                "unit_rate",
                "emergency_credit",
                "ecredit_availability",
                "debt_recovery_rate",
            ):
                value = getattr(args, name)
                if value is not None:
                    arguments[name] = value
            return "future_tariff", arguments
    raise UserError(f"unknown action {args.action!r}")


def run(args: argparse.Namespace) -> int:
    if args.action is not None:
        return run_command(args, command_of)
    config = load(args)
    with database_url(config) as url:
        timeout = config.database.connect_timeout_seconds
        report = asyncio.run(gather(url, args.serial, events=args.events, connect_timeout=timeout))
    write(report, as_json=args.json, text=render_info)
    return 0


def run_command(
    args: argparse.Namespace, command: Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]
) -> int:
    """Send ``command(args)`` (its kind and arguments, checked once the database is known) to
    the meter ``args.serial`` through the command table and print its outcome; the exit
    status is 0 if it succeeded."""
    config = load(args)
    with database_url(config) as url:
        kind, arguments = command(args)
        timeout = config.database.connect_timeout_seconds
        outcome = asyncio.run(
            send(url, args.serial, kind, arguments, args=args, connect_timeout=timeout)
        )
    write(outcome, as_json=args.json, text=render_outcome)
    return 0 if outcome["status"] == "succeeded" else 1


async def send(
    url: str,
    serial: str,
    kind: str,
    arguments: dict[str, Any],
    *,
    args: argparse.Namespace,
    connect_timeout: float,
) -> dict[str, Any]:
    """Insert the command and wait for its outcome (``args``: timeout, key, client)."""
    if args.timeout <= 0:
        raise UserError("--timeout must be positive")
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        key = args.idempotency_key or f"cli-{uuid.uuid4()}"
        row_id = await requests.submit(
            conn,
            serial,
            kind,
            arguments,
            key=key,
            client=args.client,
            expires_in=args.timeout,
        )
        # A little longer than the expiry: a command started just in time still finishes.
        return await requests.wait_outcome(conn, row_id, args.timeout + 60.0)
    finally:
        await conn.close()


async def gather(url: str, serial: str, *, events: int, connect_timeout: float) -> dict[str, Any]:
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        return await _gather(conn, serial, events)
    except asyncpg.UndefinedTableError:
        raise UserError("the database has no flowsd schema yet: run `flowsd migrate`") from None
    finally:
        await conn.close()


async def _json(conn: asyncpg.Connection, query: str, *args: object) -> Any:
    value = await conn.fetchval(query, *args)
    return None if value is None else msgspec.json.decode(value)


async def _gather(conn: asyncpg.Connection, serial: str, events: int) -> dict[str, Any]:
    registry = await _json(
        conn, "SELECT to_jsonb(r)::text FROM flows.meter_registry r WHERE r.serial = $1", serial
    )
    if registry is None:
        raise UserError(f"no meter with serial {serial!r}")
    meter_id = registry["id"]
    session = await _json(
        conn,
        "SELECT to_jsonb(s)::text FROM flowsd.meter_session_state s WHERE s.meter_id = $1",
        uuid.UUID(meter_id),
    )
    shadow = await _json(
        conn, "SELECT to_jsonb(s)::text FROM flows.meter_shadows s WHERE s.id = $1",
        uuid.UUID(meter_id),
    )  # fmt: skip
    latest = await _json(
        conn,
        """SELECT coalesce(jsonb_agg(x ORDER BY x.position DESC), '[]')::text FROM (
               SELECT e.position, e."timestamp", e.read_at, coalesce(t.name, e.event_type::text)
                      AS type, e.event_set, e.payload
               FROM flows.meter_event_log e
               LEFT JOIN flows.meter_event_log_type t ON t.id = e.event_type
               WHERE e.meter_id = $1 ORDER BY e.position DESC LIMIT $2) x""",
        uuid.UUID(meter_id),
        events,
    )
    recent = await _json(
        conn,
        """SELECT coalesce(jsonb_agg(c ORDER BY c.id DESC), '[]')::text FROM (
               SELECT id, kind, status, requested_by, requested_at, finished_at, error
               FROM flowsd.meter_command WHERE meter_id = $1 ORDER BY id DESC LIMIT 5) c""",
        uuid.UUID(meter_id),
    )
    return {
        "registry": registry,
        "session": session,
        "shadow": shadow,
        "events": latest,
        "commands": recent,
    }


def write(report: dict[str, Any], *, as_json: bool, text: Any) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(text(report))


def _pairs(values: dict[str, Any] | None, keys: tuple[str, ...]) -> list[str]:
    if not values:
        return ["  (none)"]
    return [f"  {k}: {values[k]}" for k in keys if values.get(k) is not None]


def render_info(report: dict[str, Any]) -> str:
    registry, session, shadow = report["registry"], report["session"], report["shadow"]
    lines = [f"meter {registry['serial']} ({registry['id']})"]
    lines += _pairs(registry, ("name", "hardware", "mode", "ip_address", "firmware_version",
                               "prepay_enabled"))  # fmt: skip
    lines.append("session (flowsd.meter_session_state):")
    lines += _pairs(session, ("online", "consecutive_failures", "last_poll_at",
                              "last_success_at", "last_error", "last_failure_at",
                              "offline_since", "instance", "updated_at"))  # fmt: skip
    lines.append("shadow (flows.meter_shadows):")
    lines += _pairs(shadow, ("balance", "csq", "voltage", "health", "clock_time_diff_seconds",
                             "import_a", "export_a", "import_b", "export_b",
                             "updated_at"))  # fmt: skip
    if shadow and shadow.get("tariffs_future"):
        lines.append(f"  tariffs_future: {msgspec.json.encode(shadow['tariffs_future']).decode()}")
    lines.append(f"latest events ({len(report['events'])}):")
    for event in report["events"]:
        payload = msgspec.json.encode(event["payload"]).decode() if event["payload"] else ""
        lines.append(f"  {event['position']:>10}  {event['timestamp']}  {event['type']}  {payload}")
    if report["commands"]:
        lines.append("recent commands:")
        for command in report["commands"]:
            error = f"  {command['error']}" if command["error"] else ""
            lines.append(
                f"  {command['id']:>6}  {command['kind']:<13} {command['status']:<9} "
                f"{command['requested_at']}  by {command['requested_by']}{error}"
            )
    return "\n".join(lines) + "\n"


def render_outcome(row: dict[str, Any]) -> str:
    status = row["status"]
    lines = [f"meter {row['serial']} {row['kind']} (command {row['id']}): {status}"]
    if status == "pending":
        lines.append(f"  no daemon has taken it; it expires at {row['expires_at']}")
    elif status == "running":
        lines.append(f"  no outcome yet: still running on {row['claimed_by']}")
    if row["error"]:
        lines.append(f"  error: {row['error']}")
    result = row["result"] or {}
    if "value" in result:
        unit = f" {result['unit']}" if result.get("unit") else ""
        lines.append(f"  {result.get('object')}: {result['value']}{unit}")
    if result.get("writes_total"):
        lines.append(
            f"  writes acknowledged: {result['writes_acknowledged']} of {result['writes_total']}"
        )
    for name, value in (result.get("readback") or {}).items():
        lines.append(f"  {name}: {value}")
    for name in ("requests", "failed_requests", "duration_seconds"):
        if name in result:
            lines.append(f"  {name}: {result[name]}")
    return "\n".join(lines) + "\n"
