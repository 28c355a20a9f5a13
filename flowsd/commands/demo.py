"""``flowsd demo``: the daemon against a simulated fleet, on one machine, in one command.

Uses ``--database-url`` / ``FLOWSD_DATABASE_URL`` when given, otherwise the embedded
PostgreSQL under the state directory; migrates it; starts a simulated fleet (mixed hardware,
one loopback address per meter from 127.77.0.1) in this process and registers it in
``flows.meter_registry``; then runs the daemon (normally with the demo preset,
``config/flowsd-demo.toml``, as ``make run`` does) until Ctrl-C or SIGTERM, logging a
one-line summary every few seconds. ``flowsd status`` in another terminal shows the fleet.
"""

from __future__ import annotations

import argparse
import faulthandler

import anyio
import msgspec

from flowsd.app import Daemon
from flowsd.commands.run import add_common_arguments, database_url, load
from flowsd.config import Config
from flowsd.db.connect import connect
from flowsd.db.migrate import migrate
from flowsd.errors import UserError
from flowsd.ops.logs import configure_logging
from flowsd.sim.faults import FaultSpecError
from flowsd.sim.fleet import DEFAULT_BASE_ADDRESS, SimulatedFleet
from flowsd.sim.register import register_fleet

DEMO_SUMMARY_SECONDS = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="embedded PostgreSQL + simulated fleet + daemon",
        description=__doc__.split("\n\n")[0],
    )
    add_common_arguments(parser)
    parser.add_argument("--meters", type=int, default=100, metavar="N", help="fleet size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated fleet")
    parser.add_argument(
        "--base-address", default=DEFAULT_BASE_ADDRESS, metavar="IP", help="address of meter 0"
    )
    parser.add_argument("--faults", default=None, metavar="SPEC", help="simulator fault rules")
    parser.set_defaults(handler=run)


def demo_config(config: Config) -> Config:
    """The demo's summary line on unless the file sets its own interval."""
    if config.daemon.summary_seconds > 0:
        return config
    daemon = msgspec.structs.replace(config.daemon, summary_seconds=DEMO_SUMMARY_SECONDS)
    return msgspec.structs.replace(config, daemon=daemon)


async def start_fleet(args: argparse.Namespace, port: int) -> SimulatedFleet:
    """The simulated fleet, listening; a bad option or a taken address is a UserError."""
    if args.meters < 1:
        raise UserError("--meters must be at least 1")
    try:
        fleet = SimulatedFleet(
            meters=args.meters,
            seed=args.seed,
            base_address=args.base_address,
            port=port,
            faults=args.faults,
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


def run(args: argparse.Namespace) -> int:
    faulthandler.enable()
    config = demo_config(load(args))
    configure_logging(config.logging.level, fmt=config.logging.format)
    with database_url(config) as url:

        async def main() -> int:
            conn = await connect(url, connect_timeout=config.database.connect_timeout_seconds)
            try:
                await migrate(conn)
                fleet = await start_fleet(args, config.meters.port)
                try:
                    identities = [fleet.state.identity(i) for i in range(len(fleet.meters))]
                    await register_fleet(conn, args.seed, identities)
                except BaseException:
                    await fleet.stop()
                    raise
            finally:
                await conn.close()
            try:
                daemon = Daemon(
                    config, url, config_path=args.config, cli_database_url=args.database_url
                )
                return await daemon.run()
            finally:
                await fleet.stop()

        return anyio.run(main)
