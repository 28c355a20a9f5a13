"""The fleet benchmark's perf report by Python function (bench.bench_fleet.innermost_python),
on ``perf script -F ip,sym`` text shaped as perf prints it for CPython 3.12's trampolines."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from bench.bench_fleet import innermost_python

REPO = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_path("stdlib")
SITE = sysconfig.get_path("purelib")

SCRIPT = f"""
        ffffffff81f3e8e5 __netif_rx
        ffffffff81e7d426 loopback_xmit
                  5c0d1e sock_connect_ex
            7f16fb862370 py::connect:{REPO}/flowsd/meters/transport.py
            7f16fb862111 py::MeterLink._connection:{REPO}/flowsd/meters/exchange.py

                  10e772 _PyEval_EvalFrameDefault
            7f16fb861d4b py::MeterConnection._ready:{REPO}/flowsd/meters/transport.py

                  a78a8 __pyx_f_6uvloop_4loop_4Loop__remove_reader
            7f16fb861d40 py::Connection._do_execute:{SITE}/asyncpg/connection.py

                  27fda2 epoll_wait
                  62fd0 uvloop_run

            7f16fb862000 py::Runner.run:{STDLIB}/asyncio/runners.py

            7f16fb862001 py::__create_fn__.<locals>.__init__:<string>
"""


def test_each_sample_counts_for_its_innermost_python_function_with_short_paths() -> None:
    samples, counts = innermost_python(SCRIPT)
    assert samples == 6
    assert counts == {
        "connect:flowsd/meters/transport.py": 1,  # the kernel below it is its cost
        "MeterConnection._ready:flowsd/meters/transport.py": 1,
        "Connection._do_execute:asyncpg/connection.py": 1,
        "(no Python frame)": 1,
        "Runner.run:stdlib/asyncio/runners.py": 1,
        "__create_fn__.<locals>.__init__:<string>": 1,
    }


def test_no_samples_gives_an_empty_report() -> None:
    assert innermost_python("") == (0, {})
