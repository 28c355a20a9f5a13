"""systemd/flowsd.service and systemd/flowsd@.service: valid for systemd, hardened, and
consistent with the daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SINGLE = UNITS / "flowsd.service"
TEMPLATE = UNITS / "flowsd@.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _service_section(unit: Path) -> dict[str, list[str]]:
    """Every key of [Service] with all its values (systemd keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _one(service: dict[str, list[str]], key: str) -> str:
    assert len(service[key]) == 1, service[key]
    return service[key][0]


@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda u: u.name)
def test_unit_runs_the_daemon_as_notify_service(unit: Path) -> None:
    service = _service_section(unit)
    assert _one(service, "Type") == "notify"
    assert re.search(r"flowsd run --config \S+", _one(service, "ExecStart"))
    assert _one(service, "WatchdogSec") == "30s"
    # The daemon's shutdown drain (30 s) must finish before systemd's SIGKILL.
    assert int(_one(service, "TimeoutStopSec").rstrip("s")) > 30
    assert "AF_UNIX" in _one(service, "RestrictAddressFamilies")
    # Exit status 2 (bad config, state directory in use, port in use) is not restarted.
    assert _one(service, "RestartPreventExitStatus") == "2"


@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda u: u.name)
def test_reload_sends_sighup_to_the_daemon(unit: Path) -> None:
    assert _one(_service_section(unit), "ExecReload") == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda u: u.name)
def test_the_password_credential_is_optional(unit: Path) -> None:
    # ID:NAME (no leading slash) makes systemd search the credstore directories and skip a
    # missing file; ID:/absolute/path would fail the unit when the file is absent.
    credential = _one(_service_section(unit), "LoadCredential")
    name, _, source = credential.partition(":")
    assert name == "db-password"  # what flowsd reads from $CREDENTIALS_DIRECTORY
    assert source and not source.startswith("/"), credential


def test_template_instances_have_their_own_config_state_and_heartbeat() -> None:
    service = _service_section(TEMPLATE)
    assert _one(service, "ExecStart").endswith("--config /etc/flowsd/%i.toml")
    assert _one(service, "StateDirectory") == "flowsd/%i"
    assert "FLOWSD_INSTANCE=%i@%H" in service["Environment"]
    assert "%i" in _one(service, "LoadCredential")
    # Apart from what names the instance, the template is the single unit.
    single = _service_section(SINGLE)
    instance_keys = {"ExecStart", "StateDirectory", "Environment", "LoadCredential"}
    instance_keys.add("SyslogIdentifier")
    assert {k: v for k, v in service.items() if k not in instance_keys} == {
        k: v for k, v in single.items() if k not in instance_keys
    }


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda u: u.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists; a template is verified as an instance.
    text = re.sub(r"(?m)^(Exec\w*=)/opt/flowsd/bin/flowsd.*$", r"\1/bin/true", unit.read_text())
    copy = tmp_path / unit.name.replace("@.", "@north.")
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda u: u.name)
def test_unit_exposure_is_at_most_1_2(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr[-500:]
    assert float(match.group(1)) <= 1.2
