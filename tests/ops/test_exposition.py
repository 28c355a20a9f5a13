"""What ``/metrics`` really serves: promtool-clean, units in names, snake_case label values,
the build info, and no ``_created`` series."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anyio
import pytest

from flowsd.ops.metrics import snake_case
from tests.ops.scrape import real_scrape

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed"
)

# Name endings that carry a unit (base units, as Prometheus' naming guide asks) or say
# what is counted.
_UNIT_SUFFIXES = ("_seconds", "_bytes", "_events", "_position", "_info")
# Gauges that are a count of things named in the metric, a 0/1 state, or an info metric.
_UNITLESS = {
    "flowsd_meters",  # meters by state
    "flowsd_meters_stale",
    "flowsd_meters_waiting_to_start",
    "flowsd_meters_never_answered",
    "flowsd_meters_owned",
    "flowsd_daemons_live",
    "flowsd_registry_meters",
    "flowsd_registry_not_dialled",
    "flowsd_meter_connections_in_flight",
    "flowsd_meter_polls_running",
    "flowsd_meter_commands_running",
    "flowsd_meter_commands_queued",
    "flowsd_appender_database_up",
    "flowsd_projector_healthy",
    "flowsd_projector_active",
    "flowsd_spill_disk_full",
    "flowsd_gc_frozen_objects",
}
_SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? ")


@needs_promtool
async def test_promtool_finds_nothing_to_complain_about(migrated_url: str, tmp_path: Path) -> None:
    scrape = await real_scrape(migrated_url, tmp_path)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            ["promtool", "check", "metrics"], input=scrape.text.encode(), check=False
        )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == ""


async def test_every_name_carries_its_unit(migrated_url: str, tmp_path: Path) -> None:
    scrape = await real_scrape(migrated_url, tmp_path)
    families = {n: k for n, k in scrape.families().items() if n.startswith("flowsd_")}
    assert len(families) > 50
    for name, kind in families.items():
        if kind == "counter":
            assert name.endswith("_total") and not name.endswith("_total_total"), name
            continue
        assert name.endswith(_UNIT_SUFFIXES) or name in _UNITLESS, (name, kind)
    assert not [line for line in scrape.text.splitlines() if "_created" in line]


async def test_label_values_are_snake_case_words(migrated_url: str, tmp_path: Path) -> None:
    scrape = await real_scrape(migrated_url, tmp_path)
    values: set[str] = set()
    for line in scrape.text.splitlines():
        match = _SAMPLE.match(line)
        if not match or not match["name"].startswith("flowsd_") or not match["labels"]:
            continue
        for pair in re.findall(r'(\w+)="([^"]*)"', match["labels"]):
            if pair[0] not in ("le", "version", "python", "postgres"):
                values.add(pair[1])
    assert {"failed", "offline", "online", "reading", "session_outcome"} <= values
    assert [v for v in values if not _SNAKE.match(v)] == []


async def test_build_info_names_the_versions(migrated_url: str, tmp_path: Path) -> None:
    scrape = await real_scrape(migrated_url, tmp_path)
    info = [line for line in scrape.text.splitlines() if line.startswith("flowsd_build_info{")]
    assert len(info) == 1, info
    assert f'postgres="{scrape.server_version}"' in info[0]
    assert re.search(r'version="\d+\.\d+\.\d+"', info[0]) and info[0].endswith(" 1.0")


def test_type_and_method_names_become_snake_case_label_values() -> None:
    assert snake_case("IntervalRecord") == "interval_record"
    assert snake_case("readElement") == "read_element"
    assert snake_case("sendRawMessage") == "send_raw_message"
    assert snake_case("GetInfo") == "get_info"
    assert snake_case("csq") == "csq"
