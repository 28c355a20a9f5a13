"""Round trips through the mediator API of a running daemon, with the production pacing.

One simulated single-phase meter (in this process, real clock), the daemon in this process
with the default ``[meters]`` settings (2 s between two requests to a meter, as the reference
mediator spaces them) and its mediator API on loopback, a gRPC client in this process:

* a read when the meter is idle (nothing to wait for): the API's own cost plus one exchange;
* reads back to back: each waits for the meter's 2 s gap, as with the reference mediator;
* the future tariff as the reference client writes it (11 ``writeElement`` calls, one after
  the other), and the same as one flowsd command (``flowsd meter S future-tariff``: 11
  writes and the 9 reads of its read-back, one queue entry);
* for comparison, what the reference mediator's pacing makes of the same work: each request
  one round trip plus the 2 s gap before the next.

Run: ``python -m bench --only mediator`` (``--quick``: fewer back-to-back reads).
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import asyncpg
import grpc
import grpc.aio

from bench.bench_daemon import _database, _drop_database, _fresh_database
from bench.common import Result
from flowsd.app import Daemon
from flowsd.config import (
    Config,
    DatabaseConfig,
    ManagementConfig,
    MediatorConfig,
    MetersConfig,
    PollConfig,
    StateConfig,
)
from flowsd.db.migrate import migrate
from flowsd.emop import object_id
from flowsd.emop.writes import future_tariff_writes
from flowsd.mediator.proto import mediator_pb2 as pb
from flowsd.meters import operations as commands
from flowsd.meters.command import MeterCommand
from flowsd.ops.logs import configure_logging
from flowsd.sim.fleet import SimulatedFleet
from flowsd.sim.register import register_fleet

AREA = "mediator"
GAP_SECONDS = 2.0
PATH = "/simt_emlite.mediator.grpc.EmliteMediatorService/"
BALANCE = object_id("prepay_balance")
ACTIVATION = datetime(2026, 7, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _measure(url: str, state: Path, reads: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    port = _free_port()
    fleet = SimulatedFleet(
        meters=1, seed=5, base_address="127.83.0.1", port=port, hardware=["C1.w"]
    )
    async with fleet:
        conn = await asyncpg.connect(url)
        try:
            await register_fleet(conn, 5, [fleet.state.identity(0)])
        finally:
            await conn.close()
        serial = fleet.meters[0].serial
        config = Config(
            database=DatabaseConfig(url=url),
            state=StateConfig(directory=str(state)),
            management=ManagementConfig(listen=""),
            meters=MetersConfig(port=port, min_gap_seconds=GAP_SECONDS),
            poll=PollConfig(
                cadences={"daily": 86_400.0},
                single_phase={"daily": ["csq_net_op"]},
                three_phase={"daily": ["csq_net_op"]},
            ),
            mediator=MediatorConfig(listen=f"127.0.0.1:{_free_port()}"),
        )
        daemon = Daemon(config, url, handle_signals=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            with anyio.fail_after(60):
                await daemon.ready.wait()
            assert daemon.mediator_address is not None
            host, bound = daemon.mediator_address
            channel = grpc.aio.insecure_channel(f"{host}:{bound}")
            read = channel.unary_unary(
                PATH + "readElement",
                request_serializer=pb.ReadElementRequest.SerializeToString,
                response_deserializer=pb.ReadElementReply.FromString,
            )
            write = channel.unary_unary(
                PATH + "writeElement",
                request_serializer=pb.WriteElementRequest.SerializeToString,
                response_deserializer=pb.WriteElementReply.FromString,
            )
            request = pb.ReadElementRequest(serial=serial, objectId=BALANCE)
            await read(request, timeout=75)  # channel set-up; then let the gap pass
            await anyio.sleep(GAP_SECONDS + 0.5)
            started = time.perf_counter()
            await read(request, timeout=75)
            idle = time.perf_counter() - started
            back_to_back = []
            for _ in range(reads):
                started = time.perf_counter()
                await read(request, timeout=75)
                back_to_back.append(time.perf_counter() - started)
            await anyio.sleep(GAP_SECONDS + 0.5)
            started = time.perf_counter()
            for w in future_tariff_writes(
                unit_rate=Decimal("0.25"), standing_charge=Decimal("0.6"), activation=ACTIVATION
            ):
                await write(
                    pb.WriteElementRequest(serial=serial, objectId=w.object_id, payload=w.payload),
                    timeout=75,
                )
            raw_tariff = time.perf_counter() - started
            # Its read-back follows once the writes settled (10 s); let it finish first (the
            # session holds an inbox while it owes one).
            session = daemon.supervisor.sessions[(await daemon.dispatcher.lookup(serial)).meter_id]
            with anyio.fail_after(120):
                while session.inbox or session.running:  # noqa: ASYNC110 - engine state
                    await anyio.sleep(0.1)
            await anyio.sleep(GAP_SECONDS + 0.5)
            operation = commands.future_tariff(
                activation=ACTIVATION,
                unit_rate=Decimal("0.26"),
                standing_charge=Decimal("0.61"),
                emergency_credit=Decimal("15"),
                ecredit_availability=Decimal("10"),
                debt_recovery_rate=Decimal("0.3"),
            )
            ref = await daemon.dispatcher.lookup(serial)
            started = time.perf_counter()
            result = await daemon.dispatcher.run(
                ref, MeterCommand(operation, source="grpc", client="bench"), wait_seconds=120
            )
            command_tariff = time.perf_counter() - started
            assert result.ok, result
            await channel.close()
            daemon.request_stop()
    one_exchange = statistics.median(back_to_back) - GAP_SECONDS
    return {
        "idle_read": idle,
        "paced_read_p50": statistics.median(back_to_back),
        "raw_tariff": raw_tariff,
        "command_tariff": command_tariff,
        "exchange_estimate": max(one_exchange, 0.0),
    }


def run(quick: bool) -> list[Result]:
    configure_logging("warning")
    reads = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="flowsd-bench-") as tmp:
        admin, server = _database(os.environ.get("FLOWSD_DATABASE_URL"), Path(tmp))
        try:

            async def one() -> dict[str, float]:
                url = await _fresh_database(admin)
                try:
                    return await _measure(url, Path(tmp) / "state", reads)
                finally:
                    await _drop_database(admin, url)

            m = anyio.run(one)
        finally:
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
    # The reference mediator: every request one round trip, then 2 s before the next.
    reference_read = m["idle_read"]
    reference_tariff = 11 * m["idle_read"] + 10 * GAP_SECONDS
    return [
        Result(AREA, "read, meter idle, flowsd", m["idle_read"] * 1000, "ms"),
        Result(AREA, "read, back to back (paced 2 s), flowsd", m["paced_read_p50"], "seconds"),
        Result(AREA, "future tariff, 11 writeElement calls, flowsd", m["raw_tariff"], "seconds"),
        Result(
            AREA,
            "future tariff as one command (11 writes + 9 read-back), flowsd",
            m["command_tariff"],
            "seconds",
        ),
        Result(AREA, "read, reference pacing (1 round trip)", reference_read * 1000, "ms"),
        Result(
            AREA,
            "future tariff, reference pacing (11 round trips + 10 x 2 s)",
            reference_tariff,
            "seconds",
        ),
    ]
