"""A real ``/metrics`` scrape: the daemon polling a simulated fleet with faults, over HTTP.

Taken once per test session (it costs a daemon run) and shared by the exposition tests and
the monitoring tests, which check that every series the dashboard and the alert rules use
is one flowsd really exports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg
import msgspec

from flowsd.config import ManagementConfig
from tests.integration.daemon import (
    daemon_config,
    fast_plan,
    registered_fleet,
    running_daemon,
    with_meters,
)
from tests.support import wait_until

# One dead meter (offline), one answering with a bad CRC at times (failed requests).
FAULTS = "blackhole@0=1,badcrc@1=0.3"
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Scrape:
    text: str
    server_version: str  # e.g. 15.20: the PostgreSQL server the daemon used

    def families(self) -> dict[str, str]:
        """Metric family name (as exposed, with ``_total`` for counters) -> type."""
        found = {}
        for name, kind in _TYPE_LINE.findall(self.text):
            # The text format names counters with _total already; OpenMetrics would not.
            total = kind == "counter" and not name.endswith("_total")
            found[name + "_total" if total else name] = kind
        return found

    def series_names(self) -> set[str]:
        """Every name a query can use: families plus histograms' ``_bucket/_sum/_count``."""
        names = set()
        for name, kind in self.families().items():
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return names


_cache: dict[str, Scrape] = {}


async def _http_get(port: int, path: str) -> str:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(30):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    return data.partition(b"\r\n\r\n")[2].decode()


async def real_scrape(database_url: str, tmp_path: Path) -> Scrape:
    """The scrape (taken at the first call of the session, of a daemon on the migrated
    database at ``database_url``)."""
    if "scrape" in _cache:
        return _cache["scrape"]
    async with registered_fleet(database_url, 5, faults=FAULTS) as fleet:
        config = with_meters(daemon_config(tmp_path, database_url, poll=fast_plan(0.5)), fleet)
        config = msgspec.structs.replace(config, management=ManagementConfig(listen="127.0.0.1:0"))
        async with running_daemon(config, database_url) as daemon:
            await wait_until(lambda: daemon.supervisor.status(top=0).offline >= 1)
            await wait_until(lambda: daemon.supervisor.statistics().polls >= 10)
            await wait_until(
                lambda: sum(daemon.supervisor.statistics().request_failures.values()) >= 1
            )
            projectors = daemon.projectors
            assert projectors is not None
            await wait_until(lambda: all(s.checkpoint > 0 for s in projectors.status()))
            assert daemon.management_address is not None
            text = await _http_get(daemon.management_address[1], "/metrics")
            conn_version = await _server_version(database_url)
    _cache["scrape"] = Scrape(text, conn_version)
    return _cache["scrape"]


async def _server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        reported: str = await conn.fetchval("SHOW server_version")
        return reported.split(maxsplit=1)[0]  # e.g. "15.20 (Debian 15.20-0+deb12u1)"
    finally:
        await conn.close()
