"""Run the benchmarks: ``python -m bench [--only AREA ...] [--quick]``.

Each ``bench/bench_<area>.py`` exposes ``run(quick: bool) -> list[Result]``. Results go to
``bench/results/latest.json`` (and a time-stamped copy) and a table on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.common import Result

HERE = Path(__file__).resolve().parent


def _areas() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def _table(results: list[Result]) -> str:
    rows = [("area", "benchmark", "value", "unit")]
    rows += [(r.area, r.name, f"{r.value:,.2f}", r.unit) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[2].rjust(widths[2]), row[3].ljust(widths[3])]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--only", nargs="*", choices=_areas(), help="areas to run (default all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()
    results: list[Result] = []
    for area in args.only or _areas():
        module = importlib.import_module(f"bench.bench_{area}")
        print(f"# running {area} ...", file=sys.stderr, flush=True)
        results.extend(module.run(args.quick))
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "quick": args.quick,
        "results": [asdict(r) for r in results],
    }
    text = json.dumps(document, indent=2, default=str)
    (args.output / "latest.json").write_text(text)
    (args.output / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(text)
    print(_table(results))
    print(f"\nJSON: {args.output / 'latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
