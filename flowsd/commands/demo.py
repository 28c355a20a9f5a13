"""``flowsd demo``: the daemon against a simulated fleet, on one machine, in one command.

Uses ``--database-url`` / ``FLOWSD_DATABASE_URL`` when given, otherwise the embedded
PostgreSQL under the state directory; migrates it; starts a simulated fleet (mixed hardware,
one loopback address per meter from 127.77.0.1) in this process and registers it with the
documentation's topology (ESCO WLCE, see :mod:`flowsd.sim.topology`); then runs the daemon
(normally with the demo preset, ``config/flowsd-demo.toml``, as ``make run`` does) until
Ctrl-C or SIGTERM, logging a one-line summary every few seconds. ``flowsd status`` in another
terminal shows the fleet.

History: so that the documented queries about the past (balance history, yesterday's circuit
energy, meters offline for hours) have answers at once, the demo starts its fleet and the
daemon's clock ``--history-hours`` in the past (or where the database's newest reading left
off, if later), polls the fleet every :data:`HISTORY_STEP` of simulated time as fast as it
answers, and then runs in real time. One meter (the fleet's last) loses its signal
:data:`OFFLINE_FOR` before real time and stays offline, as a meter in the field does.
"""

from __future__ import annotations

import argparse
import faulthandler
import math
import time
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import structlog

from flowsd.app import Daemon
from flowsd.commands import add_command
from flowsd.commands.run import add_common_arguments, database_url, load
from flowsd.config import Config, ManagementConfig
from flowsd.db.connect import connect
from flowsd.db.migrate import migrate
from flowsd.errors import UserError
from flowsd.ops import event_loop
from flowsd.ops.logs import configure_logging
from flowsd.ops.ports import AUTO, next_free_listen
from flowsd.ops.statelock import state_directory_lock
from flowsd.ops.terminal import STDERR
from flowsd.sim.clock import SimClock
from flowsd.sim.faults import FaultSpecError
from flowsd.sim.fleet import DEFAULT_BASE_ADDRESS, SimulatedFleet
from flowsd.sim.register import register_fleet

DEMO_SUMMARY_SECONDS = 10.0
HISTORY_STEP = timedelta(hours=3)
OFFLINE_FOR = timedelta(hours=6)
# Longest wait for the fleet to answer one history step before moving on regardless.
_ROUND_SECONDS = 300.0

DEFAULT_LISTEN = ManagementConfig().listen

log = structlog.get_logger("flowsd.demo")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "demo", "embedded PostgreSQL + simulated fleet + daemon", __doc__
    )
    add_common_arguments(parser)
    parser.add_argument("--meters", type=int, default=100, metavar="N", help="fleet size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated fleet")
    parser.add_argument(
        "--base-address", default=DEFAULT_BASE_ADDRESS, metavar="IP", help="address of meter 0"
    )
    parser.add_argument("--faults", default=None, metavar="SPEC", help="simulator fault rules")
    parser.add_argument(
        "--history-hours", type=float, default=27.0, metavar="H",
        help="simulated hours polled before real time at start (default 27; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--management",
        metavar="LISTEN",
        help="host:port of /metrics, /healthz, /readyz (overrides [management] listen); "
        f"'{AUTO}': the configured port or the next free one",
    )
    parser.set_defaults(handler=run)


def demo_config(config: Config, management: str | None = None) -> Config:
    """The demo's summary line on unless the file sets its own interval; the management
    address from ``--management`` (``auto``: the configured port or the next free one)."""
    if config.daemon.summary_seconds <= 0:
        daemon = msgspec.structs.replace(config.daemon, summary_seconds=DEMO_SUMMARY_SECONDS)
        config = msgspec.structs.replace(config, daemon=daemon)
    if management:
        listen = management
        if management == AUTO:
            listen = next_free_listen(config.management.listen or DEFAULT_LISTEN)
        config = msgspec.structs.replace(config, management=ManagementConfig(listen=listen))
    return config


async def announce(daemon: Daemon, meters: int, config_path: str | None) -> None:
    """One plain line once the daemon is ready: where it listens, how to look at it."""
    await daemon.ready.wait()
    where = "no management endpoint"
    if daemon.management_address is not None:
        host, port = daemon.management_address
        where = f"metrics on http://{host}:{port}/metrics"
    config = f" --config {config_path}" if config_path else ""
    STDERR.write(
        f"flowsd demo: {meters} simulated meters; {where}; in another terminal: "
        f"`make status` or `.venv/bin/flowsd status{config}`\n"
    )


async def start_fleet(args: argparse.Namespace, port: int, clock: SimClock) -> SimulatedFleet:
    """The simulated fleet, listening; a bad option or a taken address is a UserError."""
    if args.meters < 1:
        raise UserError("--meters must be at least 1")
    if args.history_hours < 0:
        raise UserError("--history-hours must not be negative")
    try:
        fleet = SimulatedFleet(
            meters=args.meters,
            seed=args.seed,
            base_address=args.base_address,
            port=port,
            faults=args.faults,
            clock=clock,
        )
        await fleet.start()
    except FaultSpecError as exc:
        raise UserError(f"--faults: {exc}") from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot start the simulated fleet ({args.meters} meters from "
            f"{args.base_address}, port {port}): {exc}; another `flowsd demo` or "
            "`flowsd simulate` may be running (try --base-address)"
        ) from None
    return fleet


async def history_start(url: str, hours: float, connect_timeout: float) -> datetime:
    """Where the demo's clock starts: ``hours`` ago, or at the newest stored reading if later."""
    start = datetime.now(UTC) - timedelta(hours=hours)
    conn = await connect(url, connect_timeout=connect_timeout)
    try:
        newest: datetime | None = await conn.fetchval(
            "SELECT max(read_at) FROM flows.meter_event_log"
        )
    finally:
        await conn.close()
    if newest is None:
        return start
    return min(max(start, newest), datetime.now(UTC))


async def play_history(
    daemon: Daemon, fleet: SimulatedFleet, clock: SimClock, faults: str | None
) -> None:
    """Step the frozen clock to real time, one fleet-wide poll per step, then let it run."""
    await daemon.ready.wait()
    offline = len(fleet.meters) - 1 if len(fleet.meters) > 1 else None

    def settled() -> bool:
        return daemon.supervisor.round_complete() or daemon.stop_requested.is_set()

    behind = time.time() - clock.unix()
    if behind > 1:
        log.info("demo: polling the simulated past", hours=round(behind / 3600, 1))
        daemon.supervisor.freshness.suspend()
    while not daemon.stop_requested.is_set():
        remaining = time.time() - clock.unix()
        if remaining <= 1:
            break
        step = min(HISTORY_STEP.total_seconds(), remaining)
        if offline is not None and remaining - step <= OFFLINE_FOR.total_seconds():
            fleet.set_faults(",".join(filter(None, [faults, f"offline@{offline}=1:1h"])))
            log.info("demo: a meter loses its signal", serial=fleet.meters[offline].serial)
            offline = None
        clock.advance(seconds=step)
        with anyio.move_on_after(_ROUND_SECONDS) as waited:
            # The condition is derived from every meter's schedule: no event announces it.
            while not settled():  # noqa: ASYNC110
                await anyio.sleep(0.1)
        if waited.cancelled_caught:
            log.warning("demo: the fleet did not answer a history step in time; moving on")
    clock.advance(seconds=max(0.0, time.time() - clock.unix()))
    await _tables_show_history(daemon)
    clock.set_speed(1.0)
    daemon.supervisor.freshness.resume()
    log.info("demo: running in real time")


async def _tables_show_history(daemon: Daemon) -> None:
    """Until the read tables hold every event of the history just polled, for at most
    :data:`_ROUND_SECONDS` in all: the documented queries read them (the offline-meters
    view, say, reads the newest signal readings)."""
    projectors = daemon.projectors
    if projectors is None or daemon.stop_requested.is_set():
        return
    with anyio.move_on_after(_ROUND_SECONDS) as waited:
        await daemon.appender.flush()
        await projectors.wait_caught_up(daemon.appender.statistics().head_position, math.inf)
    if waited.cancelled_caught:
        log.warning("demo: the tables did not catch up with the history in time; moving on")


def run(args: argparse.Namespace) -> int:
    faulthandler.enable()
    config = demo_config(load(args), args.management)
    configure_logging(config.logging.level, fmt=config.logging.format)
    with state_directory_lock(config.state_directory), database_url(config, embedded=True) as url:

        async def main() -> int:
            conn = await connect(url, connect_timeout=config.database.connect_timeout_seconds)
            try:
                await migrate(conn)
            finally:
                await conn.close()
            start = await history_start(
                url, args.history_hours, config.database.connect_timeout_seconds
            )
            clock = SimClock(start, speed=0.0) if args.history_hours > 0 else SimClock()
            fleet = await start_fleet(args, config.meters.port, clock)
            try:
                conn = await connect(url, connect_timeout=config.database.connect_timeout_seconds)
                try:
                    identities = [fleet.state.identity(i) for i in range(len(fleet.meters))]
                    await register_fleet(conn, args.seed, identities)
                finally:
                    await conn.close()
                daemon = Daemon(
                    config,
                    url,
                    config_path=args.config,
                    cli_database_url=args.database_url,
                    wall_clock=clock.unix,
                )
                status: list[int] = []
                fatal: list[UserError] = []
                async with anyio.create_task_group() as tg:

                    async def daemon_main() -> None:
                        try:
                            status.append(await daemon.run())
                        except UserError as exc:  # raised below, not as an exception group
                            fatal.append(exc)
                        finally:
                            tg.cancel_scope.cancel()

                    tg.start_soon(daemon_main)
                    tg.start_soon(announce, daemon, args.meters, args.config)
                    await play_history(daemon, fleet, clock, args.faults)
                if fatal:
                    raise fatal[0]
                return status[0] if status else 0
            finally:
                await fleet.stop()

        return event_loop.run(main, config.daemon.event_loop)
