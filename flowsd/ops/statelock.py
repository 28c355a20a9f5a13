"""One daemon per state directory.

A daemon keeps its spill journal (and, without a database URL, the embedded PostgreSQL) in
its state directory; two daemons sharing one would drain each other's journal. ``flowsd run``
and ``flowsd demo`` therefore take an exclusive ``flock`` on ``<state>/daemon.lock`` before
anything else and hold it until they exit (the kernel drops it when the process dies, so a
crash leaves no stale lock). The holder's pid is written into the file for the message the
second daemon prints: one line, exit status 2 (which systemd's unit does not restart).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from flowsd.errors import UserError

LOCK_NAME = "daemon.lock"


class StateDirectoryInUseError(UserError):
    """Another flowsd daemon holds the state directory."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def state_directory_lock(directory: Path) -> Iterator[Path]:
    """Hold ``directory`` for this process (created if missing); yields the lock file."""
    path = directory / LOCK_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"state directory {directory}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirectoryInUseError(
                f"state directory {directory} is in use by another flowsd daemon "
                f"(pid {_holder(fd)}); give each daemon its own [state] directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)
