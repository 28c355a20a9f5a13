"""``flowsd simulate``: run a simulated fleet of Emlite meters until SIGINT/SIGTERM.

Each meter listens on its own loopback address (consecutive from ``--base-address``) on
``--port``, answers EMOP as SPEC.md describes, and evolves with simulated time,
deterministically for ``--seed``. ``--manifest`` writes the meters as JSON;
``--register`` creates their rows in the flows schema (the documentation's example ESCO
WLCE with its site, properties, service heads, meters, registers and circuits, see
:mod:`flowsd.sim.topology`) so ``flowsd run`` finds them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

from flowsd.commands import add_command
from flowsd.config import DATABASE_URL_ENV
from flowsd.errors import UserError
from flowsd.ops import event_loop
from flowsd.sim.clock import SimClock
from flowsd.sim.faults import FaultPlan, FaultSpecError
from flowsd.sim.fleet import DEFAULT_BASE_ADDRESS, DEFAULT_PORT, SimulatedFleet
from flowsd.sim.identity import Hardware

FAULTS_HELP = """\
fault injection, comma-separated KIND[@TARGET]=PROBABILITY[:PARAMETER] rules.
TARGET: meter index (3), index range (3-7) or serial; none = every meter.
PROBABILITY: 0..1 per connection (per meter and simulated hour for offline).
Kinds: refuse (RST on accept), toosoon[:GAP=2s] (RST when sooner than GAP after the
previous exchange), blackhole (never answers), slow[:DELAY=8s], badcrc, truncate, garbage,
split[:PARTS=3] (answer in several writes), trickle[:EVERY=0.1s] (byte by byte),
nak[:CODE=5], offline[:FOR=10m] (listener closed: connection refused).
Durations: 250ms, 8s, 10m, 1h. Example:
refuse=0.02,slow=0.05:8s,badcrc@3=1,offline=0.01:20m"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "simulate",
        "run a simulated fleet of Emlite meters on loopback addresses",
        __doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--meters", type=int, required=True, metavar="N", help="fleet size")
    parser.add_argument("--seed", type=int, default=0, help="seed of every simulated value")
    parser.add_argument(
        "--base-address", default=DEFAULT_BASE_ADDRESS, metavar="IP",
        help=f"address of meter 0; meter i listens on IP+i (default {DEFAULT_BASE_ADDRESS})",
    )  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
        help=f"TCP port of every meter (default {DEFAULT_PORT}; 0 = one free port each)",
    )  # fmt: skip
    parser.add_argument("--manifest", metavar="PATH", help="write the meters as JSON here")
    parser.add_argument("--faults", default="", metavar="SPEC", help=FAULTS_HELP)
    parser.add_argument(
        "--history-days", type=int, default=30, metavar="D",
        help="days of half-hourly profile records each meter holds (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--hardware", metavar="KINDS",
        help="comma-separated hardware kinds assigned round-robin instead of the default mix "
        f"({', '.join(h.value for h in Hardware)})",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=1.0,
        help="simulated seconds per real second (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--start",
        metavar="ISO-TIME",
        help="simulated start time (default: now), e.g. 2026-01-01T00:00Z",
    )
    parser.add_argument(
        "--register", action="store_true",
        help="create the fleet's rows in the flows schema (needs --database-url or "
        f"${DATABASE_URL_ENV}; run flowsd migrate first)",
    )  # fmt: skip
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL for --register")
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> tuple[FaultPlan, list[Hardware] | None, SimClock]:
    if args.meters < 1:
        raise UserError("--meters must be at least 1")
    if not 0 <= args.port <= 65_535:
        raise UserError(f"--port {args.port} is not a TCP port")
    if args.history_days < 1:
        raise UserError("--history-days must be at least 1")
    if args.speed < 0:
        raise UserError("--speed must not be negative")
    try:
        first = ipaddress.IPv4Address(args.base_address)
    except ValueError:
        raise UserError(f"--base-address {args.base_address!r} is not an IPv4 address") from None
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if first not in loopback or first + (args.meters - 1) not in loopback:
        raise UserError(f"{args.meters} meters from {first} do not fit inside 127.0.0.0/8")
    try:
        plan = FaultPlan.parse(args.faults)
    except FaultSpecError as exc:
        raise UserError(f"--faults: {exc}") from None
    kinds = None
    if args.hardware:
        try:
            kinds = [Hardware(k.strip()) for k in args.hardware.split(",") if k.strip()]
        except ValueError as exc:
            raise UserError(f"--hardware: {exc}") from None
    start = None
    if args.start:
        try:
            start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--start {args.start!r} is not an ISO date-time") from None
        if start.tzinfo is None:
            raise UserError("--start needs a time zone (e.g. 2026-01-01T00:00Z)")
    if args.register and not (args.database_url or os.environ.get(DATABASE_URL_ENV)):
        raise UserError(f"--register needs --database-url or ${DATABASE_URL_ENV}")
    return plan, kinds, SimClock(start, speed=args.speed)


def run(args: argparse.Namespace) -> int:
    plan, kinds, clock = _check(args)
    fleet = SimulatedFleet(
        args.meters,
        seed=args.seed,
        base_address=args.base_address,
        port=args.port,
        faults=plan,
        history_days=args.history_days,
        clock=clock,
        hardware=kinds,
    )
    with asyncio.Runner(loop_factory=event_loop.loop_factory("uvloop")) as runner:
        runner.run(_serve(fleet, args))
    return 0


async def _serve(fleet: SimulatedFleet, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await fleet.start()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.base_address}..+{args.meters - 1} port {args.port}: "
            f"{exc.strerror or exc}"
        ) from None
    try:
        if args.register:
            await _register(fleet, args.database_url or os.environ[DATABASE_URL_ENV])
        if args.manifest:
            _write_manifest(Path(args.manifest), fleet)
        last = fleet.meters[-1]
        print(
            f"flowsd simulate: {args.meters} meters on {fleet.meters[0].ip_address}.."
            f"{last.ip_address} port {args.port or 'ephemeral'} (seed {args.seed}); "
            "Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await fleet.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def _write_manifest(path: Path, fleet: SimulatedFleet) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(fleet.manifest(), indent=1))
        temporary.replace(path)  # readers never see a half-written manifest
    except OSError as exc:
        raise UserError(f"cannot write the manifest {path}: {exc.strerror}") from None


async def _register(fleet: SimulatedFleet, url: str) -> None:
    # Imported here: the database layer is only needed with --register.
    from flowsd.db.connect import connect  # noqa: PLC0415
    from flowsd.db.urls import redact  # noqa: PLC0415
    from flowsd.sim.register import register_fleet  # noqa: PLC0415

    conn = await connect(url)
    try:
        identities = (fleet.state.identity(i) for i in range(fleet.state.size))
        report = await register_fleet(conn, fleet.seed, identities)
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):
            raise UserError(f"--register on {redact(url)} failed: {exc}") from None
        raise
    finally:
        await conn.close()
    print(
        f"flowsd simulate: registered {report.meters} meters, {report.registers} registers, "
        f"{report.circuits} circuits and {report.properties} properties under ESCO "
        f"{report.esco_code!r}",
        file=sys.stderr,
        flush=True,
    )
    if report.addresses_taken_over:
        print(
            f"flowsd simulate: {report.addresses_taken_over} older meter rows gave up the "
            "fleet's addresses",
            file=sys.stderr,
            flush=True,
        )
