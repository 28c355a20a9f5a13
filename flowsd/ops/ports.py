"""Finding a free management port for development runs (``flowsd demo --management auto``).

The daemon itself never moves to another port (a taken address is an error: Prometheus
scrapes a fixed one); only the demo, run next to other demos on one machine, searches.
"""

from __future__ import annotations

import socket

from flowsd.errors import UserError
from flowsd.ops.http import parse_listen_address

AUTO = "auto"
SEARCH_PORTS = 100


def next_free_listen(listen: str, *, tries: int = SEARCH_PORTS) -> str:
    """``listen`` (host:port) if its port is free, else the next free port on that host."""
    host, first = parse_listen_address(listen)
    last = min(first + tries, 65536) - 1
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise UserError(f"no free port for the management endpoint in {host}:{first}-{last}")
