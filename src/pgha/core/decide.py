"""The decision function: one pure step of the HA loop.

``decide(view, local, now)`` looks at an immutable DCS snapshot and this member's observations and
returns the actions to run, in order, with a reason code. It never performs IO and never reads a
clock: ``now`` is a monotonic timestamp given by the caller.

Order of precedence (first match wins), which is also the order of the safety rules:

1. A clean shutdown of the agent.
2. Fail closed: a writable primary whose lease is not confirmed until ``now`` demotes at once,
   whatever else is true (DESIGN.md safety rule 2).
3. With no usable DCS view, nothing else changes (replicas never promote).
4. A leader key that names us but is not bound to our session: rebind it or leave it alone
   (DESIGN.md safety rule 7, :mod:`pgha.core.lock`). "Holding the lock" below always means
   the key names us AND is bound to our session.
   Withdrawing the request a failed hand-over of ours left in the DCS, before anything may
   start, promote or hand over again (:func:`pgha.core.operator.withdraw_failed_switchover`).
5. A long action in flight; an operator's re-initialization.
6. Maintenance mode (``pause``): only operator requests change anything.
7. Data directory states that need bootstrap, clone, or an operator; the ``initialize`` key
   and the system identifier.
8. Running primary / running replica / starting / stopped PostgreSQL, each against the leader
   key (an operator's restart of running PostgreSQL first). The leader race and its refusals
   are in :mod:`pgha.core.race`.
"""

from __future__ import annotations

from dataclasses import replace

from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    CloneReplica,
    Demote,
    PrePromote,
    Promote,
    PublishStatus,
    Rejoin,
    ReleaseLeader,
    StartPostgres,
    StopMode,
    StopPostgres,
    WriteInitialize,
)
from pgha.core.decision import RACE_REFUSALS, Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.decision import upstream_of as _upstream
from pgha.core.housekeeping import (
    failsafe_replica_slots,
    leader_housekeeping,
    leader_slots,
    leader_status,
)
from pgha.core.lock import holds_lock as _holds_lock
from pgha.core.lock import names_us, stale_lock, stale_lock_decision
from pgha.core.model import ClusterView, DataState, LocalState, PgRole, SyncMode
from pgha.core.operator import (
    candidate_refusal,
    leader_switchover,
    reinitialize_decision,
    restart_decision,
    withdraw_failed_switchover,
)
from pgha.core.race import cluster_timeline, race_refusal
from pgha.core.standby import (
    bootstrap_standby,
    demote_cluster,
    follow_remote,
    new_cluster_standby,
    standby_cluster,
    standby_leader,
    start_standby_leader,
)
from pgha.core.switchover import parse_failover
from pgha.core.sync import before_promote
from pgha.core.sync import plan as sync_plan
from pgha.core.topology import clone_source, follow_target, replica_of_leader

__all__ = ["RACE_REFUSALS", "Decision", "Reason", "decide", "needs_peer_statuses"]


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
    first = _shutdown(view, local) or _fail_closed(view, local, now)
    if first is not None:
        return first
    if view is None or not local.dcs_ok:
        return _dcs_unreachable(view, local, now)
    holds_lock = _holds_lock(view, local)
    return (stale_lock_decision(view, local)
            or withdraw_failed_switchover(view, local, holds_lock)
            or _busy_or_reinit(view, local, holds_lock)
            or (_paused(view, local, now) if view.settings.pause else None)
            or _data_directory(view, local, holds_lock)
            or _by_postgres_state(view, local, holds_lock, now))


def _is_writable_primary(local: LocalState) -> bool:
    return local.pg.running and local.pg.role is PgRole.PRIMARY


def _shutdown(view: ClusterView | None, local: LocalState) -> Decision | None:
    """1. A clean stop: PostgreSQL first, then the lock (safety rule 5); in pause, nothing."""
    if not local.shutting_down:
        return None
    if view is not None and view.settings.pause:
        return _d(Reason.SHUTDOWN_PAUSED, "paused: leaving PostgreSQL running")
    if _holds_lock(view, local) or (local.lease_deadline is not None and not stale_lock(
            view, local) and _is_writable_primary(local)):
        return _d(Reason.SHUTDOWN, "stopping PostgreSQL, then releasing the leader lock",
                  StopPostgres(StopMode.FAST, _primary_stop_timeout(view, local)),
                  ReleaseLeader())
    return _d(Reason.SHUTDOWN, "stopping PostgreSQL", StopPostgres(StopMode.FAST))


def _primary_stop_timeout(view: ClusterView | None, local: LocalState) -> float | None:
    """``primary_stop_timeout`` for a primary's clean stop in synchronous mode (None: not
    cut short)."""
    if view is None or not _is_writable_primary(local):
        return None
    settings = view.settings
    if settings.synchronous_mode is SyncMode.OFF or settings.primary_stop_timeout <= 0:
        return None
    return settings.primary_stop_timeout


def _fail_closed(view: ClusterView | None, local: LocalState, now: float) -> Decision | None:
    """2. A writable primary (not paused) whose lease is not confirmed until ``now`` demotes at
    once, when the leader key names us (bound to our session or not) or it cannot know who
    holds it (safety rule 2)."""
    paused = view is not None and view.settings.pause
    if not _is_writable_primary(local) or paused or _lease_confirmed(view, local, now):
        return None
    if not (names_us(view, local) or view is None or not local.dcs_ok):
        return None
    return _d(Reason.LEASE_UNCONFIRMED,
              "leader lease not confirmed in time: demoting before it can expire",
              Demote(StopMode.IMMEDIATE))


def _busy_or_reinit(view: ClusterView, local: LocalState, holds_lock: bool) -> Decision | None:
    """5. A long action on PostgreSQL in flight; an operator's re-initialization (never of the
    leader)."""
    if local.pg.busy is not None:
        return _d(Reason.BUSY, f"{local.pg.busy} in progress")
    if local.reinit_requested and not holds_lock:
        return reinitialize_decision(view, local)
    return None


def _data_directory(view: ClusterView, local: LocalState, holds_lock: bool) -> Decision | None:
    """7. Data that cannot simply run: an invalid or empty data directory, no (or a claimed)
    ``initialize`` key, data of another cluster. None when the data belongs to this
    cluster."""
    pg = local.pg
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
    return None


def _by_postgres_state(view: ClusterView, local: LocalState, holds_lock: bool,
                       now: float) -> Decision:
    """8. Running (an operator's restart first), starting or stopped PostgreSQL, each
    against the leader key."""
    pg = local.pg
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


def _dcs_unreachable(view: ClusterView | None, local: LocalState, now: float) -> Decision:
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
    if view is not None and pg.running and pg.accepting and not paused and (
            slots := failsafe_replica_slots(view, local, now)):
        return _d(Reason.DCS_UNREACHABLE, "DCS unreachable: advancing slot copies to the "
                  f"positions {local.failsafe_primary} sent", *slots)
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


def _paused(view: ClusterView, local: LocalState, now: float) -> Decision:
    """6. Maintenance mode: change nothing in PostgreSQL except on an operator's request
    (restart, switchover); keep publishing as leader if we are."""
    holds_lock = _holds_lock(view, local)
    pg = local.pg
    if pg.running and pg.accepting:
        restart = restart_decision(view, local, holds_lock)
        if restart is not None:
            return restart
    switchover = _paused_switchover(view, local, holds_lock)
    if switchover is not None:
        return switchover
    leader = view.leader_member
    if (not pg.running and pg.stopped_by_agent and pg.data is DataState.VALID
            and leader is not None and leader.name != local.name
            and leader.is_running_primary and leader.conn_url):
        return _d(Reason.REJOIN, f"paused: rejoining {leader.name} after a switchover",
                  Rejoin(_upstream(leader), view.settings.use_pg_rewind))
    if holds_lock and _is_writable_primary(local):
        return _d(Reason.PAUSED, "paused: leader, publishing status only",
                  leader_status(view, local, now), *leader_slots(view, local, now))
    if holds_lock:
        return _d(Reason.PAUSED, "paused: not a running primary, releasing the lock",
                  ReleaseLeader())
    if view.leader is None and pg.running and pg.accepting and pg.role is PgRole.PRIMARY:
        return _d(Reason.PAUSED, "paused: running primary takes the free lock", AcquireLeader())
    return _d(Reason.PAUSED, "paused: changing nothing")


def _paused_switchover(view: ClusterView, local: LocalState,
                       holds_lock: bool) -> Decision | None:
    """A due switchover in pause: only to a named candidate; the leader hands over, the
    candidate takes the free lock unless it must refuse. None: no part in one now."""
    pg = local.pg
    request = parse_failover(view.failover)
    if request is None or not request.due(local.wall_time):
        return None
    if holds_lock and pg.running and pg.accepting and pg.role is PgRole.PRIMARY:
        if not request.candidate:
            return _d(Reason.SWITCHOVER_IMPOSSIBLE,
                      "paused: a switchover needs a named candidate", ClearFailover())
        switchover = leader_switchover(view, local)
        if switchover is not None:
            return switchover
    if (view.leader is None and request.candidate == local.name and pg.running
            and pg.accepting and pg.role is PgRole.REPLICA):
        refusal = candidate_refusal(view, local, request)
        if refusal is not None:
            return replace(refusal, message=f"paused: {refusal.message}")
        return _d(Reason.SWITCHOVER_CANDIDATE,
                  "paused: named candidate and the lock is free: taking it",
                  AcquireLeader(), *_promote(view, local, planned=True), ClearFailover(),
                  PublishStatus(optime=pg.wal_position))
    return None


def _empty_data(view: ClusterView, local: LocalState, holds_lock: bool) -> Decision:
    """An empty data directory: give up a lock we hold, bootstrap a new cluster, or create a
    replica from the running leader (its ``clonefrom``/``replicatefrom`` member when there is
    one). With no running leader it waits, unless ``local.replica_without_leader``: then the
    ``no_leader`` replica methods create it (CloneReplica without a source) and it starts
    as a replica without an upstream."""
    if holds_lock:
        return _d(Reason.LEADER_DATA_LOST, "holding the lock with an empty data directory",
                  ReleaseLeader())
    if view.initialize is None:
        if (standby := new_cluster_standby(view, local)) is not None:
            return bootstrap_standby(standby)
        return _d(Reason.BOOTSTRAP, "no initialize key: bootstrapping a new cluster",
                  BootstrapCluster())
    if view.initialize == "":
        return _d(Reason.BOOTSTRAP_IN_PROGRESS, "another member is bootstrapping the cluster")
    leader = view.leader_member
    if leader is None or not leader.is_running_leader or not leader.conn_url:
        if local.replica_without_leader:
            # as Patroni: the data comes from elsewhere (a backup); the replica starts without
            # an upstream and follows the leader once one runs (or joins the race)
            return _d(Reason.CLONE_WITHOUT_LEADER, "empty data directory and no running "
                      "leader: creating a replica with the methods that need none (no_leader)",
                      CloneReplica(None), StartPostgres("replica"))
        return _d(Reason.WAITING_FOR_LEADER, "empty data directory: waiting for a running leader")
    source = clone_source(view, local) or leader
    upstream = follow_target(view, local) or leader
    return _d(Reason.CLONE, f"creating replica from {source.name}",
              CloneReplica(_upstream(source)), StartPostgres("replica", _upstream(upstream)))


def _promote(view: ClusterView, local: LocalState, planned: bool) -> tuple[Action, ...]:
    """Promotion of a replica that holds the lock: in synchronous mode the ``sync`` key and
    ``synchronous_standby_names`` are set for its first commits before it accepts any
    (:func:`pgha.core.sync.before_promote`), after the user's ``pre_promote`` fencing
    command when one is set. In a standby cluster nobody promotes: the new lock holder
    follows the remote instead."""
    if (standby := standby_cluster(view)) is not None:
        return follow_remote(local, standby)
    fence = (PrePromote(),) if local.pre_promote_hook else ()
    return (*fence, *before_promote(view, local), Promote(planned=planned))


def _running_primary(view: ClusterView, local: LocalState, holds_lock: bool,
                     now: float) -> Decision:
    if holds_lock:
        if (standby := standby_cluster(view)) is not None:
            return demote_cluster(standby)
        switchover = leader_switchover(view, local)
        if switchover is not None:
            return switchover
        pending = sync_plan(view, local).pending
        if pending is not None:
            return _d(Reason.SYNC_PENDING, f"holding the leader lock as a running primary; "
                      f"{pending}", *leader_housekeeping(view, local, now))
        return _d(Reason.LEADER_HEALTHY, "holding the leader lock as a running primary",
                  *leader_housekeeping(view, local, now))
    if view.leader is not None:
        return _d(Reason.OTHER_LEADER_DEMOTE,
                  f"{view.leader.name} holds the lock while we run as primary: demoting",
                  Demote(StopMode.IMMEDIATE))
    cluster_tl = cluster_timeline(view)
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
              AcquireLeader(), *leader_housekeeping(view, local, now))


def _running_replica(view: ClusterView, local: LocalState, holds_lock: bool,
                     now: float) -> Decision:
    if holds_lock:
        if not _lease_confirmed(view, local, now):
            return _d(Reason.LEASE_UNCONFIRMED,
                      "the leader key names us but our lease is not confirmed: not promoting")
        if (standby := standby_cluster(view)) is not None:
            return standby_leader(view, local, standby, now)
        if not local.watchdog_ok:
            return _d(Reason.RELEASE_LOCK_WATCHDOG, "holding the leader lock as a replica, but "
                      "watchdog.mode is required and the device cannot be armed: releasing it",
                      ReleaseLeader())
        if local.pre_promote_failed:
            return _d(Reason.RELEASE_LOCK_PRE_PROMOTE, "holding the leader lock as a replica, "
                      "but postgresql.pre_promote failed: releasing it", ReleaseLeader())
        return _d(Reason.PROMOTE_HOLDING_LOCK, "holding the leader lock as a replica: promoting",
                  *_promote(view, local, planned=view.failover is not None),
                  *leader_housekeeping(view, local, now))
    if view.leader is not None:
        return replica_of_leader(view, local, view.leader.name, now)
    return _free_lock(view, local, now)


def _free_lock(view: ClusterView, local: LocalState, now: float) -> Decision:
    """A running replica and no leader: a due request naming a candidate goes first (we are
    the candidate, or stay out while it answers); otherwise the leader race."""
    request = parse_failover(view.failover)
    if request is not None and request.due(local.wall_time) and request.candidate:
        if request.candidate == local.name:
            if local.pre_promote_failed:  # as if deleted before the hook ran, as Patroni does
                return _d(Reason.PRE_PROMOTE_WITHDRAW, "named candidate, but postgresql."
                          "pre_promote failed: withdrawing the request", ClearFailover())
            refusal = candidate_refusal(view, local, request)
            if refusal is not None:
                return refusal
            return _d(Reason.SWITCHOVER_CANDIDATE,
                      "named switchover/failover candidate and the lock is free: taking it",
                      AcquireLeader(), *_promote(view, local, planned=True), ClearFailover(),
                      *leader_housekeeping(view, local, now))
        peer = local.peers.get(request.candidate)
        if peer is not None and peer.state == "running":
            return _d(Reason.SWITCHOVER_ELSEWHERE,
                      f"switchover to {request.candidate} in progress: staying out of the race")
    refusal = race_refusal(view, local)
    if refusal is not None:
        return refusal
    clear = (ClearFailover(),) if view.failover is not None else ()
    return _d(Reason.RACE, "no leader and this member is the healthiest: taking the lock",
              AcquireLeader(), *_promote(view, local, planned=bool(clear)), *clear,
              *leader_housekeeping(view, local, now))


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
        if (standby := standby_cluster(view)) is not None:
            return start_standby_leader(view, local, standby)
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
    if leader is None or not leader.is_running_leader or not leader.conn_url:
        return _d(Reason.WAITING_FOR_LEADER,
                  f"waiting for leader {view.leader.name} to run")
    timeline_changed = (pg.timeline is not None and leader.timeline is not None
                        and pg.timeline != leader.timeline)
    if pg.control_state.was_primary or timeline_changed:
        return _d(Reason.REJOIN,
                  f"rejoining {leader.name} as a replica after checking for divergence",
                  Rejoin(_upstream(leader), view.settings.use_pg_rewind))
    target = follow_target(view, local) or leader
    return _d(Reason.START_REPLICA, f"starting as a replica of {target.name}",
              StartPostgres("replica", _upstream(target)))

