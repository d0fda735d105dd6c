"""Deterministic discrete-event simulation of several members, through the agent's real parts.

Real: the decision core (``decide``, replaceable by a deliberately broken wrapper for mutation
tests), the executor (:class:`pgha.agent.executor.Executor`: action order, "the first failure
aborts the rest"), the DCS domain layer (:class:`pgha.dcs.store.ClusterStore`) over the memory
backend (one client, hence one session, per agent; sessions expire on the simulation's clock)
and the publisher of the member key. Simulated: each member's PostgreSQL
(:mod:`tests.support.fake_pg`), the clock, the network, the faults, and the agent's loop
around ``decide`` (a compact copy of :mod:`pgha.agent.cycle`: observe, decide, execute,
publish, sleep policy with its repeat guard) and its lease keeper (keep-alive every
``ttl / 4``; the lease counted from the send time).

Every coroutine runs on the event loop the :class:`Sim` owns, one ``run_until_complete`` per
call; nothing ever sleeps, so a run depends on the seed alone. Invariants are checked after
every event (:meth:`Sim.check_invariants`) and when PostgreSQL is started as primary or
promoted (:class:`~tests.support.fake_pg.FakeWorld` hooks); a violation raises
:class:`InvariantViolation`.

Synchronous replication (``sync_mode``): acknowledged commits are tracked and checked by
:class:`tests.sim.acked.AckedCommits`.

Between events (no coroutine pending) a Sim can be pickled or deep-copied: the copy continues
exactly as the original would (the exhaustive explorer, :mod:`tests.sim.explore`, branches
this way). A copy runs on an event loop shared by every copy in the process.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from pgha.agent.clock import Clock
from pgha.agent.cycle import progress_key
from pgha.agent.executor import Executor
from pgha.agent.publish import Publisher
from pgha.agent.retry import RetryGate
from pgha.core.decide import Decision, Reason, decide, needs_peer_statuses
from pgha.core.model import (
    ClusterView,
    HaSettings,
    LocalState,
    PgRole,
    Tags,
)
from pgha.core.status import AgentStatus
from pgha.core.switchover import request_for_leader
from pgha.dcs.base import DCSError
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from tests.sim import agent_parts, watchdog_device
from tests.sim.acked import AckedCommits
from tests.sim.agent_parts import (
    NAMESPACE,
    SCOPE,
    SimClusterStore,
    SimFence,
    SimKV,
    SimLease,
    SimMember,
    StatusSink,
    repeat_guard,
    sleep_time,
)
from tests.sim.consumer import SLOT_CONFIG, LogicalConsumer
from tests.sim.peers import note_view, peer_statuses
from tests.support.fake_pg import (
    FakePostgres,
    common_prefix,
    consistent,
)

T = TypeVar("T")
DecideFn = Callable[[ClusterView | None, LocalState, float], Decision]
FakeFactory = Callable[[str, Any], FakePostgres]

EPOCH = 946684800.0  # the simulation starts at 2000-01-01T00:00:00Z


class InvariantViolation(AssertionError):
    """A safety invariant did not hold (the message says which, when and where)."""


class Sim(AckedCommits):
    """A seeded run. ``step()`` processes one event. With ``faults`` a fault is injected every
    15-45 s (see :mod:`tests.sim.faults`); scenario scripts drive a Sim without them."""

    def __init__(self, seed: int, n: int = 3, ttl: float = 10.0, loop_wait: float = 2.0,
                 max_lag: int = 1_000_000, nofailover: int | None = None, *,
                 faults: bool = True, autostart: bool = True, decide_fn: DecideFn = decide,
                 fake: FakeFactory = FakePostgres, write_rate: float = 200_000,
                 lags: tuple[int, ...] = (0, 0, 0, 1000, 50_000, 3_000_000),
                 peer_loss: float = 0.05, strict_lock_session: bool = False,
                 sync_mode: str | None = None, strict: bool = False,
                 node_count: int = 1, stale_peer_positions: bool = False,
                 cdc: bool = False, watchdog: str = "lease",
                 fenced: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.now_ = 0.0
        self.settings = HaSettings(ttl=ttl, loop_wait=loop_wait, retry_timeout=2.0,
                                   maximum_lag_on_failover=max_lag, primary_start_timeout=5.0,
                                   use_pg_rewind=True, member_slots_ttl=60.0)
        self.config = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": 2.0,
                       "maximum_lag_on_failover": max_lag, "primary_start_timeout": 5.0,
                       "member_slots_ttl": 60.0, "postgresql": {"use_pg_rewind": True}}
        self.stale_peer_positions = stale_peer_positions
        self.consumer = LogicalConsumer() if cdc else None  # reads the permanent slot cdc
        if cdc:
            self.config["slots"] = SLOT_CONFIG
        if sync_mode is not None:
            self.config.update(synchronous_mode=sync_mode, synchronous_mode_strict=strict,
                               synchronous_node_count=node_count)
        self.init_acked(sync_mode)
        self.decide = decide_fn
        self.strict_lock_session = strict_lock_session
        self.watchdog_rule = watchdog_device.rule_for(watchdog, ttl)
        self.write_rate, self.lags, self.peer_loss = write_rate, lags, peer_loss
        self.loop = asyncio.new_event_loop()
        weakref.finalize(self, self.loop.close)
        self.backend = MemoryBackend(clock=self.now)
        self.views: dict[int, ClusterView] = {}
        self.operator = ClusterStore(MemoryStore(self.backend, ttl=ttl), NAMESPACE, SCOPE,
                                     "operator")
        self.members = {
            f"m{i}": SimMember(f"m{i}", fake(f"m{i}", self),
                               tags=Tags(nofailover=(i == nofailover)))
            for i in range(n)
        }
        for name, member in self.members.items():
            member.device = watchdog_device.NodeDevice(self, name)
            if fenced is not None:  # every member fences; member m<fenced> always fails to
                member.fence = SimFence(fails=name == f"m{fenced}")
        self.events: list[tuple[float, int, str, str]] = []
        self.seq = 0
        self.promotions: list[tuple[float, str, int]] = []
        self.switchovers = 0  # completed hand-overs
        self.unfenced: list[tuple[float, str]] = []  # see check_invariants
        self._unfenced_now: set[str] = set()  # exempt until no longer writable
        self.log: list[str] = []
        self.decisions: list[tuple[float, str, Decision]] = []
        self._watched = self._watch_signature()
        self.faults = None
        if faults:
            from tests.sim.faults import Faults
            self.faults = Faults(self)
            self.schedule(self.rng.uniform(20, 40), "*", "fault")
        if autostart:
            for name in self.members:
                self.start_agent(name, delay=self.rng.uniform(0, 0.5))

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the event loop (valid between events only)."""
        return {k: v for k, v in self.__dict__.items() if k != "loop"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.loop = agent_parts.copies_loop()

    # -- FakeWorld -------------------------------------------------------------------------
    def now(self) -> float:
        return self.now_

    def member_names(self) -> list[str]:
        return list(self.members)

    def pg(self, name: str) -> FakePostgres | None:
        m = self.members.get(name)
        return m.pg if m is not None else None

    def before_start_primary(self, pg: FakePostgres) -> None:
        if pg.fresh_initdb:
            return  # bootstrap: the initialize key was won; nobody else has this data
        if not self._holds_lease(self.members[pg.name]):
            self.violation(f"{pg.name} started as primary without the lock and a confirmed "
                           "lease")
        self._check_acked(pg, "started as primary", waived=False)

    def before_promote(self, pg: FakePostgres) -> None:
        if not self._holds_lease(self.members[pg.name]):
            self.violation(f"{pg.name} promoting without the lock and lease")

    def after_rejoin(self, pg: FakePostgres, leader: FakePostgres) -> None:
        if not consistent(pg.segments, leader.segments):
            self.violation(f"{pg.name} rejoined {leader.name} with diverged data (at "
                           f"{common_prefix(pg.segments, leader.segments)})")

    def after_promote(self, pg: FakePostgres, old_timeline: int) -> None:
        switch = pg.history[-1][1]
        request = self._key_json("failover")
        # an operator's failover to a named member with no leader named accepts the loss
        waived = (isinstance(request, dict) and not request.get("leader")
                  and request.get("member") == pg.name)
        status = self._key_json("status")
        optime = status.get("optime") if isinstance(status, dict) else None
        limit = self.settings.maximum_lag_on_failover
        if isinstance(optime, int) and not waived and optime - switch > limit:
            self.violation(f"{pg.name} promoted {optime - switch} bytes behind the last optime")
        self._check_acked(pg, "promoted", waived)
        if self.consumer is not None and (problem := self.consumer.check_promoted(pg)):
            self.violation(problem)
        self.promotions.append((self.now_, pg.name, pg.timeline))

    # -- DCS inspection --------------------------------------------------------------------
    def _key(self, name: str) -> bytes | None:
        return self.backend.dump().get(f"{NAMESPACE}/{SCOPE}/{name}")

    def _key_json(self, name: str) -> Any:
        raw = self._key(name)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    @property
    def leader(self) -> str | None:
        """The name in the leader key, None when there is none."""
        raw = self._key("leader")
        return raw.decode() if raw else None

    @property
    def initialize(self) -> str | None:
        raw = self._key("initialize")
        return None if raw is None else raw.decode()

    def _holds_lease(self, m: SimMember) -> bool:
        """The leader key names ``m`` and its lease is confirmed; with ``strict_lock_session``
        the key must also be bound to ``m``'s current session (DESIGN.md safety rule 7)."""
        if not (self.leader == m.name and m.lease_deadline is not None
                and m.lease_deadline > self.now_):
            return False
        if not self.strict_lock_session:
            return True
        entry = self.backend._data.get(f"{NAMESPACE}/{SCOPE}/leader")  # no public accessor
        return entry is not None and m.kv is not None and str(entry.session) == m.kv.session_id

    def _watch_signature(self) -> tuple[bytes | None, ...]:
        return (self._key("initialize"), self._key("leader"), self._key("failover"))

    # -- event queue -----------------------------------------------------------------------
    def schedule(self, delay: float, who: str, kind: str) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now_ + delay, self.seq, who, kind))

    def run(self, until: float) -> None:
        """Process events up to ``until`` (the agents' log lines are silenced meanwhile)."""
        logger = logging.getLogger("pgha")
        level = logger.level
        logger.setLevel(logging.CRITICAL + 1)
        try:
            while self.events and self.events[0][0] <= until:
                self.step()
        finally:
            logger.setLevel(level)
        self.advance_wal(until - self.now_)
        self.now_ = max(self.now_, until)

    def step(self) -> None:
        """Process the next event."""
        t, _, who, kind = heapq.heappop(self.events)
        self.advance_wal(t - self.now_)
        self.now_ = t
        if self.backend.expire_sessions():
            self.wake_all()
        name, _, gen = who.partition("#")
        m = self.members.get(name)
        if kind == "fault" and self.faults is not None:
            self.faults.inject()
            self.schedule(self.rng.uniform(15, 45), "*", "fault")
        elif m is not None and m.agent_alive and gen == str(m.generation) \
                and kind.startswith("cycle:"):
            if kind == f"cycle:{m.cycle_token}":
                m.next_cycle = None
                self.cycle(m)
        elif m is not None and m.agent_alive and gen == str(m.generation) \
                and kind == "keepalive":
            self.keepalive(m)
        elif m is not None and kind == "restart_agent" and not m.agent_alive:
            self.start_agent(name, delay=0.1)
        elif m is not None and kind == "watchdog":
            watchdog_device.reset_if_due(self, m)
        elif m is not None and kind == "heal":
            m.partitioned = m.pg.isolated = False
        if self._watch_signature() != self._watched:
            self.wake_all()
        self.check_invariants()

    def schedule_agent(self, delay: float, m: SimMember, kind: str) -> None:
        """An event for the current incarnation of ``m``'s agent. A ``cycle`` cuts the
        pending sleep short (like the wake event of the real loop) or is dropped when a cycle
        is due sooner anyway."""
        if kind == "cycle":
            at = self.now_ + delay
            if m.next_cycle is not None and m.next_cycle <= at:
                return
            m.cycle_token += 1
            m.next_cycle = at
            kind = f"cycle:{m.cycle_token}"
        self.schedule(delay, f"{m.name}#{m.generation}", kind)

    def wake_all(self) -> None:
        """The DCS watch: every live agent runs a cycle shortly after a change."""
        self._watched = self._watch_signature()
        for m in self.members.values():
            if m.agent_alive and not m.partitioned and not self.backend.fail:
                delay = self.rng.uniform(0.001, 0.2)
                self.schedule_agent(max(delay, m.guard_until - self.now_), m, "cycle")

    def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- agents ----------------------------------------------------------------------------
    def start_agent(self, name: str, delay: float = 0.0) -> None:
        """A (re)started agent process on a live node: a new DCS client (new session) and
        fresh agent state; PostgreSQL is adopted as it is."""
        m = self.members[name]
        m.pg.node_up = True
        m.generation += 1
        partitioned = m.partitioned  # the node's network, not the agent process
        m.kv = SimKV(self.backend, self.settings.ttl, self.now)
        m.kv.partitioned = partitioned
        m.store = SimClusterStore(m.kv, name, self.views)
        clock = Clock(monotonic=self.now, wall=self.wall_time)
        status = AgentStatus(name=name, scope=SCOPE, tags=m.tags, conn_url=m.pg.conn_url(),
                             api_url=f"http://{name}/patroni")
        m.publisher = Publisher(m.store, status, clock)
        m.lease = SimLease(m.store, m.kv, m.publisher, self.now)
        watchdog_device.attach(self, m)
        m.executor = Executor(m.pg, m.store, lease=m.lease, status=StatusSink(m.pg, m.publisher),
                              bootstrap_config=self.config, post_bootstrap=None,
                              pg_ctl_timeout=60.0, dcs_timeout=agent_parts.dcs_timeout,
                              retry=RetryGate(clock), hooks=m.fence)
        m.fence_failed_at = None
        m.agent_alive = True
        m.last_view, m.member_seen, m.last_decision, m.last_leader = None, {}, None, None
        m.known_members = {}
        m.restart_requested = m.reinit_requested = m.handover_failed = False
        m.next_cycle = None
        m.repeats, m.progress, m.guard_until = 0, None, 0.0
        m.pg.agent_restarted()
        self.schedule_agent(0.0, m, "keepalive")
        self.schedule_agent(delay, m, "cycle")

    def kill_agent_only(self, name: str) -> None:
        """SIGKILL of the agent alone: PostgreSQL runs on as it was (a primary keeps taking
        writes), the session lingers until it expires; the watchdog device's timer runs on."""
        m = self.members[name]
        m.agent_alive = False
        if m.device is not None:
            m.device.process_died()

    def kill_agent(self, name: str) -> None:
        """The node dies: the agent stops, PostgreSQL crashes, the session lingers until it
        expires."""
        m = self.members[name]
        m.agent_alive = False
        m.pg.crash()
        m.pg.node_up = False
        if m.device is not None:
            m.device.node_died()

    def clean_stop(self, name: str) -> None:
        """SIGTERM: one decision with ``shutting_down``, then the member key is deleted and
        the session closed (its keys vanish at once)."""
        m = self.members[name]
        assert m.store is not None and m.kv is not None
        self.cycle(m, shutting_down=True)
        try:
            self.run_async(m.store.delete_member(name))
        except DCSError:
            pass
        self.run_async(m.kv.close())
        if m.watchdog is not None:
            m.watchdog.disarm()
        m.agent_alive = False
        self.wake_all()

    def keepalive(self, m: SimMember) -> None:
        assert m.lease is not None
        self.run_async(m.lease.confirm())
        self.schedule_agent(self.settings.ttl / 4, m, "keepalive")

    def wall_time(self) -> float:
        """Epoch seconds: the simulation starts at 2000-01-01T00:00:00Z."""
        return EPOCH + self.now_

    # -- the decision loop (pgha.agent.cycle, compacted) ---------------------------------
    def cycle(self, m: SimMember, shutting_down: bool = False) -> None:
        """One observe-decide-execute-publish round of ``m``'s agent, then its next wake-up."""
        decision, ok = self.run_async(self._cycle(m, shutting_down))
        key = progress_key(m.name, m.last_view, m.pg.state(), decision, ok)
        m.repeats = m.repeats + 1 if key is not None and key == m.progress else 0
        m.progress = key
        m.guard_until = self.now_ + repeat_guard(self.settings, m.repeats)
        if not shutting_down:
            deadline = m.lease_deadline if m.pg.writable else None
            self.schedule_agent(sleep_time(self.settings, m.repeats, m.handover_failed,
                                           decision, ok, deadline, self.now_), m, "cycle")

    async def _cycle(self, m: SimMember, shutting_down: bool) -> tuple[Decision, bool]:
        assert m.store is not None and m.executor is not None and m.publisher is not None
        view: ClusterView | None
        try:
            view = await m.store.load()
            dcs_ok = True
            m.last_view = view
            note_view(m, view)
            for name in view.members:
                m.member_seen[name] = self.now_
        except DCSError:
            view, dcs_ok = m.last_view, False
        local = LocalState(
            name=m.name, tags=m.tags, pg=await m.pg.observe(), dcs_ok=dcs_ok,
            lease_deadline=m.lease_deadline, member_seen=dict(m.member_seen),
            shutting_down=shutting_down, wall_time=self.wall_time(),
            restart_requested=m.restart_requested, reinit_requested=m.reinit_requested,
            handover_failed=m.handover_failed, session_id=m.kv.session_id if m.kv else None,
            pre_promote_hook=m.fence is not None, pre_promote_failed=m.fence_failed_at
            is not None and self.now_ - m.fence_failed_at < self.settings.ttl)
        if view is not None and needs_peer_statuses(view, local):
            peers = peer_statuses(self, m, view)
            local = replace(local, peers=peers)
        decision = self.decide(view, local, self.now_)
        watchdog_device.before_actions(m, decision)
        m.restart_requested = m.reinit_requested = False  # answered by this cycle
        self.decisions.append((self.now_, m.name, decision))
        m.last_decision = decision
        ok = await m.executor.run(decision.actions)
        if m.executor.pre_promote_failed:
            m.fence_failed_at = self.now_
        if m.executor.failed_handover is not None:
            m.handover_failed = True
        elif view is not None and dcs_ok and request_for_leader(view.failover, m.name) is None:
            m.handover_failed = False
        if decision.reason is Reason.SWITCHOVER and ok:
            self.switchovers += 1
        m.publisher.publish(m.pg.state(), m.pg.details(), decision, view=view, dcs_ok=dcs_ok,
                            dcs_last_seen=None, tags=m.tags, pending_restart=False,
                            pending_restart_reason=None, scheduled_restart=None)
        watchdog_device.follow(self, m, m.pg.state(), shutting_down)
        if dcs_ok and not shutting_down:
            ok = await m.publisher.write_member_key(self.settings.loop_wait,
                                                    self.settings.retry_timeout) and ok
        return decision, ok

    # -- the simulated world ---------------------------------------------------------------
    def primary(self) -> SimMember | None:
        for m in self.members.values():
            if m.pg.writable:
                return m
        return None

    def advance_wal(self, dt: float) -> None:
        """Writes on the primary and streaming to replicas over ``dt`` seconds."""
        if dt <= 0:
            return
        prim = self.primary()
        if prim is not None:
            prim.pg.write(int(dt * self.rng.uniform(0, self.write_rate)))
            if self.consumer is not None:
                self.consumer.read(prim.pg)
        for m in self.members.values():
            up = self.pg(m.pg.upstream or "")
            if not (m.pg.running and m.pg.role is PgRole.REPLICA and up is not None
                    and up.running and up.node_up and m.pg.reaches(up)):
                continue
            m.pg.learn(up)  # connected, even when the transfer is stalled
            if m.pg.stalled_until <= self.now_:
                m.pg.receive(up, up.wal - self.rng.choice(self.lags))
        if self.sync_mode is not None:
            self._acknowledge(prim.pg if prim is not None else None, self.now_ + dt)

    # -- invariants ------------------------------------------------------------------------
    def violation(self, what: str) -> None:
        raise InvariantViolation(f"t={self.now_:.3f}: {what}\n" + "\n".join(self.log[-30:]))

    def check_invariants(self) -> None:
        """Never two writable primaries. (The other invariants are checked where they can
        break: start as primary, promotion, rejoin; see the FakeWorld hooks above.)

        Without a watchdog device (``watchdog="off"``) one case is beyond what software on the
        other nodes can fence, and is recorded in :attr:`unfenced` instead: a primary whose
        agent is dead while its node is cut off from every peer (its lease runs out, nobody
        can reach its server, no agent of its own demotes it). It stays exempt until it stops
        being writable. With a device (:mod:`tests.sim.watchdog_device`) there is no exemption:
        the device must reset that node before another member can promote."""
        writable = [m for m in self.members.values() if m.pg.writable]
        exempt = self._unfenced_now = {n for n in self._unfenced_now
                                       if self.members[n].pg.writable}
        for m in writable:
            if self.watchdog_rule == "off" and not m.agent_alive and m.pg.isolated \
                    and m.name not in exempt and len(writable) > 1:
                exempt.add(m.name)
                self.unfenced.append((self.now_, m.name))
                self.log.append(f"{self.now_:.2f} unfenced primary {m.name} (agent dead, "
                                "node isolated) beside another")
        if len([m for m in writable if m.name not in exempt]) > 1:
            self.violation(f"two writable primaries {[m.name for m in writable]}")

    def summary(self) -> dict[str, Any]:
        return {"promotions": len(self.promotions), "leader": self.leader,
                "switchovers": self.switchovers, "time": self.now_}
