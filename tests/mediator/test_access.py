"""Who may call what (mutual TLS, CN/OU roles, ESCO scopes), deadlines and full queues."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import grpc
import msgspec
import pytest

from flowsd.config import CommandsConfig, MediatorConfig
from flowsd.emop import object_id
from flowsd.emop.records import Serial
from flowsd.errors import ConfigError
from flowsd.mediator.auth import Identity, Policy, identity_of, subject_attribute
from flowsd.mediator.server import check_config
from flowsd.sim.tokens import make_token
from tests.integration.daemon import FAST_METERS

from .helpers import client, events_of, make_client, make_pki, openssl, served, tls_mediator

SERIAL = object_id("serial")
TOKEN_SEND = object_id("prepay_token_send")
needs_openssl = pytest.mark.skipif(openssl() is None, reason="the openssl command is not installed")


def test_without_tls_only_loopback_may_listen() -> None:
    check_config(MediatorConfig(listen="127.0.0.1:5000"))
    check_config(MediatorConfig(listen="[::1]:5000"))
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_config(MediatorConfig(listen="0.0.0.0:5000"))
    with pytest.raises(ConfigError, match="go together"):
        check_config(MediatorConfig(listen="127.0.0.1:5000", tls_certificate="x.pem"))
    check_config(
        MediatorConfig(listen="0.0.0.0:5000", tls_certificate="c", tls_key="k", tls_client_ca="ca")
    )


def test_roles_follow_the_unit_and_a_client_override() -> None:
    policy = Policy(
        MediatorConfig(client_roles={"special": "writer"}, default_role="none"), tls=True
    )
    ops = Identity("ops", "internal", "p")
    partner = Identity("acme", "partner", "p")
    monitor = Identity("grafana", "readonly", "p")
    assert policy.check(ops, "write", "m") is None
    assert policy.check(partner, "read", "m") is None
    assert policy.check(partner, "write", "m") is not None
    assert policy.check(monitor, "read", "m") is not None
    assert policy.check(monitor, "info", "m") is None
    assert policy.check(Identity("special", "partner", "p"), "write", "m") is None
    assert policy.check(Identity("who", None, "p"), "info", "m") is not None
    assert subject_attribute(r"CN=a\,b,OU=partner,O=x", "CN") == "a,b"
    found = identity_of({"x509_subject": [b"CN=acme,OU=partner"]}, "peer")
    assert (found.common_name, found.unit) == ("acme", "partner")


@needs_openssl
async def test_certificates_decide_who_may_write_read_and_reach_which_esco(
    migrated_url: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    mediator = tls_mediator(pki, client_escos={"acme": ["no-such-esco"]})
    async with served(migrated_url, tmp_path, mediator=mediator) as s:
        serial = s.fleet.meters[0].serial
        # A writer (OU internal) writes.
        async with client(s.address, pki.client("ops", "internal")) as ops:
            await ops.write(serial, TOKEN_SEND, make_token(100, 1).encode())
        # A reader (OU partner) reads, and may not write.
        async with client(s.address, pki.client("reporting", "partner")) as reader:
            assert Serial.decode(await reader.read(serial, SERIAL)).value == serial
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await reader.write(serial, TOKEN_SEND, make_token(100, 2).encode())
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # info only (OU readonly): GetMeters yes, readElement no.
        async with client(s.address, pki.client("grafana", "readonly")) as info:
            assert json.loads(await info.meters())
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await info.read(serial, SERIAL)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A partner scoped to another ESCO reaches none of these meters and lists none.
        async with client(s.address, pki.client("acme", "partner")) as acme:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await acme.read(serial, SERIAL)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert json.loads(await acme.meters()) == []
        # No certificate, or one from another CA: no connection at all.
        async with client(s.address, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as anon:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await anon.read(serial, SERIAL, deadline=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        other = make_pki(tmp_path / "other")
        cert, key = make_client(other, "ops", "internal")
        forged = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        async with client(s.address, forged) as intruder:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await intruder.read(serial, SERIAL, deadline=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert s.daemon.mediator is not None
        assert s.daemon.mediator.statistics().refusals == {"role": 2, "esco": 1}
        await s.daemon.appender.flush()
        requested = await events_of(migrated_url, "COMMAND_REQUESTED")
    assert [r["client"] for r in requested] == ["CN=ops,OU=internal"]


async def test_a_full_queue_and_a_passed_deadline(migrated_url: str, tmp_path: Path) -> None:
    slow = msgspec.structs.replace(FAST_METERS, read_timeout_seconds=5.0)
    async with served(
        migrated_url,
        tmp_path,
        faults="slow@0=1:1500ms",
        meters_config=slow,
        commands=CommandsConfig(queue_size=1, readback_settle_seconds=0.0),
    ) as s:
        serial = s.fleet.meters[0].serial
        codes: list[grpc.StatusCode] = []
        async with client(s.address) as c:

            async def read(deadline: float) -> None:
                try:
                    await c.read(serial, SERIAL, deadline=deadline)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read, 30.0)  # runs (1.5 s at the meter)
                await anyio.sleep(0.3)
                tg.start_soon(read, 30.0)  # waits in the queue (size 1)
                await anyio.sleep(0.3)
                tg.start_soon(read, 30.0)  # no room
            assert sorted(c.name for c in codes) == ["OK", "OK", "RESOURCE_EXHAUSTED"]
            # A caller that gives up while its command waits: the command is never sent.
            before = s.fleet.connections_to(serial)
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, 30.0)
                await anyio.sleep(0.3)
                tg.start_soon(read, 0.5)
            assert sorted(c.name for c in codes[-2:]) == ["DEADLINE_EXCEEDED", "OK"]
            await anyio.sleep(2.0)  # time enough for a command that was not withdrawn to run
            assert s.fleet.connections_to(serial) == before + 1
