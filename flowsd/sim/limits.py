"""File-descriptor limits: one listening socket per meter needs as many descriptors."""

from __future__ import annotations

import resource

# Descriptors kept free for connections in flight, the event loop, logs and the database.
HEADROOM = 256


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def check_capacity(meters: int) -> None:
    """Raise ValueError when the process cannot hold one socket per meter plus headroom."""
    soft, hard = raise_open_files_limit()
    if meters + HEADROOM > soft:
        raise ValueError(
            f"{meters} meters need about {meters + HEADROOM} open files; the limit is {soft} "
            f"(hard limit {hard}); raise it (ulimit -n, systemd LimitNOFILE) or simulate fewer"
        )
