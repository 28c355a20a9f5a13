"""Restarting the daemon's components when they fail for a reason nobody planned for.

Each long-running part of the daemon (the appender, every projector, the LISTEN loop, the
meter list, the fleet supervisor, the session-state writer, the management endpoint, ...) runs
under :meth:`Supervisor.run`. Expected trouble never reaches it: a database outage is retried
inside each part (:mod:`flowsd.db.errors`), a meter's faults stay in its session. What does
reach it is a bug or an error nobody classified; it is logged with its traceback, counted
(:meth:`Supervisor.statistics`, exported as ``flowsd_component_restarts_total{component}``),
and the component is started again after the shared backoff (:mod:`flowsd.backoff`).

A component that fails ``limit`` times within ``window_seconds`` has given up: the supervisor
counts it (``flowsd_component_give_ups_total{component}``) and calls ``on_give_up`` (the
daemon then stops the way SIGTERM does: the queued events are committed or spilled, and it
exits with status 1, so systemd restarts it). Without ``on_give_up`` it raises
:class:`ComponentGaveUpError`, and so does a component that gives up before it ever reported
itself started. A :class:`~flowsd.errors.UserError` (a mistake restarting cannot fix, such as
a spill directory another flowsd holds) is not restarted: it goes to ``on_give_up`` at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.abc
import structlog
from prometheus_client.metrics_core import Metric

from flowsd.backoff import Backoff, Retry
from flowsd.errors import UserError
from flowsd.ops.metrics import counter

log = structlog.get_logger("flowsd.supervision")

# A component's body: anyio style, reporting through task_status once it is running.
Target = Callable[..., Awaitable[Any]]


class ComponentGaveUpError(Exception):
    """A component kept failing past the restart limit."""

    def __init__(self, component: str, failures: int, cause: BaseException) -> None:
        super().__init__(
            f"component {component} failed {failures} times within the restart window; "
            f"last error: {_describe(cause)}"
        )
        self.component = component
        self.failures = failures
        self.cause = cause


@dataclass(frozen=True)
class RestartPolicy:
    """``limit`` failures within ``window_seconds`` and the component has given up."""

    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    limit: int = 10
    window_seconds: float = 600.0


@dataclass(frozen=True)
class ComponentStatistics:
    running: bool = False
    restarts: int = 0
    gave_up: bool = False
    give_ups: int = 0  # a component run again after it gave up may give up again
    last_error: str | None = None
    last_failure_at: float | None = None  # monotonic


class _StartedOnce:
    """Passes the first ``started()`` on to the real task status, ignores the others."""

    def __init__(self, inner: anyio.abc.TaskStatus[Any]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: object = None) -> None:
        if not self.done:
            self.done = True
            self._inner.started(value)


class Supervisor:
    """Runs components, restarting each after unexpected failures (see the module doc)."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        *,
        on_give_up: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self._on_give_up = on_give_up
        self._components: dict[str, ComponentStatistics] = {}

    async def run(
        self,
        name: str,
        target: Target,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``target(task_status=...)`` until it returns, restarting it when it raises.

        Cancellation is never a failure. ``task_status`` is reported started by the first
        run that reports it.
        """
        self._components.setdefault(name, ComponentStatistics())
        status = _StartedOnce(task_status)
        failures: deque[float] = deque()
        retry = Retry(self.policy.backoff)
        while True:
            started_at = time.monotonic()
            self._note(name, running=True)
            try:
                await target(task_status=status)
                return
            except UserError as exc:
                # A mistake restarting cannot fix (e.g. another flowsd holds the spill
                # directory): the daemon stops at once with it.
                log.error("component cannot run", component=name, error=str(exc))
                self._note(name, gave_up=True)
                if self._on_give_up is None or not status.done:
                    raise
                self._on_give_up(exc)
                return
            except Exception as exc:
                now = time.monotonic()
                self._note(name, running=False, last_error=_describe(exc), last_failure_at=now)
                failures.append(now)
                while failures and failures[0] < now - self.policy.window_seconds:
                    failures.popleft()
                if now - started_at > self.policy.window_seconds:
                    retry.reset()  # it ran well for a while: start the backoff over
                if len(failures) >= self.policy.limit:
                    self._give_up(name, exc, len(failures), started=status.done)
                    return
                delay = retry.next_delay()
                self._note(name, restarts=self._components[name].restarts + 1)
                log.exception(
                    "component failed unexpectedly; restarting",
                    component=name,
                    failures_in_window=len(failures),
                    limit=self.policy.limit,
                    restart_in_seconds=round(delay, 3),
                )
                await anyio.sleep(delay)
            finally:
                self._note(name, running=False)

    def _give_up(
        self,
        name: str,
        exc: BaseException,
        failures: int,
        *,
        started: bool,
    ) -> None:
        self._note(name, gave_up=True, give_ups=self._components[name].give_ups + 1)
        error = ComponentGaveUpError(name, failures, exc)
        log.error(
            "component keeps failing; giving up",
            component=name,
            failures=failures,
            window_seconds=self.policy.window_seconds,
            exc_info=exc,
        )
        if self._on_give_up is None or not started:
            raise error from exc
        self._on_give_up(error)

    def alive(self) -> bool:
        """No component has given up."""
        return not any(s.gave_up for s in self._components.values())

    def statistics(self) -> dict[str, ComponentStatistics]:
        """Each component's, by name."""
        return dict(self._components)

    def _note(self, name: str, **changes: Any) -> None:
        self._components[name] = replace(self._components[name], **changes)


def component_families(stats: dict[str, ComponentStatistics]) -> Iterator[Metric]:
    """Restarts and give-ups of every component that has run."""
    yield counter(
        "flowsd_component_restarts",
        "Restarts of a daemon component after it failed unexpectedly (logged with a traceback).",
        {(name,): s.restarts for name, s in stats.items()},
        ["component"],
    )
    yield counter(
        "flowsd_component_give_ups",
        "Components that failed too often within the restart window; the daemon then stops.",
        {(name,): s.give_ups for name, s in stats.items()},
        ["component"],
    )


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the error, looking through task groups that failed with one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
