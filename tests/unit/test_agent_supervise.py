"""The agent's auxiliary tasks (the DCS watch, the postmaster watch) never end the agent
(issue 10 B5): :func:`pgha.agent.lifecycle.keep_running` restarts them after any exception or
stray cancellation, with capped exponential backoff, and passes our own cancellation on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pgha.agent.lifecycle import Agent, keep_running
from pgha.core.model import HaSettings
from pgha.dcs.base import WatchEvent
from pgha.dcs.cache import PrefixCache
from pgha.dcs.memory import MemoryBackend, MemoryStore


@dataclass
class Sleeps:
    """An injected sleep: records the delays, lets other tasks run, takes no time; the
    fake clock ``t`` advances by each delay."""

    t: float = 0.0
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.t += delay
        await asyncio.sleep(0)

    def clock(self) -> float:
        return self.t


class FlakyStore:
    """A cluster store whose watch raises ``failures`` one after the other, then reports one
    change and waits forever."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0
        self.waiting = asyncio.Event()
        self.cache = PrefixCache(MemoryStore(MemoryBackend(), ttl=10.0, timeout=2.0),
                                 "/service/demo/")

    async def watch(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        yield WatchEvent(start_revision + 1, "/service/demo/leader")
        self.waiting.set()
        await asyncio.Event().wait()


def watching_agent(store: FlakyStore, changed: list[int]) -> Any:
    """What :meth:`Agent._watch_loop` uses of the agent."""
    observer = SimpleNamespace(first_view=asyncio.Event(), view=None, settings=HaSettings(),
                               heard=lambda at: None)
    observer.first_view.set()
    return SimpleNamespace(observer=observer, store=store, _quiet_keys=set(),
                           cycle=SimpleNamespace(dcs_changed=lambda: changed.append(1)))


async def test_a_dcs_watch_that_raises_is_restarted_with_growing_delays(
        caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore([RuntimeError("bug in the client library"),
                        RuntimeError("bug in the client library"), KeyError("revision"),
                        ValueError("x")])
    changed: list[int] = []
    agent = watching_agent(store, changed)
    sleeps = Sleeps()
    decision_loop_alive = asyncio.Event()

    async def sibling() -> None:  # stands for the decision loop in the agent's TaskGroup
        await store.waiting.wait()
        decision_loop_alive.set()

    with caplog.at_level(logging.ERROR, "pgha.agent"):
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(keep_running(lambda: Agent._watch_loop(agent), "dcs-watch",
                                                sleep=sleeps, clock=sleeps.clock))
            tg.create_task(sibling())
            await decision_loop_alive.wait()
            watch.cancel()  # the agent stops: our own cancellation is passed on
    assert watch.cancelled()
    assert store.calls == 5 and changed == [1]  # the fifth watch worked
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0]
    failures = [r for r in caplog.records if "dcs-watch task failed" in r.getMessage()]
    assert len(failures) == 4
    # a traceback for each new failure; the repeated one (same message) gets one line
    assert [r.exc_info is not None for r in failures] == [True, False, True, True]


async def test_backoff_is_capped_and_reset_after_a_healthy_run() -> None:
    sleeps = Sleeps()
    runs: list[float] = []

    async def task() -> None:
        runs.append(sleeps.t)
        if len(runs) == 9:
            sleeps.t += 60.0  # this run stayed up for a healthy minute before failing
        if len(runs) == 11:
            return  # the task ended by itself: the supervisor returns
        raise OSError("watch broke")

    await keep_running(task, "t", sleep=sleeps, clock=sleeps.clock)
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 0.5, 1.0]


async def test_a_stray_cancellation_of_the_task_restarts_it() -> None:
    sleeps = Sleeps()
    started: list[asyncio.Task[Any]] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def task() -> None:
        current = asyncio.current_task()
        assert current is not None
        started.append(current)
        if len(started) == 2:
            second.set()
            return
        first.set()
        await asyncio.Event().wait()

    supervisor = asyncio.create_task(keep_running(task, "t", sleep=sleeps, clock=sleeps.clock))
    await first.wait()
    started[0].cancel()  # e.g. gRPC cancelling a call in flight: not our cancellation
    await supervisor
    assert second.is_set() and sleeps.delays == [0.5]


async def test_a_postmaster_watch_that_raises_is_restarted() -> None:
    sleeps = Sleeps()
    probes: list[int] = []
    fourth_run = asyncio.Event()

    def is_running() -> bool:
        probes.append(1)
        if len(probes) <= 2:
            raise KeyError("pid")
        if len(probes) == 3:
            raise asyncio.CancelledError  # ends the third run as if cancelled from outside
        fourth_run.set()
        return False

    agent: Any = SimpleNamespace(observer=SimpleNamespace(pg_started=asyncio.Event()),
                                 pg=SimpleNamespace(is_running=is_running))
    supervisor = asyncio.create_task(keep_running(lambda: Agent._postmaster_watch(agent),
                                                  "postmaster-watch", sleep=sleeps,
                                                  clock=sleeps.clock))
    await fourth_run.wait()
    supervisor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervisor
    assert sleeps.delays == [0.5, 1.0, 2.0]


async def test_a_dcs_watch_failing_with_dcs_errors_backs_off_until_an_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that keeps refusing the watch (DCS down) is asked again with growing delays,
    not every half second; the first event resets the delay; every reopening wakes the
    decision loop once (changes may have been missed meanwhile)."""
    from pgha.agent import lifecycle
    from pgha.dcs.base import DCSError
    store = FlakyStore([DCSError("connection refused")] * 6)
    changed: list[int] = []
    sleeps = Sleeps()
    monkeypatch.setattr(lifecycle, "_watch_pause", sleeps)
    task = asyncio.create_task(Agent._watch_loop(watching_agent(store, changed)))
    await store.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert len(changed) == 6 + 1  # one look after each failure, then the event itself
