"""File-descriptor capacity of the simulator: one listening socket per meter needs as many
descriptors."""

from __future__ import annotations

from flowsd.ops.limits import raise_open_files_limit

# Descriptors kept free for connections in flight, the event loop, logs and the database.
HEADROOM = 256


def check_capacity(meters: int) -> None:
    """Raise ValueError when the process cannot hold one socket per meter plus headroom."""
    soft, hard = raise_open_files_limit()
    if meters + HEADROOM > soft:
        raise ValueError(
            f"{meters} meters need about {meters + HEADROOM} open files; the limit is {soft} "
            f"(hard limit {hard}); raise it (ulimit -n, systemd LimitNOFILE) or simulate fewer"
        )
