"""Decisions on operator requests (pure): switchover/failover (including the candidate's
refusals and the withdrawal of a failed hand-over), restart, re-initialize.

Called by :func:`pgha.core.decide.decide` at the points its precedence allows; each returns a
Decision, or None when the request does not apply now (the normal rules continue).
"""

from __future__ import annotations

from pgha.core.actions import ClearFailover, HandOver, Reinitialize, RestartPostgres
from pgha.core.commands import Restart as RestartConditions
from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.decision import upstream_of as _upstream
from pgha.core.model import ClusterView, LocalState, PgRole
from pgha.core.switchover import (
    FailoverRequest,
    candidate_problem,
    parse_failover,
    pick_candidate,
    request_for_leader,
)
from pgha.core.sync import failover_refusal
from pgha.core.topology import clone_source, follow_target


def leader_switchover(view: ClusterView, local: LocalState) -> Decision | None:
    """The leader's part of a ``failover`` request (see :mod:`pgha.core.switchover`); None
    when there is no request to act on now."""
    request = parse_failover(view.failover)
    if request is None:
        if view.failover is not None:
            return _d(Reason.SWITCHOVER_IMPOSSIBLE, "unusable failover key: removing it",
                      ClearFailover())
        return None
    if request.leader and request.leader != local.name:
        return _d(Reason.SWITCHOVER_IMPOSSIBLE,
                  f"failover key names leader {request.leader}, not us: removing it",
                  ClearFailover())
    if not request.due(local.wall_time):
        return None
    return _hand_over(view, local, request)


def _hand_over(view: ClusterView, local: LocalState, request: FailoverRequest) -> Decision:
    candidate = request.candidate or pick_candidate(view, local.peers, local.name)
    if candidate is None:
        return _d(Reason.SWITCHOVER_IMPOSSIBLE,
                  "switchover requested but no candidate is fit: removing the request",
                  ClearFailover())
    problem = candidate_problem(view, candidate, local.peers.get(candidate), check_lag=True,
                                check_sync=bool(request.leader) or not request.candidate)
    member = view.members.get(candidate)
    if problem is not None or member is None or not member.conn_url:
        return _d(Reason.SWITCHOVER_IMPOSSIBLE,
                  f"switchover to {candidate} not possible ({problem or 'no address'}): "
                  "removing the request", ClearFailover())
    return _d(Reason.SWITCHOVER, f"switching over to {candidate}",
              HandOver(_upstream(member)))


def candidate_refusal(view: ClusterView, local: LocalState,
                      request: FailoverRequest) -> Decision | None:
    """Why the named candidate must not take the free lock: a Decision without actions whose
    reason is one of the ``CANDIDATE_REFUSED_*`` codes; None when it may. It does not compare
    WAL positions with its peers (the leader checked them before handing over). A switchover
    (the request names a leader) still needs the candidate within ``maximum_lag_on_failover``
    of the last leader position: a leader that died before handing over must not turn a
    planned switchover into a lossy failover. For the same reason a switchover candidate in
    synchronous mode must be allowed by the ``sync`` key (:func:`pgha.core.sync.
    failover_refusal`). Only a manual failover (no leader named) waives both: the operator
    accepted the loss."""
    if not local.tags.can_be_leader:
        return _d(Reason.CANDIDATE_REFUSED_NOFAILOVER,
                  "named candidate but tagged nofailover: never taking the lock")
    if not local.watchdog_ok:
        return _d(Reason.CANDIDATE_REFUSED_WATCHDOG,
                  "named candidate, but watchdog mode is required and the device cannot be "
                  "armed")
    if local.pre_promote_failed:
        return _d(Reason.CANDIDATE_REFUSED_PRE_PROMOTE,
                  "named candidate, but postgresql.pre_promote failed less than ttl ago")
    if request.leader and (why := failover_refusal(view, local)) is not None:
        return _d(Reason.CANDIDATE_REFUSED_NOT_SYNC, f"switchover candidate, but {why}")
    position, limit = local.pg.wal_position, view.settings.maximum_lag_on_failover
    if request.leader and view.optime is not None and (
            position is None or view.optime - position > limit):
        return _d(Reason.CANDIDATE_REFUSED_LAG,
                  f"switchover candidate, but {view.optime - (position or 0)} bytes behind "
                  f"the last leader position exceeds maximum_lag_on_failover {limit}")
    if local.failsafe_primary is not None:
        return _d(Reason.CANDIDATE_REFUSED_FAILSAFE_PRIMARY_ALIVE,
                  f"primary {local.failsafe_primary} confirmed it is alive (failsafe)")
    for name in sorted(local.peers):
        peer = local.peers[name]
        if name != local.name and peer is not None and peer.is_running_primary:
            return _d(Reason.CANDIDATE_REFUSED_PRIMARY_RUNNING,
                      f"primary {name} is still running")
    return None


def withdraw_failed_switchover(view: ClusterView, local: LocalState,
                               holds_lock: bool) -> Decision | None:
    """Withdraw the request a failed hand-over of ours left in the DCS.

    A :class:`~pgha.core.actions.HandOver` whose candidate could not be asked or did not
    confirm our final WAL fails and leaves the ``failover`` key in place; the agent reports it
    in ``local.handover_failed``. While we still hold the lock (the candidate never took it)
    and the key holds a request we act on as leader, the only decision is to delete it: the
    normal rules then restart PostgreSQL as primary, and never hand over again for that
    request. Without the lock the member that took it clears the key itself."""
    if not local.handover_failed or not holds_lock:
        return None
    request = request_for_leader(view.failover, local.name)
    if request is None:
        return None
    return _d(Reason.SWITCHOVER_FAILED,
              f"switchover to {request.candidate or 'a candidate'} failed (our final WAL was "
              "not confirmed): withdrawing the request", ClearFailover())


def restart_decision(view: ClusterView, local: LocalState, holds_lock: bool) -> Decision | None:
    """An operator restart of running PostgreSQL in its current role. A primary without the
    lock is left to the normal rules (it must demote, not restart writable)."""
    if not local.restart_requested:
        return None
    if local.pg.role is PgRole.PRIMARY:
        if not holds_lock:
            return None
        return _d(Reason.RESTART, "restarting PostgreSQL as primary on request",
                  RestartPostgres("primary"))
    target = follow_target(view, local) if view.leader is not None else None
    upstream = _upstream(target) if target is not None and target.name != local.name else None
    return _d(Reason.RESTART, "restarting PostgreSQL as a replica on request",
              RestartPostgres("replica", upstream))


def reinitialize_decision(view: ClusterView, local: LocalState) -> Decision | None:
    """An operator re-clone, possible only from a running leader that is not us."""
    leader = view.leader_member
    if leader is None or not leader.is_running_leader or not leader.conn_url:
        return None
    source = leader if local.reinit_from_leader else (clone_source(view, local) or leader)
    return _d(Reason.REINITIALIZE, f"re-creating this replica from {source.name} on request",
              Reinitialize(_upstream(source), _upstream(leader),
                           from_leader=local.reinit_from_leader))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _server_version_text(number: int) -> str:
    """160004 -> "16.4"; 90624 -> "9.6.24"."""
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def restart_problem(conditions: RestartConditions, role: str, pending_restart: bool,
                    server_version: int | None) -> str | None:
    """Why a restart with ``conditions`` must not run on a member in ``role`` now, or None."""
    if conditions.restart_pending and not pending_restart:
        return "no restart is pending"
    want = conditions.role
    if want in ("master", "leader"):
        want = "primary"
    if want not in (None, "any") and want != role:
        return f"role is {role}, not {want}"
    if conditions.postgres_version:
        if server_version is None:
            return "the running PostgreSQL version is unknown"
        have = _server_version_text(server_version)
        if _version_tuple(have) >= _version_tuple(conditions.postgres_version):
            return f"PostgreSQL {have} is not older than {conditions.postgres_version}"
    return None
