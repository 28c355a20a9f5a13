"""The event loop a flowsd process runs on: uvloop unless ``[daemon] event_loop`` says asyncio.

uvloop runs the same asyncio code on libuv, in C: the loop's own bookkeeping (ready handles,
the timer heap, selector callbacks, socket reads and writes) is what the daemon spends most
of its CPU on between a meter's request and its answer, and asyncpg's protocol is written
for it. The standard loop stays selectable, for asyncio's debug mode and for a platform
without uvloop; a uvloop that cannot be imported falls back to it with a warning (the daemon
still runs, only slower), which :func:`loop_in_use` reports.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import structlog

from flowsd.config import EventLoop

log = structlog.get_logger("flowsd.ops")

T = TypeVar("T")


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop for ``choice`` (None: the standard loop), for ``asyncio.Runner``."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        log.warning("uvloop not available; running on the standard asyncio loop", error=str(exc))
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Callable[[], Awaitable[T]], choice: EventLoop) -> T:
    """``anyio.run(main)`` on the chosen loop."""
    factory = loop_factory(choice)
    options: dict[str, Any] = {} if factory is None else {"loop_factory": factory}
    return anyio.run(main, backend_options=options)


def loop_in_use() -> str:
    """``uvloop`` or ``asyncio``: the running loop's kind, for the start-up log line."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
