"""The sd_notify sender, against a real datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from flowsd.ops.notify import SystemdNotifier


def _receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_sends_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with _receiver(address) as systemd:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(address)})
        assert notifier.enabled
        notifier.ready("meters 0/10")
        assert systemd.recv(4096) == b"READY=1\nSTATUS=meters 0/10"
        notifier.status("two\nlines")
        assert systemd.recv(4096) == b"STATUS=two lines"
        notifier.watchdog()
        assert systemd.recv(4096) == b"WATCHDOG=1"
        notifier.stopping()
        assert systemd.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()


def test_abstract_namespace_address() -> None:
    name = f"flowsd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(2)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert systemd.recv(4096) == b"READY=1"


def test_no_socket_means_silent_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready()
    assert notifier.watchdog_interval is None


def test_unreachable_socket_does_not_raise(tmp_path: Path) -> None:
    SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}).ready()


def test_watchdog_interval_is_half_the_timeout() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(env).watchdog_interval == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
