"""``python -m tests.faults.report FILE``: the fault suite's report (FLOWSD_FAULT_REPORT) as a
table: per kind and server, the faults survived and the time from recovery to /readyz 200."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def table(lines: list[dict[str, object]]) -> str:
    merged: dict[tuple[str, str], list[float]] = defaultdict(list)
    rounds: dict[tuple[str, str], int] = defaultdict(int)
    for line in lines:
        key = (str(line["kind"]), str(line["server"]))
        rounds[key] += int(str(line["rounds"]))
        merged[key].extend(float(t) for t in line["recovery_seconds"])  # type: ignore[attr-defined]
    out = [f"{'kind':<26} {'server':<24} {'faults':>6} {'median s':>9} {'p95 s':>7} {'max s':>7}"]
    for (kind, server), times in sorted(merged.items()):
        ordered = sorted(times) or [0.0]
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        out.append(
            f"{kind:<26} {server:<24} {rounds[(kind, server)]:>6} "
            f"{statistics.median(ordered):>9.3f} {p95:>7.3f} {max(ordered):>7.3f}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    entries = [json.loads(x) for x in Path(sys.argv[1]).read_text().splitlines() if x.strip()]
    print(table(entries))
