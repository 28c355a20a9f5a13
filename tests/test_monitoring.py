"""config/monitoring: the alert rules pass promtool's check and unit tests, the dashboard is
well formed, and every series either uses is one a real flowsd scrape contains."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.ops.scrape import real_scrape

MONITORING = Path(__file__).resolve().parent.parent / "config" / "monitoring"
RULES = MONITORING / "flowsd-alerts.yml"
RULE_TESTS = MONITORING / "flowsd-alerts.test.yml"
DASHBOARD = MONITORING / "flowsd-dashboard.json"
PROMETHEUS_EXAMPLE = MONITORING / "prometheus.example.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed"
)

# What the issue asks the rules to cover, by alert name.
REQUIRED_ALERTS = {
    "FlowsdDown",  # daemon down
    "FlowsdDatabaseDown",
    "FlowsdFleetOfflineShareHigh",
    "FlowsdStaleMeters",
    "FlowsdProjectorLagging",
    "FlowsdSpillGrowing",
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up"}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()")


def series_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels left out)."""
    text = _STRING.sub("", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = text.replace("$__rate_interval", " ")
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        name = match.group(0)
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_series_in_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{x="y (z)"}[5m]))) '
        '/ on (instance) group_left b_total and c unless absent(d{job="flowsd"}) > bool 0'
    )
    assert series_in(expr) == {"a_seconds_bucket", "b_total", "c", "d"}


def rule_exprs() -> dict[str, str]:
    """alert name -> expr, from flowsd-alerts.yml (plain or folded ``>-`` scalars)."""
    lines = RULES.read_text().splitlines()
    found: dict[str, str] = {}
    alert = ""
    for i, line in enumerate(lines):
        if match := re.match(r"\s*- alert: (\S+)", line):
            alert = match.group(1)
        elif match := re.match(r"(\s*)expr: (.*)", line):
            indent, value = len(match.group(1)), match.group(2).strip()
            if value in (">-", ">", "|", "|-"):
                body = []
                for more in lines[i + 1 :]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    body.append(more.strip())
                value = " ".join(body)
            found[alert] = value
    return found


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


async def _promtool(*argv: str) -> str:
    with anyio.fail_after(120):
        done = await anyio.run_process(["promtool", *argv], cwd=MONITORING, check=False)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


@needs_promtool
async def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 9 rules found" in await _promtool("check", "rules", RULES.name)


@needs_promtool
async def test_the_example_scrape_config_is_valid_and_loads_the_rules() -> None:
    output = await _promtool("check", "config", PROMETHEUS_EXAMPLE.name)
    assert "SUCCESS: 1 rule files found" in output and "SUCCESS: 9 rules found" in output
    assert "job_name: flowsd" in PROMETHEUS_EXAMPLE.read_text()


@needs_promtool
async def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in await _promtool("test", "rules", RULE_TESTS.name)


@needs_promtool
async def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses every expression of a rule file: each query becomes a recording rule,
    # with Grafana's variables replaced by what Grafana would send.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(exprs):
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        rules += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(concrete)}"]
    (tmp_path / "dashboard-rules.yml").write_text("\n".join(rules) + "\n")
    with anyio.fail_after(120):
        done = await anyio.run_process(
            ["promtool", "check", "rules", str(tmp_path / "dashboard-rules.yml")], check=False
        )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    assert f"SUCCESS: {len(exprs)} rules found" in output


def test_rules_cover_what_operators_need_and_each_is_unit_tested() -> None:
    alerts = set(rule_exprs())
    assert len(alerts) == RULES.read_text().count("- alert:") == 9
    assert alerts >= REQUIRED_ALERTS
    tested = set(re.findall(r"alertname: (\S+)", RULE_TESTS.read_text()))
    assert tested == alerts


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
    titles = " / ".join(p["title"] for p in panels).lower()
    for wanted in ("offline", "stale", "poll duration", "request latency", "reason",
                   "appended", "queue and spill", "projector lag", "database"):  # fmt: skip
        assert wanted in titles, wanted
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}


async def test_dashboard_and_rules_use_only_series_flowsd_exports(
    migrated_url: str, tmp_path: Path
) -> None:
    scrape = await real_scrape(migrated_url, tmp_path)
    exported = scrape.series_names() | PROMETHEUS_SERIES
    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for expr in [*dashboard_exprs(dashboard), *rule_exprs().values()]:
        for name in series_in(expr):
            used.setdefault(name, set()).add(expr)
    assert len(used) > 25
    missing = {name: exprs for name, exprs in used.items() if name not in exported}
    assert missing == {}
