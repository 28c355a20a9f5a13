"""One daemon per state directory: the lock in-process and two real `flowsd run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsd.errors import UserError
from flowsd.ops.statelock import LOCK_NAME, StateDirectoryInUseError, state_directory_lock

FLOWSD = [sys.executable, "-m", "flowsd"]
WAIT_SECONDS = 60.0


def test_a_held_directory_is_refused_until_released(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"
    with state_directory_lock(state) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with (
            pytest.raises(StateDirectoryInUseError, match=rf"in use .*pid {os.getpid()}"),
            state_directory_lock(state),
        ):
            pass
    with state_directory_lock(state):  # released at exit
        pass


def test_an_unusable_directory_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with (
        pytest.raises(UserError, match=r"state directory .*: Not a directory"),
        state_directory_lock(blocker / "state"),
    ):
        pass


def _wait_for_pid(path: Path, pid: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip() == str(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never named pid {pid}")


def test_a_second_daemon_on_a_state_directory_in_use_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "flowsd.toml"
    config.write_text(f'[state]\ndirectory = "{tmp_path / "state"}"\n[management]\nlisten = ""\n')
    # Nothing listens on port 1: the first daemon holds the lock while it waits for the database.
    env = {**os.environ, "FLOWSD_DATABASE_URL": "postgresql://flowsd@127.0.0.1:1/none"}
    first = subprocess.Popen(
        [*FLOWSD, "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_pid(tmp_path / "state" / LOCK_NAME, first.pid)
        second = subprocess.run(
            [*FLOWSD, "run", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0] == (
            f"flowsd run: state directory {tmp_path / 'state'} is in use by another flowsd "
            f"daemon (pid {first.pid}); give each daemon its own [state] directory"
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=WAIT_SECONDS) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
