"""Deterministic discrete-event simulation of several members driven by the real decision core.

Only ``pgha.core.decide`` is real. The store (sessions with TTL, atomic create, revisions), each
member's PostgreSQL, the clock, the network and the faults are simulated here, so thousands of
seeded runs finish in seconds. Every action is applied the way the executor contract in
``pgha.core.actions`` says, including "the first failing action aborts the rest".

Invariants are checked after every event (see :meth:`Sim.check_invariants`).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    CloneReplica,
    Demote,
    Follow,
    HandOver,
    Promote,
    PublishStatus,
    Reinitialize,
    Rejoin,
    ReleaseLeader,
    RestartPostgres,
    StartPostgres,
    StopPostgres,
    SyncSlots,
    WriteInitialize,
)
from pgha.core.decide import decide, needs_peer_statuses
from pgha.core.model import (
    ClusterView,
    ControlState,
    DataState,
    HaSettings,
    HistoryEntry,
    Leader,
    LocalState,
    Member,
    PeerStatus,
    PgRole,
    PgState,
    Tags,
)


class InvariantViolation(AssertionError):
    pass


@dataclass
class SimStore:
    """In-memory DCS: ephemeral keys die with their owner's session ``ttl`` after the last
    keep-alive the store received."""

    ttl: float
    initialize: str | None = None
    leader: str | None = None
    leader_rev: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    optime: int | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    sessions: dict[str, float] = field(default_factory=dict)  # owner -> expiry
    failover: dict[str, Any] | None = None
    revision: int = 1

    def bump(self) -> None:
        self.revision += 1

    def expire(self, now: float) -> bool:
        dead = [o for o, exp in self.sessions.items() if exp <= now]
        for owner in dead:
            del self.sessions[owner]
            self.members.pop(owner, None)
            if self.leader == owner:
                self.leader = None
            self.bump()
        return bool(dead)

    def view(self, settings: HaSettings) -> ClusterView:
        return ClusterView(
            initialize=self.initialize,
            settings=settings,
            config={},
            leader=Leader(self.leader, self.leader_rev) if self.leader else None,
            members=dict(self.members),
            optime=self.optime,
            history=tuple(self.history),
            failover=dict(self.failover) if self.failover is not None else None,
            revision=self.revision,
        )


@dataclass
class SimPg:
    data: DataState = DataState.EMPTY
    running: bool = False
    role: PgRole | None = None
    timeline: int = 1
    wal: int = 0
    control: ControlState = ControlState.UNKNOWN
    upstream: str | None = None
    down_since: float | None = None
    sysid: str | None = None

    def state(self) -> PgState:
        return PgState(
            data=self.data,
            running=self.running,
            accepting=self.running,
            role=self.role if self.running else None,
            sysid=self.sysid,
            timeline=self.timeline if self.data is DataState.VALID else None,
            wal_position=self.wal if self.data is DataState.VALID else None,
            control_state=ControlState.UNKNOWN if self.running else self.control,
            upstream=self.upstream if self.running else None,
            down_since=self.down_since,
        )

    def stop(self, now: float, clean: bool) -> None:
        if self.running:
            if self.role is PgRole.PRIMARY:
                self.control = ControlState.SHUT_DOWN if clean else ControlState.IN_PRODUCTION
            else:
                self.control = (ControlState.SHUT_DOWN_IN_RECOVERY if clean
                                else ControlState.IN_ARCHIVE_RECOVERY)
        self.running = False
        self.role = None
        self.upstream = None
        self.down_since = now


@dataclass
class SimMember:
    name: str
    tags: Tags = field(default_factory=Tags)
    pg: SimPg = field(default_factory=SimPg)
    agent_alive: bool = True
    partitioned: bool = False  # cannot reach the DCS
    lease_deadline: float | None = None
    last_view: ClusterView | None = None
    member_seen: dict[str, float] = field(default_factory=dict)
    stalled_until: float = 0.0  # replication from upstream paused (slow network) until then
    keepalive_broken_until: float = 0.0  # keep-alives fail while reads still work
    restart_requested: bool = False
    reinit_requested: bool = False


class Sim:
    """A seeded run. ``step()`` processes one event; faults are scheduled randomly."""

    def __init__(self, seed: int, n: int = 3, ttl: float = 10.0, loop_wait: float = 2.0,
                 max_lag: int = 1_000_000, nofailover: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.settings = HaSettings(ttl=ttl, loop_wait=loop_wait, retry_timeout=2.0,
                                   maximum_lag_on_failover=max_lag, primary_start_timeout=5.0,
                                   use_pg_rewind=True, member_slots_ttl=60.0)
        self.store = SimStore(ttl=ttl)
        self.members = {
            f"m{i}": SimMember(f"m{i}", tags=Tags(nofailover=(i == nofailover)))
            for i in range(n)
        }
        self.events: list[tuple[float, int, str, str]] = []
        self.seq = 0
        self.promotions: list[tuple[float, str, int]] = []
        self.switchovers = 0  # completed hand-overs
        self.log: list[str] = []
        for name in self.members:
            self.schedule(self.rng.uniform(0, 0.5), name, "cycle")
            self.schedule(0.0, name, "keepalive")
        self.schedule(self.rng.uniform(20, 40), "*", "fault")

    # -- event queue ---------------------------------------------------------------------
    def schedule(self, delay: float, who: str, kind: str) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now + delay, self.seq, who, kind))

    def run(self, until: float) -> None:
        while self.events and self.events[0][0] <= until:
            self.step()

    def step(self) -> None:
        t, _, who, kind = heapq.heappop(self.events)
        self.advance_wal(t - self.now)
        self.now = t
        if self.store.expire(self.now):
            self.wake_all()
        if kind == "fault":
            self.inject_fault()
            self.schedule(self.rng.uniform(15, 45), "*", "fault")
        elif kind == "keepalive":
            self.keepalive(self.members[who])
        elif kind == "cycle":
            self.cycle(self.members[who])
        elif kind == "restart_agent":
            m = self.members[who]
            m.agent_alive = True
            self.schedule(0.0, who, "keepalive")
            self.schedule(0.1, who, "cycle")
        elif kind == "heal":
            self.members[who].partitioned = False
        self.check_invariants()

    def wake_all(self) -> None:
        """The DCS watch: every live agent runs a cycle shortly after a change."""
        for m in self.members.values():
            if m.agent_alive and not m.partitioned:
                self.schedule(self.rng.uniform(0.001, 0.2), m.name, "cycle")

    # -- simulated world -----------------------------------------------------------------
    def primary(self) -> SimMember | None:
        for m in self.members.values():
            if m.pg.running and m.pg.role is PgRole.PRIMARY:
                return m
        return None

    def advance_wal(self, dt: float) -> None:
        if dt <= 0:
            return
        prim = self.primary()
        if prim is not None:
            prim.pg.wal += int(dt * self.rng.uniform(0, 200_000))
        for m in self.members.values():
            up = self.members.get(m.pg.upstream or "")
            if not (m.pg.running and m.pg.role is PgRole.REPLICA and up is not None
                    and up.pg.running) or m.stalled_until > self.now:
                continue
            if up.pg.timeline != m.pg.timeline:
                if m.pg.wal > self.switch_point(m.pg.timeline, up):
                    continue  # diverged: the real walreceiver would refuse this timeline
                m.pg.timeline = up.pg.timeline
            lag = self.rng.choice([0, 0, 0, 1000, 50_000, 3_000_000])
            m.pg.wal = max(m.pg.wal, up.pg.wal - lag)

    def switch_point(self, timeline: int, up: SimMember) -> int:
        for h in self.store.history:
            if h.timeline == timeline:
                return h.lsn
        return up.pg.wal

    def keepalive(self, m: SimMember) -> None:
        if not m.agent_alive:
            return
        if not m.partitioned and m.keepalive_broken_until <= self.now:
            # renews our session, or opens a new one if the store expired it
            self.store.sessions[m.name] = self.now + self.settings.ttl
            m.lease_deadline = self.now + self.settings.ttl - self.settings.safety_margin
        self.schedule(self.settings.ttl / 4, m.name, "keepalive")

    def inject_fault(self) -> None:
        live = [m for m in self.members.values() if m.agent_alive]
        if not live:
            return
        m = self.rng.choice(live)
        kind = self.rng.choice(["node_death", "postmaster_kill", "partition", "clean_stop",
                                "leader_node_death", "replication_stall", "keepalive_broken",
                                "store_extends_sessions", "switchover", "switchover",
                                "restart", "reinit"])
        if kind == "leader_node_death":
            m = next((x for x in live if self.store.leader == x.name), m)
            kind = "node_death"
        self.log.append(f"{self.now:.2f} fault {kind} on {m.name}")
        if kind == "node_death":
            m.agent_alive = False
            m.lease_deadline = None
            m.pg.stop(self.now, clean=False)
            self.schedule(self.rng.uniform(5, 30), m.name, "restart_agent")
        elif kind == "postmaster_kill":
            m.pg.stop(self.now, clean=False)
            self.schedule(self.rng.uniform(0.01, 0.5), m.name, "cycle")
        elif kind == "partition":
            m.partitioned = True
            self.schedule(self.rng.uniform(2, 25), m.name, "heal")
        elif kind == "clean_stop":
            self.clean_stop(m)
        elif kind == "keepalive_broken":
            m.keepalive_broken_until = self.now + self.rng.uniform(2, 20)
            if self.rng.random() < 0.5:  # and its postmaster dies meanwhile
                self.schedule(self.rng.uniform(0.5, 5), "*", "fault")
        elif kind == "switchover":
            # an operator request: to a named member or any, now or a little later, naming
            # the current leader or (a stale request) someone else
            names = list(self.members)
            request: dict[str, Any] = {}
            if self.rng.random() < 0.9:
                request["leader"] = self.store.leader or self.rng.choice(names)
            if self.rng.random() < 0.7 or "leader" not in request:
                request["member"] = self.rng.choice(names)
            if self.rng.random() < 0.2:
                at = self.wall_time() + self.rng.uniform(1, 20)
                request["scheduled_at"] = datetime.fromtimestamp(at, UTC).isoformat()
            self.store.failover = request
            self.store.bump()
            self.wake_all()
        elif kind == "restart":
            m.restart_requested = True
            self.schedule(0.01, m.name, "cycle")
        elif kind == "reinit":
            m.reinit_requested = True
            self.schedule(0.01, m.name, "cycle")
        elif kind == "store_extends_sessions":
            for owner in self.store.sessions:  # as etcd does when it elects a new leader
                self.store.sessions[owner] = self.now + self.settings.ttl
        elif kind == "replication_stall":
            for other in live:
                if other is not m and self.rng.random() < 0.7:
                    other.stalled_until = self.now + self.rng.uniform(5, 60)
            # the leader often dies while replication is stalled
            if self.rng.random() < 0.5:
                self.schedule(self.rng.uniform(1, 10), "*", "fault")

    def clean_stop(self, m: SimMember) -> None:
        local = self.local_state(m, m.last_view, shutting_down=True)
        self.execute(m, decide(m.last_view, local, self.now).actions)
        m.agent_alive = False
        self.store.sessions.pop(m.name, None)
        self.store.members.pop(m.name, None)
        m.lease_deadline = None
        self.store.bump()
        self.wake_all()
        self.schedule(self.rng.uniform(5, 30), m.name, "restart_agent")

    def local_state(self, m: SimMember, view: ClusterView | None,
                    shutting_down: bool = False) -> LocalState:
        return LocalState(name=m.name, tags=m.tags, pg=m.pg.state(), dcs_ok=not m.partitioned,
                          lease_deadline=m.lease_deadline, member_seen=dict(m.member_seen),
                          shutting_down=shutting_down, wall_time=self.wall_time(),
                          restart_requested=m.restart_requested,
                          reinit_requested=m.reinit_requested)

    def wall_time(self) -> float:
        """Epoch seconds: the simulation starts at 2000-01-01T00:00:00Z."""
        return 946684800.0 + self.now

    def peer_status(self, name: str) -> PeerStatus | None:
        p = self.members[name]
        if not p.agent_alive or self.rng.random() < 0.05:
            return None
        role = p.pg.role.value if p.pg.running and p.pg.role else "uninitialized"
        return PeerStatus(name, role, "running" if p.pg.running else "stopped",
                          p.pg.wal if p.pg.data is DataState.VALID else None, p.pg.timeline,
                          p.tags)

    def cycle(self, m: SimMember) -> None:
        if not m.agent_alive:
            return
        view = None if m.partitioned else self.store.view(self.settings)
        if view is not None:
            m.last_view = view
            for name in view.members:
                m.member_seen[name] = self.now
        local = self.local_state(m, view)
        if needs_peer_statuses(view, local):
            assert view is not None
            peers = {n: self.peer_status(n) for n in view.members if n != m.name}
            local = replace(local, peers=peers)
        decision = decide(view, local, self.now)
        m.restart_requested = m.reinit_requested = False  # answered by this cycle
        self.execute(m, decision.actions)
        if view is not None and not m.partitioned:
            self.publish_member(m)
        nxt = self.settings.loop_wait
        if m.lease_deadline is not None and m.pg.running and m.pg.role is PgRole.PRIMARY:
            nxt = min(nxt, max(0.01, m.lease_deadline - self.now))
        self.schedule(nxt, m.name, "cycle")

    def publish_member(self, m: SimMember) -> None:
        self.store.sessions.setdefault(m.name, self.now + self.settings.ttl)
        st = m.pg.state()
        self.store.members[m.name] = Member(
            name=m.name, conn_url=f"postgres://{m.name}", api_url=f"http://{m.name}/patroni",
            role=st.role.value if st.role else "uninitialized",
            state="running" if st.running else "stopped", xlog_location=st.wal_position,
            timeline=st.timeline, tags=m.tags)

    # -- executor --------------------------------------------------------------------------
    def execute(self, m: SimMember, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if not self.apply(m, action):
                break

    def apply(self, m: SimMember, a: Action) -> bool:
        st, pg, now = self.store, m.pg, self.now
        dcs = not m.partitioned
        if isinstance(a, BootstrapCluster):
            if not dcs or st.initialize is not None:
                return False
            pg.data, pg.sysid, pg.running, pg.role = DataState.VALID, "42", True, PgRole.PRIMARY
            pg.wal, pg.timeline, pg.down_since = 1000, 1, None
            st.initialize = "42"
            st.sessions[m.name] = now + self.settings.ttl
            m.lease_deadline = now + self.settings.ttl - self.settings.safety_margin
            st.leader = m.name
            st.leader_rev = st.revision
            st.bump()
            self.wake_all()
            return True
        if isinstance(a, WriteInitialize):
            if dcs and st.initialize is None:
                st.initialize = a.sysid
                st.bump()
            return dcs
        if isinstance(a, CloneReplica):
            src = self.members[a.source.name]
            if not src.pg.running:
                return False
            pg.data, pg.sysid, pg.timeline, pg.wal = (DataState.VALID, src.pg.sysid,
                                                      src.pg.timeline, src.pg.wal)
            pg.control = ControlState.SHUT_DOWN_IN_RECOVERY
            return True
        if isinstance(a, StartPostgres):
            if pg.data is not DataState.VALID:
                return False
            pg.running, pg.down_since = True, None
            pg.role = PgRole.PRIMARY if a.role == "primary" else PgRole.REPLICA
            pg.upstream = a.upstream.name if a.upstream else None
            if pg.role is PgRole.PRIMARY and (
                    st.leader != m.name or m.lease_deadline is None or m.lease_deadline <= now):
                raise InvariantViolation(
                    f"{m.name} started as primary without the lock and a confirmed lease")
            return True
        if isinstance(a, Follow):
            pg.upstream = a.upstream.name
            return True
        if isinstance(a, Rejoin):
            leader = self.members[a.leader.name]
            if not leader.pg.running:
                return False
            sp = self.switch_point(pg.timeline, leader)
            if pg.timeline != leader.pg.timeline and pg.wal > sp:
                pg.wal = sp  # pg_rewind back to the fork point
            pg.timeline = leader.pg.timeline
            pg.running, pg.role, pg.upstream, pg.down_since = (True, PgRole.REPLICA,
                                                               leader.name, None)
            return True
        if isinstance(a, AcquireLeader):
            # the executor confirms the lease (one keep-alive) right before taking the lock
            if not dcs or m.keepalive_broken_until > now:
                return False
            st.sessions[m.name] = now + self.settings.ttl
            m.lease_deadline = now + self.settings.ttl - self.settings.safety_margin
            if st.leader is not None:
                return False
            st.leader, st.leader_rev = m.name, st.revision
            st.bump()
            self.wake_all()
            return True
        if isinstance(a, Promote):
            if not pg.running or st.leader != m.name or m.lease_deadline is None \
                    or m.lease_deadline <= now:
                raise InvariantViolation(f"{m.name} promoting without the lock and lease")
            # an operator's failover to a named member with no leader named accepts the loss
            waived = (st.failover is not None and not st.failover.get("leader")
                      and st.failover.get("member") == m.name)
            if st.optime is not None and not waived \
                    and st.optime - pg.wal > self.settings.maximum_lag_on_failover:
                raise InvariantViolation(
                    f"{m.name} promoted {st.optime - pg.wal} bytes behind the last optime")
            if pg.role is PgRole.REPLICA:
                st.history.append(HistoryEntry(pg.timeline, pg.wal, "promote", "", m.name))
                pg.timeline += 1
                self.promotions.append((now, m.name, pg.timeline))
            pg.role, pg.upstream = PgRole.PRIMARY, None
            st.bump()
            return True
        if isinstance(a, Demote):
            pg.stop(now, clean=False)
            if a.release_lock and dcs and st.leader == m.name:
                st.leader = None
                st.bump()
                self.wake_all()
            return True
        if isinstance(a, ReleaseLeader):
            if dcs and st.leader == m.name:
                st.leader = None
                st.bump()
                self.wake_all()
            return dcs
        if isinstance(a, StopPostgres):
            pg.stop(now, clean=True)
            return True
        if isinstance(a, HandOver):
            cand = self.members[a.candidate.name]
            if not dcs or st.leader != m.name:
                return False
            st.failover = {"leader": m.name, "member": cand.name}
            pg.stop(now, clean=True)
            # the shutdown checkpoint reaches a candidate that streams from us, unless its
            # replication is stalled; the real executor waits for it and otherwise withdraws
            if (cand.agent_alive and cand.pg.running and cand.pg.upstream == m.name
                    and cand.stalled_until <= now and cand.pg.timeline == pg.timeline):
                cand.pg.wal = max(cand.pg.wal, pg.wal)
                st.leader = None
                self.switchovers += 1
                st.bump()
                self.wake_all()
                return True
            st.failover = None
            st.bump()
            return False
        if isinstance(a, ClearFailover):
            if dcs:
                st.failover = None
                st.bump()
            return dcs
        if isinstance(a, RestartPostgres):
            pg.stop(now, clean=True)
            return self.apply(m, StartPostgres(a.role, a.upstream))
        if isinstance(a, Reinitialize):
            if not self.members[a.source.name].pg.running:
                return False
            pg.stop(now, clean=False)
            pg.data = DataState.EMPTY
            return self.apply(m, CloneReplica(a.source)) and \
                self.apply(m, StartPostgres("replica", a.leader))
        if isinstance(a, SyncSlots):
            return True
        if isinstance(a, PublishStatus):
            if dcs:
                st.optime = pg.wal
            return dcs
        raise AssertionError(f"unknown action {a!r}")

    # -- invariants --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        writable = [m.name for m in self.members.values()
                    if m.pg.running and m.pg.role is PgRole.PRIMARY]
        if len(writable) > 1:
            raise InvariantViolation(
                f"t={self.now:.3f}: two writable primaries {writable}\n" + "\n".join(self.log))

    def summary(self) -> dict[str, Any]:
        return {"promotions": len(self.promotions), "leader": self.store.leader,
                "switchovers": self.switchovers, "time": self.now}
