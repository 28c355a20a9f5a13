"""The event loop choice (flowsd.ops.event_loop): each run in a fresh interpreter, since an
event loop policy or a failed import would otherwise outlive the test."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs a coroutine with the chosen loop and prints the kind it ran on and what it returned.
_PROBE = """
import sys
if sys.argv[2] == "missing":
    sys.modules["uvloop"] = None  # `import uvloop` now raises ImportError, as on a bare platform
from flowsd.ops.event_loop import loop_in_use, run

async def main():
    return loop_in_use()

print(run(main, sys.argv[1]))
"""


def _ran_on(choice: str, uvloop: str = "installed") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, choice, uvloop], capture_output=True, text=True, check=True
    )


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_the_chosen_loop_runs_the_coroutine(choice: str) -> None:
    assert _ran_on(choice).stdout.strip() == choice


def test_a_missing_uvloop_falls_back_to_asyncio_with_a_warning() -> None:
    ran = _ran_on("uvloop", uvloop="missing")
    assert ran.stdout.strip().splitlines()[-1] == "asyncio"
    assert "uvloop not available" in ran.stdout + ran.stderr


def test_asyncio_is_chosen_without_touching_uvloop() -> None:
    # Choosing asyncio must work where uvloop cannot even be imported.
    assert _ran_on("asyncio", uvloop="missing").stdout.strip() == "asyncio"
