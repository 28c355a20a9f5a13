"""A small EMOP client for the simulator tests: one request per connection, as flowsd does.

Reads until a whole frame arrived (tolerating split answers), the peer closed, or the
timeout passed; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time

from flowsd.emop import REFERENCE_CLIENT, Request, Response, ResponseReader, encode_request
from flowsd.sim.fleet import MeterInfo

TIMEOUT = 3.0


async def raw_exchange(
    meter: MeterInfo, wire: bytes, *, seconds: float = TIMEOUT, single_read: bool = False
) -> tuple[bytes, list[float]]:
    """Send ``wire``; return every byte received until EOF (or one read) and their arrival times."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(meter.ip_address, meter.port), seconds
    )
    received = bytearray()
    arrivals: list[float] = []
    try:
        writer.write(wire)
        deadline = time.monotonic() + seconds
        for _ in range(1_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no EOF within {seconds}s ({len(received)} bytes)")
            chunk = await asyncio.wait_for(reader.read(512), remaining)
            if not chunk:
                break
            received += chunk
            arrivals.append(time.monotonic())
            if single_read:
                break
    finally:
        writer.close()
    return bytes(received), arrivals


async def ask(meter: MeterInfo, request: Request, *, seconds: float = TIMEOUT) -> Response:
    """The checked, decoded response to ``request`` (codec errors are raised), which must be
    addressed back to the requester."""
    raw, _ = await raw_exchange(meter, encode_request(request), seconds=seconds)
    reader = ResponseReader(request, twin=meter.twin_element, client=REFERENCE_CLIENT)
    return reader.feed(raw) or reader.eof()
