"""A daemon serving the mediator API on loopback, a gRPC client for it, test certificates."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import msgspec
from google.protobuf.message import Message

from flowsd.app import Daemon
from flowsd.config import CommandsConfig, Config, MediatorConfig, MetersConfig, PollConfig
from flowsd.mediator.proto import mediator_pb2 as pb
from flowsd.sim.clock import SimClock
from flowsd.sim.fleet import SimulatedFleet
from tests.integration.daemon import (
    FROZEN_AT,
    daemon_config,
    fetch,
    free_port,
    registered_fleet,
    running_daemon,
    sim_wall_clock,
    with_meters,
)

MEDIATOR = "/simt_emlite.mediator.grpc.EmliteMediatorService/"
INFO = "/simt_emlite.mediator.grpc.InfoService/"
SINGLE_PHASE = ("C1.w", "EMA1.w", "B1.w")


class Client:
    """The mediator's five methods over one channel (what the reference client sends)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def _call(
        self, path: str, request: Message, reply: type[Message], deadline: float | None
    ) -> Any:
        method = self.channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        return await method(request, timeout=deadline)

    async def read(self, serial: str, oid: int, deadline: float | None = 60) -> bytes:
        request = pb.ReadElementRequest(serial=serial, objectId=oid)
        reply = await self._call(MEDIATOR + "readElement", request, pb.ReadElementReply, deadline)
        return bytes(reply.response)

    async def write(self, serial: str, oid: int, payload: bytes, deadline: float = 60) -> None:
        request = pb.WriteElementRequest(serial=serial, objectId=oid, payload=payload)
        await self._call(MEDIATOR + "writeElement", request, pb.WriteElementReply, deadline)

    async def raw(self, serial: str, data: bytes, deadline: float = 60) -> bytes:
        request = pb.SendRawMessageRequest(serial=serial, dataField=data)
        reply = await self._call(
            MEDIATOR + "sendRawMessage", request, pb.SendRawMessageReply, deadline
        )
        return bytes(reply.response)

    async def info(self, serial: str) -> str:
        reply = await self._call(
            INFO + "GetInfo", pb.GetInfoRequest(serial=serial), pb.GetInfoReply, 30
        )
        return str(reply.json_data)

    async def meters(self, esco: str = "") -> str:
        reply = await self._call(
            INFO + "GetMeters", pb.GetMetersRequest(esco=esco), pb.GetMetersReply, 30
        )
        return str(reply.json_meters)


@dataclass
class Served:
    daemon: Daemon
    fleet: SimulatedFleet
    clock: SimClock
    url: str
    address: str


def mediator_config(
    tmp_path: Path,
    url: str,
    fleet: SimulatedFleet,
    *,
    mediator: MediatorConfig | None = None,
    poll: PollConfig | None = None,
    commands: CommandsConfig | None = None,
    meters_config: MetersConfig | None = None,
) -> Config:
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    config = with_meters(
        daemon_config(
            tmp_path,
            url,
            meters=meters_config,
            poll=poll
            or PollConfig(
                cadences={"slow": 86_400.0},
                single_phase={"slow": ["csq_net_op"]},
                three_phase={"slow": ["csq_net_op"]},
            ),
        ),
        fleet,
    )
    mediator = msgspec.structs.replace(mediator or MediatorConfig(), listen=listen)
    return msgspec.structs.replace(
        config,
        mediator=mediator,
        commands=commands or CommandsConfig(readback_settle_seconds=0.0, table_poll_seconds=0.5),
    )


@asynccontextmanager
async def served(
    url: str,
    tmp_path: Path,
    *,
    meters: int = 3,
    hardware: tuple[str, ...] = SINGLE_PHASE,
    faults: str | None = None,
    mediator: MediatorConfig | None = None,
    poll: PollConfig | None = None,
    commands: CommandsConfig | None = None,
    meters_config: MetersConfig | None = None,
) -> AsyncIterator[Served]:
    """A frozen-clock fleet, registered in the migrated database at ``url``, and the daemon
    serving the mediator API."""
    clock = SimClock(FROZEN_AT, speed=0.0)
    async with registered_fleet(
        url, meters, clock=clock, hardware=hardware, faults=faults
    ) as fleet:
        config = mediator_config(
            tmp_path,
            url,
            fleet,
            mediator=mediator,
            poll=poll,
            commands=commands,
            meters_config=meters_config,
        )
        async with running_daemon(config, url, wall_clock=sim_wall_clock(clock)) as daemon:
            assert daemon.mediator_address is not None
            host, port = daemon.mediator_address
            yield Served(daemon, fleet, clock, url, f"{host}:{port}")


@asynccontextmanager
async def client(
    address: str, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[Client]:
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(
            address, credentials, options=(("grpc.ssl_target_name_override", "cepro-mediators"),)
        )
    try:
        yield Client(channel)
    finally:
        await channel.close()


async def events_of(url: str, name: str) -> list[dict[str, Any]]:
    """Payloads of the events of one type, in log order."""
    rows = await fetch(
        url,
        """SELECT e.payload FROM flows.meter_event_log e
           JOIN flows.meter_event_log_type t ON t.id = e.event_type
           WHERE t.name = $1 ORDER BY e.position""",
        name,
    )
    return [msgspec.json.decode(r["payload"]) for r in rows]


# ----------------------------------------------------------------- test certificates


def openssl() -> str | None:
    return shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    directory: Path

    def client(self, cn: str, ou: str | None = None) -> grpc.ChannelCredentials:
        cert, key = make_client(self, cn, ou)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for ``cepro-mediators`` and 127.0.0.1 (openssl CLI)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
         "-subj", "/CN=flowsd test CA")  # fmt: skip
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    _run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=cepro-mediators")
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=DNS:cepro-mediators,DNS:localhost,IP:127.0.0.1\n")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2",
         "-extfile", str(extensions))  # fmt: skip
    return Pki(ca, cert, key, directory)


def make_client(pki: Pki, cn: str, ou: str | None, *, ca: Path | None = None) -> tuple[Path, Path]:
    """A client certificate with this CN (and OU), signed by the test CA (or ``ca``)."""
    stem = pki.directory / f"client-{cn}-{ou or 'none'}"
    key, csr, cert = stem.with_suffix(".key"), stem.with_suffix(".csr"), stem.with_suffix(".pem")
    subject = f"/CN={cn}" + (f"/OU={ou}" if ou else "")
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", subject)  # fmt: skip
    ca_cert = ca or pki.ca
    ca_key = ca_cert.with_suffix(".key")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2")  # fmt: skip
    return cert, key


def tls_mediator(pki: Pki, **changes: Any) -> MediatorConfig:
    return MediatorConfig(
        tls_certificate=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        **changes,
    )
