"""systemd's notify protocol (``sd_notify``) without libsystemd.

One datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``. Every call is a no-op when the
process is not run by systemd with ``Type=notify``; failures to send are ignored, as the
protocol intends (the service must not depend on the manager listening).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class SystemdNotifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to systemd when ``$NOTIFY_SOCKET`` is set."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace: a leading NUL byte on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self.ready_sent = False
        if address[:1] in ("/", "@"):
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and (not pid or int(pid) == os.getpid()):
            self.watchdog_interval = int(usec) / 2_000_000  # ping at half the timeout

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> None:
        if self._socket is None:
            return
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        with contextlib.suppress(OSError):
            self._socket.sendto(payload.encode(), self._address)

    def ready(self, status: str = "") -> None:
        self.send(ready=1, status=status) if status else self.send(ready=1)

    def ready_or_status(self, status: str) -> None:
        """``READY=1`` with ``status`` the first time, ``STATUS=`` alone after that."""
        if self.ready_sent:
            self.status(status)
        else:
            self.ready_sent = True
            self.ready(status)

    def status(self, status: str) -> None:
        self.send(status=status.replace("\n", " "))

    def watchdog(self) -> None:
        self.send(watchdog=1)

    def stopping(self, status: str = "stopping") -> None:
        self.send(stopping=1, status=status)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
