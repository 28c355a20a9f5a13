"""The gRPC server of the mediator API, inside the daemon's event loop (grpc.aio).

Off unless ``[mediator] listen`` (or ``flowsd run --mediator-listen``) names an address.
Without TLS only a loopback address is accepted: the API can change meters, and anything
else must authenticate its clients. With ``tls_certificate``, ``tls_key`` and
``tls_client_ca`` the server requires a client certificate signed by that CA (mutual TLS);
:mod:`flowsd.mediator.auth` then authorises each call. An address that cannot be bound is a
:class:`~flowsd.errors.UserError` (the daemon does not start).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import anyio
import grpc
import grpc.aio
import structlog
from anyio.abc import TaskStatus

from flowsd.config import MediatorConfig
from flowsd.errors import ConfigError, UserError
from flowsd.mediator.service import MediatorService

log = structlog.get_logger("flowsd.mediator")

STOP_GRACE_SECONDS = 2.0


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as (host, port); ConfigError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"key 'mediator.listen': {listen!r} is not host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_enabled(config: MediatorConfig) -> bool:
    """True with all three TLS files set; ConfigError when only some are."""
    files = (config.tls_certificate, config.tls_key, config.tls_client_ca)
    if all(files):
        return True
    if any(files):
        raise ConfigError(
            "keys 'mediator.tls_certificate', 'tls_key' and 'tls_client_ca' go together"
        )
    return False


def check_config(config: MediatorConfig) -> None:
    """Refuse a configuration that would expose the API without TLS (ConfigError)."""
    if not config.listen:
        return
    host, _ = split_listen(config.listen)
    if not tls_enabled(config) and not is_loopback(host):
        raise ConfigError(
            f"key 'mediator.listen': {config.listen} is not a loopback address; "
            "serving beyond this machine needs mutual TLS (tls_certificate, tls_key, "
            "tls_client_ca)"
        )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"mediator {what} {path}: {exc.strerror}") from None


def _credentials(config: MediatorConfig) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(_read(config.tls_key, "key"), _read(config.tls_certificate, "certificate"))],
        root_certificates=_read(config.tls_client_ca, "client CA"),
        require_client_auth=True,
    )


async def serve_mediator(
    config: MediatorConfig,
    service: MediatorService,
    *,
    task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound (host, port) once listening."""
    check_config(config)
    host, port = split_listen(config.listen)
    tls = tls_enabled(config)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(service.handlers())
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls:
            bound = server.add_secure_port(address, _credentials(config))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise UserError(f"mediator: cannot listen on {config.listen}: {exc}") from None
    if not bound:
        raise UserError(f"mediator: cannot listen on {config.listen}")
    await server.start()
    log.info("mediator API listening", address=f"{host}:{bound}", tls=tls)
    task_status.started((host, bound))
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(STOP_GRACE_SECONDS)
