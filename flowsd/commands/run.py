"""``flowsd run``: the daemon (what systemd starts).

Polls the active meters of ``flows.meter_registry`` and appends what it reads to
``flows.meter_event_log`` until SIGTERM/SIGINT; SIGHUP re-reads the configuration and the
meter list. A configuration error, or a state directory another daemon holds, is one line on
stderr and exit status 2 (systemd's unit does not restart on 2). The database password may
come from systemd's credential ``db-password`` (``LoadCredential=``) instead of the URL; without
that credential the URL is used as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from flowsd.app import Daemon
from flowsd.commands import add_command
from flowsd.config import Config, load_config, with_database_url
from flowsd.db.connect import resolve_database
from flowsd.mediator.server import check_config as check_mediator
from flowsd.ops import event_loop
from flowsd.ops.logs import configure_logging
from flowsd.ops.notify import SystemdNotifier
from flowsd.ops.statelock import state_directory_lock

CREDENTIAL_NAME = "db-password"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "run", "run the daemon (what systemd starts)", __doc__)
    add_common_arguments(parser)
    parser.add_argument(
        "--mediator-listen",
        metavar="HOST:PORT",
        help="serve the mediator gRPC API here (overrides [mediator] listen)",
    )
    parser.set_defaults(handler=run)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="configuration file (TOML)")
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (overrides the configuration)"
    )


def with_credential_password(url: str, environ: Mapping[str, str] | None = None) -> str:
    """``url`` with the password from ``$CREDENTIALS_DIRECTORY/db-password``, when that file
    exists and the URL carries no password of its own."""
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return url
    path = Path(directory) / CREDENTIAL_NAME
    try:
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError:
        return url
    parts = urlsplit(url)
    if parts.password is not None or not password or not parts.netloc:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", parts.netloc
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def load(args: argparse.Namespace) -> Config:
    """The configuration named on the command line (raises ConfigError: exit status 2)."""
    return with_database_url(load_config(args.config), args.database_url)


def with_mediator_listen(config: Config, listen: str | None) -> Config:
    """``config`` with ``[mediator] listen`` replaced (``--mediator-listen``), checked."""
    if listen is not None:
        mediator = msgspec.structs.replace(config.mediator, listen=listen)
        config = msgspec.structs.replace(config, mediator=mediator)
    check_mediator(config.mediator)
    return config


@contextlib.contextmanager
def database_url(config: Config, *, embedded: bool = False) -> Iterator[str]:
    """The configured URL with the password of the systemd credential applied; with
    ``embedded`` (``flowsd demo``) and no URL, the embedded server (released at the end).
    No URL otherwise is a :class:`~flowsd.errors.UserError` saying how to give one."""
    target = resolve_database(config, embedded=embedded)
    try:
        yield with_credential_password(target.url)
    finally:
        target.close()


def run(args: argparse.Namespace) -> int:
    faulthandler.enable()
    notifier = SystemdNotifier()
    try:
        config = with_mediator_listen(load(args), args.mediator_listen)
    except Exception as exc:
        notifier.status(f"config invalid: {exc}")
        raise
    configure_logging(config.logging.level, fmt=config.logging.format)
    try:
        with state_directory_lock(config.state_directory), database_url(config) as url:

            async def main() -> int:
                # Built inside the event loop: the daemon's anyio primitives need one.
                daemon = Daemon(
                    config,
                    url,
                    config_path=args.config,
                    cli_database_url=args.database_url,
                    notifier=notifier,
                )
                return await daemon.run()

            return event_loop.run(main, config.daemon.event_loop)
    finally:
        notifier.close()
