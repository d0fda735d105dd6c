"""The agent's parts the simulation supplies itself: the DCS client with fault switches, the
memoised cluster store, the lease gate and the status sink the executor is given (and the
executor's DCS timeout, a module function so that a Sim stays picklable), the loop's timing
policy, and :class:`SimMember`, one member's node and agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pgha.agent.cycle import BACKING_OFF, REPEAT_GUARD, SYNC_RECHECK, changes_something
from pgha.agent.executor import Executor
from pgha.agent.publish import Publisher
from pgha.agent.watchdog import LeaderWatchdog
from pgha.core.decide import RACE_REFUSALS
from pgha.core.decision import Decision, Reason
from pgha.core.model import ClusterView, HaSettings, Member, Tags
from pgha.dcs.base import DCSError, SessionExpired
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore, parse_snapshot
from pgha.pg.hooks import HookResult, PgHooks
from tests.sim.watchdog_device import NodeDevice
from tests.support.fake_pg import FakePostgres

NAMESPACE, SCOPE = "/service", "sim"
DCS_TIMEOUT = 5.0
_copies_loop: list[asyncio.AbstractEventLoop] = []


def dcs_timeout() -> float:
    """The executor's limit of one DCS call (a module function: a Sim must stay picklable)."""
    return DCS_TIMEOUT


def repeat_guard(settings: HaSettings, repeats: int) -> float:
    """The real loop's repeat guard (pgha.agent.cycle.DecisionCycle.guard_time)."""
    if repeats == 0:
        return 0.0
    return min(settings.loop_wait, REPEAT_GUARD * 2 ** min(repeats - 1, 16))


def sleep_time(settings: HaSettings, repeats: int, handover_failed: bool, decision: Decision,
               ok: bool, lease_deadline: float | None, now: float) -> float:
    """The real loop's sleep policy (pgha.agent.cycle.DecisionCycle._sleep_time);
    ``lease_deadline`` only for a member whose PostgreSQL is writable."""
    timeout = settings.loop_wait
    if handover_failed:
        timeout = 0.01  # the failed hand-over wakes the loop at once
    elif not ok or (decision.reason in RACE_REFUSALS and decision.reason not in BACKING_OFF):
        timeout = min(timeout, 0.5)
    elif changes_something(decision):
        timeout = min(timeout, 0.2)
    elif decision.reason is Reason.SYNC_PENDING:
        timeout = min(timeout, SYNC_RECHECK)
    if not handover_failed:
        timeout = max(timeout, repeat_guard(settings, repeats))
    if lease_deadline is not None:
        timeout = min(timeout, max(0.05, lease_deadline - now))
    return timeout


def copies_loop() -> asyncio.AbstractEventLoop:
    """The event loop of every copied or unpickled Sim of this process: each of their calls
    runs to completion, so sharing it never interleaves two Sims."""
    if not _copies_loop:
        _copies_loop.append(asyncio.new_event_loop())
    return _copies_loop[0]


class SimKV(MemoryStore):
    """A member's DCS client: a memory store whose keep-alives can be broken while reads and
    writes still work (``keepalive_broken_until``); ``partitioned`` (inherited) makes every
    call fail with DCSError."""

    def __init__(self, backend: MemoryBackend, ttl: float, now: Callable[[], float]) -> None:
        super().__init__(backend, ttl=ttl, timeout=1.0)
        self.now = now
        self.keepalive_broken_until = 0.0

    async def keepalive(self) -> None:
        if self.keepalive_broken_until > self.now():
            raise DCSError("keep-alive lost (injected fault)")
        await super().keepalive()


class SimClusterStore(ClusterStore):
    """The real ClusterStore; ``load`` parses each store revision once per simulation (the
    snapshot at one revision is the same for every member, and parsing is pure)."""

    def __init__(self, kv: MemoryStore, name: str, cache: dict[int, ClusterView]) -> None:
        super().__init__(kv, NAMESPACE, SCOPE, name)
        self.parsed = cache

    async def load(self) -> ClusterView:
        snapshot = await self.kv.get_prefix(self.prefix)
        view = self.parsed.get(snapshot.revision)
        if view is None:
            if len(self.parsed) > 64:
                self.parsed.clear()
            view = self.parsed[snapshot.revision] = parse_snapshot(self.prefix, snapshot)
        return view


class SimLease:
    """The executor's LeaseGate and the agent's lease deadline (see pgha.agent.lease)."""

    def __init__(self, store: ClusterStore, kv: SimKV, publisher: Publisher,
                 now: Callable[[], float]) -> None:
        self.store, self.kv, self.publisher, self.now = store, kv, publisher, now
        self.deadline: float | None = None

    renewed: Callable[[float], None] | None = None  # feeds the watchdog (LeaseKeeper's)

    async def confirm(self) -> bool:
        sent = self.now()
        try:
            await self.store.keepalive()
        except SessionExpired:
            self.deadline = None
            self.publisher.forget_member_key()
            return False
        except DCSError:
            return False
        ttl = self.kv.session_ttl
        self.deadline = sent + ttl - HaSettings(ttl=ttl).safety_margin
        if self.renewed is not None:
            self.renewed(sent)
        return True

    def busy(self, seconds: float) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # the simulation has no keep-alive gate


@dataclass
class StatusSink:
    """The executor's PgStatusSink: republish PostgreSQL's state after each action."""

    pg: FakePostgres
    publisher: Publisher

    async def pg_changed(self) -> None:
        self.publisher.update_postgres(self.pg.state(), self.pg.details())

    async def busy(self, what: str) -> None:
        self.publisher.set_busy(what)


@dataclass
class SimFence(PgHooks):
    """A ``postgresql.pre_promote`` that runs no process: it exits 1 when ``fails``, else 0;
    ``runs`` counts its runs and ``failures`` its failures."""

    def __init__(self, fails: bool) -> None:
        super().__init__(lambda hook: "sim-fence" if hook == "pre_promote" else None,
                         timeout=lambda: 5.0)
        self.fails, self.runs, self.failures = fails, 0, 0

    async def run(self, hook: str) -> HookResult | None:
        if hook != "pre_promote":
            return None
        self.runs += 1
        self.failures += self.fails
        return HookResult(hook, 1 if self.fails else 0)


@dataclass
class SimMember:
    """One member: its node's PostgreSQL and, while ``agent_alive``, its agent's parts (built
    anew by :meth:`Sim.start_agent`, as a restarted agent process would)."""

    name: str
    pg: FakePostgres
    tags: Tags = field(default_factory=Tags)
    agent_alive: bool = False
    kv: SimKV | None = None
    store: ClusterStore | None = None
    publisher: Publisher | None = None
    lease: SimLease | None = None
    executor: Executor | None = None
    last_view: ClusterView | None = None
    member_seen: dict[str, float] = field(default_factory=dict)
    restart_requested: bool = False
    reinit_requested: bool = False
    handover_failed: bool = False
    last_decision: Decision | None = None
    generation: int = 0  # agent incarnation: events of a dead agent are dropped
    next_cycle: float | None = None  # when the pending cycle runs (one loop per agent)
    cycle_token: int = 0  # identifies the pending cycle event; older ones are dropped
    repeats: int = 0  # decisions repeated without progress (pgha.agent.cycle's repeat guard)
    progress: tuple[Any, ...] | None = None  # progress_key of the last cycle
    guard_until: float = 0.0  # DCS-change wake-ups wait until then
    last_leader: Member | None = None  # the leader's member key last seen (observer's)
    known_members: dict[str, Member] = field(default_factory=dict)  # every member key seen
    device: NodeDevice | None = None  # the node's watchdog device (tests.sim.watchdog_device)
    fence: PgHooks | None = None  # its postgresql.pre_promote (SimFence), None: none set
    fence_failed_at: float | None = None  # when its pre_promote last failed (the agent's)
    watchdog: LeaderWatchdog | None = None  # the agent's hold on it

    def session_ttl(self) -> float:
        """The TTL of the agent's DCS session (what the watchdog's timeout is counted from)."""
        assert self.kv is not None
        return self.kv.session_ttl

    @property
    def partitioned(self) -> bool:
        return self.kv is not None and self.kv.partitioned

    @partitioned.setter
    def partitioned(self, value: bool) -> None:
        if self.kv is not None:
            self.kv.partitioned = value

    @property
    def lease_deadline(self) -> float | None:
        return self.lease.deadline if self.lease is not None else None
