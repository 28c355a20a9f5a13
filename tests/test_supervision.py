"""The component supervisor: restarts with backoff, cancellation is not a failure, give-up
past the limit (reported, or raised when the component never started)."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from flowsd.backoff import Backoff
from flowsd.errors import UserError
from flowsd.supervision import ComponentGaveUpError, RestartPolicy, Supervisor

FAST = RestartPolicy(backoff=Backoff(0.01, 0.02), limit=4, window_seconds=60.0)


async def test_a_failing_component_is_restarted_until_it_runs() -> None:
    runs: list[int] = []
    supervisor = Supervisor(FAST, on_give_up=lambda exc: pytest.fail(str(exc)))

    async def flaky(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise KeyError("a bug")
        task_status.started()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, "flaky", flaky)
    stats = supervisor.statistics()["flaky"]
    assert runs == [0, 1, 2] and stats.restarts == 2 and not stats.gave_up
    assert stats.last_error == "KeyError: 'a bug'"
    assert supervisor.alive()


async def test_past_the_limit_the_component_gives_up_and_is_reported() -> None:
    reported: list[BaseException] = []
    supervisor = Supervisor(FAST, on_give_up=reported.append)

    async def broken(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        raise RuntimeError("always")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, "broken", broken)
    assert len(reported) == 1 and isinstance(reported[0], ComponentGaveUpError)
    assert reported[0].component == "broken" and reported[0].failures == FAST.limit
    assert not supervisor.alive()
    assert supervisor.statistics()["broken"].restarts == FAST.limit - 1


async def test_giving_up_before_ever_starting_is_raised() -> None:
    supervisor = Supervisor(FAST, on_give_up=lambda exc: pytest.fail("not reported"))

    async def never(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise RuntimeError("cannot start")

    async with anyio.create_task_group() as tg:
        with pytest.raises(ComponentGaveUpError, match="failed 4 times"):
            await tg.start(supervisor.run, "never", never)


async def test_a_user_error_is_fatal_at_once() -> None:
    reported: list[BaseException] = []
    supervisor = Supervisor(FAST, on_give_up=reported.append)
    runs = 0

    async def misconfigured(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        raise UserError("spill directory in use")

    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run, "appender", misconfigured)
    assert runs == 1 and [str(e) for e in reported] == ["spill directory in use"]


async def test_cancellation_is_not_a_failure() -> None:
    supervisor = Supervisor(FAST)

    async def forever(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run, "forever", forever)
        tg.cancel_scope.cancel()
    assert supervisor.statistics()["forever"].restarts == 0 and supervisor.alive()
