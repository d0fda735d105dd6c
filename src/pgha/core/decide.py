"""The decision function: one pure step of the HA loop.

``decide(view, local, now)`` looks at an immutable DCS snapshot and this member's observations and
returns the actions to run, in order, with a reason code. It never performs IO and never reads a
clock: ``now`` is a monotonic timestamp given by the caller.

Order of precedence (first match wins), which is also the order of the safety rules:

1. A clean shutdown of the agent.
2. Fail closed: a writable primary whose lease is not confirmed until ``now`` demotes at once,
   whatever else is true (DESIGN.md safety rule 2).
3. With no usable DCS view, nothing else changes (replicas never promote).
4. Data directory states that need bootstrap, clone, or an operator.
5. Running primary / running replica / stopped PostgreSQL, each against the leader key.
"""

from __future__ import annotations

from collections.abc import Mapping

from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    CloneReplica,
    Demote,
    Follow,
    Promote,
    PublishStatus,
    Rejoin,
    ReleaseLeader,
    StartPostgres,
    StopMode,
    StopPostgres,
    SyncSlots,
    WriteInitialize,
    slot_name,
)
from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.decision import upstream_of as _upstream
from pgha.core.model import ClusterView, DataState, LocalState, Member, PgRole
from pgha.core.operator import (
    candidate_verdict,
    leader_switchover,
    reinitialize_decision,
    restart_decision,
)
from pgha.core.switchover import parse_failover
from pgha.core.topology import clone_source, follow_target

__all__ = ["Decision", "Reason", "decide", "needs_peer_statuses"]


def needs_peer_statuses(view: ClusterView | None, local: LocalState) -> bool:
    """True when the next decision may enter the leader race, so the caller must first fetch
    every peer's ``GET /patroni`` (in parallel, short timeout) into ``local.peers``."""
    if view is None or not local.dcs_ok or local.shutting_down:
        return False
    if local.pg.data is not DataState.VALID or not local.pg.accepting:
        return False
    request = parse_failover(view.failover)
    if request is not None and request.due(local.wall_time):
        return True  # a switchover: the leader checks candidates, the others watch the candidate
    return view.leader is None and not view.settings.pause


def decide(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Return the actions for this cycle. See the module docstring for precedence."""
    pg = local.pg
    paused = view is not None and view.settings.pause
    holds_lock = (
        view is not None and view.leader is not None and view.leader.name == local.name
    )
    is_writable_primary = pg.running and pg.role is PgRole.PRIMARY

    if local.shutting_down:
        if paused:
            return _d(Reason.SHUTDOWN_PAUSED, "paused: leaving PostgreSQL running")
        if holds_lock or (local.lease_deadline is not None and is_writable_primary):
            return _d(Reason.SHUTDOWN, "stopping PostgreSQL, then releasing the leader lock",
                      StopPostgres(StopMode.FAST), ReleaseLeader())
        return _d(Reason.SHUTDOWN, "stopping PostgreSQL", StopPostgres(StopMode.FAST))

    if is_writable_primary and not paused and not _lease_confirmed(view, local, now) \
            and (holds_lock or view is None or not local.dcs_ok):
        return _d(Reason.LEASE_UNCONFIRMED,
                  "leader lease not confirmed in time: demoting before it can expire",
                  Demote(StopMode.IMMEDIATE))

    if view is None or not local.dcs_ok:
        return _dcs_unreachable(view, local)

    if pg.busy is not None:
        return _d(Reason.BUSY, f"{pg.busy} in progress")

    if local.reinit_requested and not holds_lock:
        reinit = reinitialize_decision(view, local)
        if reinit is not None:
            return reinit

    if paused:
        return _paused(view, local)

    if pg.data is DataState.INVALID:
        msg = "data directory is neither empty nor a valid cluster: operator action needed"
        if holds_lock:
            return _d(Reason.DATA_INVALID, msg, ReleaseLeader())
        return _d(Reason.DATA_INVALID, msg)

    if pg.data is DataState.EMPTY:
        return _empty_data(view, local, holds_lock)

    if view.initialize is None:
        if pg.sysid:
            return _d(Reason.ADOPT_DATA, f"no initialize key: adopting local data {pg.sysid}",
                      WriteInitialize(pg.sysid))
        return _d(Reason.WAITING_FOR_LEADER, "no initialize key and no local system identifier")
    if view.initialize == "":
        return _d(Reason.BOOTSTRAP_IN_PROGRESS, "another member is bootstrapping the cluster")
    if pg.sysid and pg.sysid != view.initialize:
        msg = (f"local system identifier {pg.sysid} differs from the cluster's "
               f"{view.initialize}: refusing to touch this data")
        if holds_lock:
            return _d(Reason.SYSID_MISMATCH, msg, ReleaseLeader())
        return _d(Reason.SYSID_MISMATCH, msg)

    if pg.running and pg.accepting:
        restart = restart_decision(view, local, holds_lock)
        if restart is not None:
            return restart
        if pg.role is PgRole.PRIMARY:
            return _running_primary(view, local, holds_lock, now)
        return _running_replica(view, local, holds_lock, now)
    if pg.running:
        return _starting(view, local, holds_lock, now)
    return _stopped(view, local, holds_lock, now)


def _lease_confirmed(view: ClusterView | None, local: LocalState, now: float) -> bool:
    """Our lease is confirmed until ``lease_deadline``. With ``failsafe_mode`` and the DCS
    unreachable, a completed failsafe round (every listed member promised not to take over)
    confirms it until ``failsafe_deadline`` instead."""
    if local.lease_deadline is not None and now < local.lease_deadline:
        return True
    failsafe_on = view is not None and view.settings.failsafe_mode
    return (failsafe_on and not local.dcs_ok and local.failsafe_deadline is not None
            and now < local.failsafe_deadline)


def _dcs_unreachable(view: ClusterView | None, local: LocalState) -> Decision:
    """No usable DCS: nothing may be promoted. A primary keeps writing only while its lease
    is confirmed (the fail-closed rule above demotes it); a stopped member is started
    read-only (as a replica of the last known leader, or of nobody) so reads keep working.
    ``view`` is the last snapshot read, possibly stale, or None."""
    pg = local.pg
    if pg.running and pg.role is PgRole.PRIMARY:
        if local.lease_deadline is None or (local.failsafe_deadline is not None and (
                local.failsafe_deadline > local.lease_deadline)):
            return _d(Reason.FAILSAFE_ACTIVE,
                      "DCS unreachable; staying primary on the members' failsafe confirmation")
        return _d(Reason.DCS_UNREACHABLE_LEASE_VALID,
                  "DCS unreachable; lease still valid, staying primary until it runs out")
    paused = view is not None and view.settings.pause
    if pg.running or pg.data is not DataState.VALID or pg.busy is not None or paused:
        return _d(Reason.DCS_UNREACHABLE, "DCS unreachable: changing nothing")
    leader = view.leader_member if view is not None else None
    upstream = None
    if leader is not None and leader.name != local.name and leader.conn_url \
            and not pg.control_state.was_primary:
        upstream = _upstream(leader)
    return _d(Reason.DCS_UNREACHABLE_READ_ONLY,
              "DCS unreachable: starting PostgreSQL read-only, no promotion possible",
              StartPostgres("replica", upstream))


def _paused(view: ClusterView, local: LocalState) -> Decision:
    """Maintenance mode: change nothing in PostgreSQL; keep publishing as leader if we are."""
    holds_lock = view.leader is not None and view.leader.name == local.name
    pg = local.pg
    if pg.running and pg.accepting:
        restart = restart_decision(view, local, holds_lock)
        if restart is not None:
            return restart
    request = parse_failover(view.failover)
    if request is not None and request.due(local.wall_time):
        if holds_lock and pg.running and pg.accepting and pg.role is PgRole.PRIMARY:
            if not request.candidate:
                return _d(Reason.SWITCHOVER_IMPOSSIBLE,
                          "paused: a switchover needs a named candidate", ClearFailover())
            switchover = leader_switchover(view, local)
            if switchover is not None:
                return switchover
        if (view.leader is None and request.candidate == local.name and pg.running
                and pg.accepting and pg.role is PgRole.REPLICA):
            verdict = candidate_verdict(view, local, request)
            if verdict is not None:
                return _d(Reason.NOT_HEALTHIEST, f"paused: {verdict}")
            return _d(Reason.SWITCHOVER_CANDIDATE,
                      "paused: named candidate and the lock is free: taking it",
                      AcquireLeader(), Promote(planned=True), ClearFailover(),
                      PublishStatus(optime=pg.wal_position))
    leader = view.leader_member
    if (not pg.running and pg.stopped_by_agent and pg.data is DataState.VALID
            and leader is not None and leader.name != local.name
            and leader.is_running_primary and leader.conn_url):
        return _d(Reason.REJOIN, f"paused: rejoining {leader.name} after a switchover",
                  Rejoin(_upstream(leader), view.settings.use_pg_rewind))
    if holds_lock and local.pg.running and local.pg.role is PgRole.PRIMARY:
        return _d(Reason.PAUSED, "paused: leader, publishing status only",
                  PublishStatus(optime=pg.wal_position))
    if holds_lock and not (local.pg.running and local.pg.role is PgRole.PRIMARY):
        return _d(Reason.PAUSED, "paused: not a running primary, releasing the lock",
                  ReleaseLeader())
    if (view.leader is None and local.pg.running and local.pg.accepting
            and local.pg.role is PgRole.PRIMARY):
        return _d(Reason.PAUSED, "paused: running primary takes the free lock", AcquireLeader())
    return _d(Reason.PAUSED, "paused: changing nothing")


def _empty_data(view: ClusterView, local: LocalState, holds_lock: bool) -> Decision:
    if holds_lock:
        return _d(Reason.LEADER_DATA_LOST, "holding the lock with an empty data directory",
                  ReleaseLeader())
    if view.initialize is None:
        return _d(Reason.BOOTSTRAP, "no initialize key: bootstrapping a new cluster",
                  BootstrapCluster())
    if view.initialize == "":
        return _d(Reason.BOOTSTRAP_IN_PROGRESS, "another member is bootstrapping the cluster")
    leader = view.leader_member
    if leader is None or not leader.is_running_primary or not leader.conn_url:
        return _d(Reason.WAITING_FOR_LEADER, "empty data directory: waiting for a running leader")
    source = clone_source(view, local) or leader
    return _d(Reason.CLONE, f"creating replica from {source.name}",
              CloneReplica(_upstream(source)), StartPostgres("replica", _upstream(leader)))


def _slots_to_keep(view: ClusterView, local: LocalState, now: float) -> frozenset[str]:
    names = {n for n in view.members if n != local.name}
    ttl = view.settings.member_slots_ttl
    names |= {n for n, seen in local.member_seen.items()
              if n != local.name and now - seen < ttl}
    keep = {slot_name(n) for n in names}
    permanent = (view.config or {}).get("slots")
    if isinstance(permanent, Mapping):
        keep |= {str(k) for k in permanent}
    return frozenset(keep)


def _leader_housekeeping(view: ClusterView, local: LocalState, now: float) -> list[Action]:
    actions: list[Action] = []
    if view.settings.use_slots:
        actions.append(SyncSlots(_slots_to_keep(view, local, now)))
    failsafe = None
    if view.settings.failsafe_mode:
        wanted = {n: m.api_url for n, m in view.members.items() if m.api_url}
        if wanted != dict(view.failsafe or {}):
            failsafe = wanted
    actions.append(PublishStatus(failsafe, local.pg.wal_position))
    return actions


def _cluster_timeline(view: ClusterView) -> int | None:
    tls = [m.timeline for m in view.members.values() if m.timeline is not None]
    tls += [h.timeline + 1 for h in view.history]
    return max(tls) if tls else None


def _running_primary(view: ClusterView, local: LocalState, holds_lock: bool,
                     now: float) -> Decision:
    if holds_lock:
        switchover = leader_switchover(view, local)
        if switchover is not None:
            return switchover
        return _d(Reason.LEADER_HEALTHY, "holding the leader lock as a running primary",
                  *_leader_housekeeping(view, local, now))
    if view.leader is not None:
        return _d(Reason.OTHER_LEADER_DEMOTE,
                  f"{view.leader.name} holds the lock while we run as primary: demoting",
                  Demote(StopMode.IMMEDIATE))
    cluster_tl = _cluster_timeline(view)
    if cluster_tl is not None and local.pg.timeline is not None and local.pg.timeline < cluster_tl:
        return _d(Reason.BEHIND_CLUSTER_TIMELINE,
                  f"running primary on timeline {local.pg.timeline} behind the cluster's "
                  f"{cluster_tl}: demoting", Demote(StopMode.IMMEDIATE))
    for name, peer in local.peers.items():
        if peer is not None and peer.is_running_primary and name != local.name:
            return _d(Reason.OTHER_LEADER_DEMOTE,
                      f"no leader lock and {name} also runs as primary: demoting",
                      Demote(StopMode.IMMEDIATE))
    return _d(Reason.RETAKE_LOCK_AS_PRIMARY, "no leader lock: running primary takes it",
              AcquireLeader(), *_leader_housekeeping(view, local, now))


def _replica_diverged(view: ClusterView, local: LocalState, leader: Member) -> bool:
    """A running replica is past the point where its timeline ended in the cluster history."""
    tl, pos = local.pg.timeline, local.pg.wal_position
    if tl is None or pos is None or leader.timeline is None or tl >= leader.timeline:
        return False
    for entry in view.history:
        if entry.timeline == tl:
            return pos > entry.lsn
    return False


def _running_replica(view: ClusterView, local: LocalState, holds_lock: bool,
                     now: float) -> Decision:
    if holds_lock:
        if not _lease_confirmed(view, local, now):
            return _d(Reason.LEASE_UNCONFIRMED,
                      "the leader key names us but our lease is not confirmed: not promoting")
        return _d(Reason.PROMOTE_HOLDING_LOCK, "holding the leader lock as a replica: promoting",
                  Promote(planned=view.failover is not None),
                  *_leader_housekeeping(view, local, now))
    if view.leader is not None:
        leader = view.leader_member
        if leader is None or not leader.conn_url:
            return _d(Reason.WAITING_FOR_LEADER,
                      f"leader {view.leader.name} has not published its member key yet")
        if _replica_diverged(view, local, leader):
            return _d(Reason.REPLICA_DIVERGED,
                      f"replica went past the end of timeline {local.pg.timeline}: stopping "
                      "to rejoin", StopPostgres(StopMode.FAST))
        target = follow_target(view, local) or leader
        if local.pg.upstream != target.name:
            return _d(Reason.FOLLOW, f"following {target.name}", Follow(_upstream(target)))
        return _d(Reason.REPLICA_HEALTHY, f"replica streaming from {target.name}")
    request = parse_failover(view.failover)
    if request is not None and request.due(local.wall_time) and request.candidate:
        if request.candidate == local.name:
            verdict = candidate_verdict(view, local, request)
            if verdict is not None:
                return _d(Reason.NOT_HEALTHIEST, verdict)
            return _d(Reason.SWITCHOVER_CANDIDATE,
                      "named switchover/failover candidate and the lock is free: taking it",
                      AcquireLeader(), Promote(planned=True), ClearFailover(),
                      *_leader_housekeeping(view, local, now))
        peer = local.peers.get(request.candidate)
        if peer is not None and peer.state == "running":
            return _d(Reason.SWITCHOVER_ELSEWHERE,
                      f"switchover to {request.candidate} in progress: staying out of the race")
    verdict = _race_verdict(view, local)
    if verdict is not None:
        return _d(Reason.NOT_HEALTHIEST, verdict)
    clear = (ClearFailover(),) if view.failover is not None else ()
    return _d(Reason.RACE, "no leader and this member is the healthiest: taking the lock",
              AcquireLeader(), Promote(planned=bool(clear)), *clear,
              *_leader_housekeeping(view, local, now))


def _race_verdict(view: ClusterView, local: LocalState) -> str | None:
    """Why this member must stay out of the leader race (safety rule 3), or None to race."""
    pg = local.pg
    if not local.tags.can_be_leader:
        return "tagged nofailover: never taking the lock"
    if local.failsafe_primary is not None:
        return f"primary {local.failsafe_primary} confirmed it is alive (failsafe)"
    if pg.wal_position is None:
        return "own WAL position unknown"
    lag_limit = view.settings.maximum_lag_on_failover
    if view.optime is not None and view.optime - pg.wal_position > lag_limit:
        return (f"lag {view.optime - pg.wal_position} bytes behind the last leader position "
                f"exceeds maximum_lag_on_failover {lag_limit}")
    cluster_tl = _cluster_timeline(view)
    if (view.settings.check_timeline and cluster_tl is not None and pg.timeline is not None
            and pg.timeline < cluster_tl):
        return f"timeline {pg.timeline} behind the cluster's {cluster_tl}"
    for name in sorted(local.peers):
        peer = local.peers[name]
        if name == local.name or peer is None:
            continue
        if peer.is_running_primary:
            return f"primary {name} is still running"
        if not peer.tags.can_be_leader or peer.wal_position is None:
            continue
        if peer.wal_position > pg.wal_position:
            return f"{name} is ahead ({peer.wal_position} > {pg.wal_position})"
        if (peer.wal_position == pg.wal_position
                and peer.tags.failover_priority > local.tags.failover_priority):
            return (f"{name} has the same WAL position and a higher failover_priority "
                    f"({peer.tags.failover_priority} > {local.tags.failover_priority})")
    return None


def _starting(view: ClusterView, local: LocalState, holds_lock: bool, now: float) -> Decision:
    timeout = view.settings.primary_start_timeout
    down = local.pg.down_since
    if holds_lock and down is not None and now - down >= timeout:
        return _d(Reason.PRIMARY_START_TIMEOUT,
                  f"PostgreSQL not accepting connections after {timeout:g}s: releasing the lock",
                  Demote(StopMode.IMMEDIATE, release_lock=True))
    return _d(Reason.PG_STARTING, "PostgreSQL is starting")


def _stopped(view: ClusterView, local: LocalState, holds_lock: bool, now: float) -> Decision:
    pg = local.pg
    if holds_lock:
        timeout = view.settings.primary_start_timeout
        if timeout <= 0 or (pg.down_since is not None and now - pg.down_since >= timeout):
            return _d(Reason.PRIMARY_START_TIMEOUT,
                      "PostgreSQL down and primary_start_timeout spent: releasing the lock",
                      ReleaseLeader())
        if not _lease_confirmed(view, local, now):
            # The store may keep our key alive longer than we can vouch for (etcd extends
            # leases when it elects a new raft leader): never start writable on a lease we
            # cannot confirm; wait for the keep-alive to confirm it or for the key to expire.
            return _d(Reason.LEASE_UNCONFIRMED,
                      "the leader key names us but our lease is not confirmed: not starting "
                      "PostgreSQL as primary")
        if pg.control_state.was_primary:
            return _d(Reason.RESTART_PRIMARY,
                      "PostgreSQL down while holding the lock: restarting it as primary",
                      StartPostgres("primary"))
        return _d(Reason.START_REPLICA, "holding the lock with replica data: starting to promote",
                  StartPostgres("replica"))
    if view.leader is None:
        return _d(Reason.START_REPLICA, "no leader: starting read-only to join the race",
                  StartPostgres("replica"))
    leader = view.leader_member
    if leader is None or not leader.is_running_primary or not leader.conn_url:
        return _d(Reason.WAITING_FOR_LEADER,
                  f"waiting for leader {view.leader.name} to run as primary")
    timeline_changed = (pg.timeline is not None and leader.timeline is not None
                        and pg.timeline != leader.timeline)
    if pg.control_state.was_primary or timeline_changed:
        return _d(Reason.REJOIN,
                  f"rejoining {leader.name} as a replica after checking for divergence",
                  Rejoin(_upstream(leader), view.settings.use_pg_rewind))
    target = follow_target(view, local) or leader
    return _d(Reason.START_REPLICA, f"starting as a replica of {target.name}",
              StartPostgres("replica", _upstream(target)))

