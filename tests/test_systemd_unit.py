"""systemd/flowsd.service: valid for systemd, hardened, and consistent with the daemon."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "flowsd.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def test_unit_runs_the_daemon_as_notify_service() -> None:
    service = _service_section()
    assert service["Type"] == "notify"
    assert re.search(r"flowsd run --config \S+", service["ExecStart"])
    assert service["WatchdogSec"] == "30s"
    # The daemon's shutdown drain (30 s) must finish before systemd's SIGKILL.
    assert int(service["TimeoutStopSec"].rstrip("s")) > 30
    assert "AF_UNIX" in service["RestrictAddressFamilies"]


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^(Exec\w*=)/opt/flowsd/bin/flowsd.*$", r"\1/bin/true", UNIT.read_text())
    copy = tmp_path / "flowsd.service"
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@needs_systemd_analyze
def test_unit_exposure_is_low() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match.group(1)) <= 2.0
