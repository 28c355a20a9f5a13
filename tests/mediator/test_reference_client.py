"""The public reference client (simt-emlite 1.2.12), unchanged, against `flowsd run`'s mediator.

The client needs Python 3.12 or 3.13: the test looks for one (``FLOWSD_REFERENCE_PYTHON``,
``python3.13``/``python3.12`` on PATH, pyenv's versions) and skips with the reason when there
is none. Its venv is built once and kept outside the repository
(``$XDG_CACHE_HOME/flowsd/`` or ``~/.cache/flowsd/``), so later runs reuse it and a clean
clone builds it on first use (which needs the package index).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from flowsd.sim.tokens import make_token

from .helpers import events_of, served

PACKAGE = "simt-emlite==1.2.12"
SCRIPT = Path(__file__).with_name("reference_client.py")


def reference_python() -> str | None:
    """An interpreter the reference client supports (3.12 or 3.13), or None."""
    candidates = [os.environ.get("FLOWSD_REFERENCE_PYTHON", "")]
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in (13, 12)]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in (13, 12):
        candidates += sorted(glob.glob(str(pyenv / f"3.{minor}.*" / "bin" / "python")))
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] in ((3, 12), (3, 13)))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return candidate
    return None


def reference_venv(python: str) -> Path:
    """The cached venv with the reference client (built on first use); skips when the
    package cannot be installed (no package index)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowsd"
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    venv = cache / f"{PACKAGE.replace('==', '-')}-py{version}"
    stamp = venv / ".installed"
    if stamp.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode != 0:
        tail = (install.stderr or install.stdout).strip().splitlines()[-1:]
        pytest.skip(f"cannot install {PACKAGE}: {' '.join(tail)}")
    stamp.write_text(PACKAGE + "\n")
    return venv


async def test_the_reference_client_reads_and_writes_through_flowsd(
    migrated_url: str, tmp_path: Path
) -> None:
    python = reference_python()
    if python is None:
        pytest.skip("no Python 3.12 or 3.13 for the reference client (simt-emlite 1.2.12)")
    venv = await anyio.to_thread.run_sync(reference_venv, python)
    async with served(migrated_url, tmp_path, hardware=("EMA1.w",), meters=1) as s:
        meter = s.fleet.meters[0]
        token = make_token(1500, 99)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIATOR_")}
        result = await anyio.run_process(
            [str(venv / "bin" / "python"), str(SCRIPT), s.address, meter.serial, token],
            check=False,
            env=env,
        )
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        lines = result.stdout.decode().splitlines()
        (found,) = [line for line in lines if line.startswith("RESULT ")]
        seen = json.loads(found.removeprefix("RESULT "))
        truth = s.fleet.truth(meter.index)
        await s.daemon.appender.flush()
        requested = await events_of(migrated_url, "COMMAND_REQUESTED")
        failed = await events_of(migrated_url, "COMMAND_FAILED")
    print(json.dumps(seen, indent=2), file=sys.stderr)
    assert seen["serial"] == meter.serial
    assert Decimal(seen["balance_after"]) == Decimal(seen["balance_before"]) + Decimal("15")
    # flowsd hands the meter's refusal to the caller (the reference mediator does not).
    assert seen["second_token"].startswith("FAILED_PRECONDITION")
    assert "SECURITY_NOT_GRANTED" in seen["second_token"]
    assert seen["balance_after_second"] == seen["balance_after"]
    assert truth.future_tariff is not None
    assert truth.future_tariff.unit_rate_a == 24681
    assert truth.future_tariff.standing_charge == 61234
    # Every write is in the log: 2 tokens, 1 clock set, 11 tariff writes.
    assert len(requested) == 14
    assert [f["nak"] for f in failed] == ["SECURITY_NOT_GRANTED"]
