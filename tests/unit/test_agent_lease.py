"""The lease rules that hold when ``decide`` cannot run (:mod:`pgha.core.lease`) and the lease
keeper's busy windows (:class:`pgha.agent.lease.LeaseKeeper`): issue 10, B4 and B9."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pgha.agent.clock import Clock
from pgha.agent.executor import Executor
from pgha.agent.failsafe import Failsafe
from pgha.agent.lease import LeaseKeeper
from pgha.agent.retry import RetryGate
from pgha.core import lease as rules
from pgha.core.actions import (
    Action,
    BootstrapCluster,
    CloneReplica,
    Reinitialize,
    Rejoin,
    RestartPostgres,
    StartPostgres,
    StopMode,
    Upstream,
)
from pgha.core.lease import keepalive_interval
from pgha.core.model import HaSettings, PgState, safety_margin_for
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from pgha.pg.errors import PgError

UNTIL = 100.0


@pytest.mark.parametrize(("decided_at", "now", "overdue"), [
    (UNTIL - 0.4, UNTIL, True),  # the last decision came just before the lease ran out
    (UNTIL - 0.4, UNTIL + 3.0, True),
    (UNTIL - 0.01, UNTIL, True),
    (float("-inf"), UNTIL, True),  # no decision at all yet
    (UNTIL, UNTIL, False),  # a decision saw the lease as run out: it demotes
    (UNTIL + 0.2, UNTIL + 1.0, False),
    (UNTIL - 5.0, UNTIL - 0.01, False),  # the lease has not run out
])
def test_decision_overdue_needs_a_decision_taken_after_the_lease_ran_out(
        decided_at: float, now: float, overdue: bool) -> None:
    assert rules.decision_overdue(UNTIL, decided_at, now) is overdue


def test_decision_overdue_without_a_lease_is_never_late() -> None:
    assert not rules.decision_overdue(None, float("-inf"), UNTIL)


# ---------------------------------------------------------------------------- busy windows
# Issue 10 B4: a long action keeps the keep-alive going while it runs, and not a moment
# longer, however it ends.

SETTINGS = HaSettings(ttl=10.0, loop_wait=1.0, retry_timeout=2.0)  # loop alive for 7 s
STEP = 8.0  # each PostgreSQL call of the fake takes longer than that (on the fake clock)
PG1 = Upstream("pg1", "postgres://pg1:5432/postgres")


@dataclass
class World:
    t: float = 1000.0

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.t, wall=lambda: 1_700_000_000.0 + self.t)


def alive(keeper: LeaseKeeper) -> bool:
    """The keep-alive's gate, as :meth:`LeaseKeeper.keepalive_round` asks it."""
    return rules.loop_is_alive(SETTINGS, keeper.heartbeat, keeper.busy_until,
                               keeper.clock.monotonic())


@dataclass
class SlowPg:
    """The PostgreSQL calls of the long actions and of a bootstrap. Each takes ``STEP``
    seconds of the fake clock and records whether the keep-alive's gate was open while it
    ran; ``clone_outcome`` is what the clone returns (or raises); with ``hold`` set, the
    clone waits for it (after setting ``entered``)."""

    world: World
    keeper: LeaseKeeper | None = None
    clone_outcome: bool | BaseException = True
    hold: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    alive_during: list[bool] = field(default_factory=list)
    settings: Any = None

    def _takes_time(self) -> None:
        self.world.t += STEP
        assert self.keeper is not None
        self.alive_during.append(alive(self.keeper))

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self._takes_time()
        return True

    async def wipe(self) -> None:
        self._takes_time()

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        self._takes_time()
        return True

    async def clone(self, source: Upstream | None, *, basebackup_only: bool = False,
                    replace_data: bool = False) -> bool:
        self._takes_time()
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.clone_outcome, BaseException):
            raise self.clone_outcome
        return self.clone_outcome

    async def rejoin(self, leader: Upstream, use_pg_rewind: bool) -> bool:
        self._takes_time()
        return True

    async def initdb(self) -> bool:
        self._takes_time()
        return True

    async def create_roles(self) -> None:
        self._takes_time()

    async def observe(self) -> PgState:
        return PgState(sysid="7000")


class Sink:
    async def pg_changed(self) -> None: ...

    async def busy(self, what: str) -> None: ...


@dataclass
class Rig:
    world: World
    pg: SlowPg
    keeper: LeaseKeeper
    executor: Executor
    store: ClusterStore


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    world = World()
    clock = world.clock()
    kv = MemoryStore(MemoryBackend(clock=clock.monotonic), ttl=SETTINGS.ttl, timeout=1.0)
    store = ClusterStore(kv, "/service/", "demo", "pg3")
    pg = SlowPg(world)
    keeper = LeaseKeeper(kv, store, pg, Failsafe("pg3", clock=clock),  # type: ignore[arg-type]
                         SimpleNamespace(), settings=lambda: SETTINGS,  # type: ignore[arg-type]
                         view=lambda: None, wake=asyncio.Event(), clock=clock)
    pg.keeper = keeper
    executor = Executor(pg, store, lease=keeper, status=Sink(),  # type: ignore[arg-type]
                        bootstrap_config={"ttl": SETTINGS.ttl}, post_bootstrap=None,
                        pg_ctl_timeout=5.0, dcs_timeout=1.0, retry=RetryGate(clock))
    async with kv:
        keeper.beat()  # the cycle that decided the action
        yield Rig(world, pg, keeper, executor, store)


def no_window_left(keeper: LeaseKeeper) -> bool:
    return keeper.busy_until == 0.0 and not alive(keeper)


@pytest.mark.parametrize("action", [
    Reinitialize(PG1, PG1), CloneReplica(PG1), Rejoin(PG1, True), StartPostgres("replica", PG1),
    RestartPostgres("replica", PG1),
], ids=lambda a: type(a).__name__)
async def test_the_busy_window_ends_with_a_long_action(rig: Rig, action: Action) -> None:
    assert await rig.executor.run((action,))
    assert rig.pg.alive_during and all(rig.pg.alive_during)  # busy, not stuck, meanwhile
    assert no_window_left(rig.keeper)  # as if no action had run: the heartbeat decides


@pytest.mark.parametrize("outcome", [False, PgError("pg_basebackup: exit 1")],
                         ids=["returns-false", "raises"])
@pytest.mark.parametrize("action", [Reinitialize(PG1, PG1), CloneReplica(PG1)],
                         ids=lambda a: type(a).__name__)
async def test_the_busy_window_ends_with_a_failed_long_action(
        rig: Rig, action: Action, outcome: bool | BaseException) -> None:
    rig.pg.clone_outcome = outcome
    assert not await rig.executor.run((action,))
    assert rig.pg.alive_during and all(rig.pg.alive_during)
    assert no_window_left(rig.keeper)


@pytest.mark.parametrize("action", [Reinitialize(PG1, PG1), CloneReplica(PG1)],
                         ids=lambda a: type(a).__name__)
async def test_the_busy_window_ends_with_a_cancelled_long_action(rig: Rig,
                                                                 action: Action) -> None:
    rig.pg.hold = asyncio.Event()
    run = asyncio.create_task(rig.executor.run((action,)))
    await rig.pg.entered.wait()
    assert alive(rig.keeper)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert no_window_left(rig.keeper)


async def test_the_busy_window_ends_with_a_bootstrap(rig: Rig) -> None:
    assert await rig.executor.run((BootstrapCluster(),))
    assert rig.pg.alive_during and all(rig.pg.alive_during)
    assert no_window_left(rig.keeper)


async def test_busy_windows_end_with_their_blocks_however_they_exit(rig: Rig) -> None:
    keeper, world = rig.keeper, rig.world
    with pytest.raises(TimeoutError):
        with keeper.busy(3600):
            async with asyncio.timeout(0):
                await asyncio.Event().wait()
    assert keeper.busy_until == 0.0
    with keeper.busy(100):
        with keeper.busy(math.inf):
            assert keeper.busy_until == math.inf
        assert keeper.busy_until == world.t + 100  # the outer window is still open
        world.t += 101
        assert not alive(keeper)  # and it lasts no longer than announced
    assert keeper.busy_until == 0.0


# --------------------------------------------------------------------------- keep-alive cadence


@pytest.mark.parametrize("ttl,retry", [(20.0, 3.0), (20.0, 5.0), (30.0, 10.0), (10.0, 3.0),
                                       (5.0, 1.0), (5.0, 2.0)])
def test_keepalive_interval_fits_the_lease_deadline(ttl: float, retry: float) -> None:
    interval = keepalive_interval(ttl, retry)
    margin = safety_margin_for(ttl)
    assert 0.25 <= interval <= ttl / 4
    # an attempt sent one interval after a success is answered or abandoned before the
    # lease that success confirmed runs out (whenever the bound can be met at all)
    if ttl - margin - retry >= margin / 2:
        assert interval + retry < ttl - margin


def test_keepalive_interval_is_a_quarter_ttl_for_the_usual_settings() -> None:
    assert keepalive_interval(20.0, 3.0) == 5.0
    assert keepalive_interval(30.0, 10.0) == 7.5
