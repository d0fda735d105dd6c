"""The decision core's result type: actions to run and the reason code for the log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pgha.core.actions import Action, Upstream
from pgha.core.model import Member


class Reason(StrEnum):
    SHUTDOWN = "shutdown"
    SHUTDOWN_PAUSED = "shutdown_paused"
    LEASE_UNCONFIRMED = "lease_unconfirmed"
    LEASE_BACKSTOP = "lease_backstop"
    DCS_UNREACHABLE = "dcs_unreachable"
    DCS_UNREACHABLE_LEASE_VALID = "dcs_unreachable_lease_valid"
    DCS_UNREACHABLE_READ_ONLY = "dcs_unreachable_read_only"
    FAILSAFE_ACTIVE = "failsafe_active"
    PAUSED = "paused"
    BUSY = "busy"
    DATA_INVALID = "data_invalid"
    BOOTSTRAP = "bootstrap"
    BOOTSTRAP_IN_PROGRESS = "bootstrap_in_progress"
    CLONE = "clone"
    CLONE_WITHOUT_LEADER = "clone_without_leader"  # no running leader: a no_leader method
    WAITING_FOR_LEADER = "waiting_for_leader"
    ADOPT_DATA = "adopt_existing_data"
    SYSID_MISMATCH = "sysid_mismatch"
    LEADER_HEALTHY = "leader_healthy"
    SYNC_PENDING = "sync_pending"  # leader: synchronous standbys not settled yet
    LEADER_REBIND = "leader_rebind"  # the key names us, bound to another session: rebind it
    LEADER_KEY_NOT_OURS = "leader_key_not_ours"  # ... and we may not rebind it: wait
    LEADER_DATA_LOST = "leader_data_lost"
    OTHER_LEADER_DEMOTE = "other_leader_demote"
    RETAKE_LOCK_AS_PRIMARY = "retake_lock_as_primary"
    BEHIND_CLUSTER_TIMELINE = "behind_cluster_timeline"
    PROMOTE_HOLDING_LOCK = "promote_holding_lock"
    RELEASE_LOCK_WATCHDOG = "release_lock_watchdog"  # required watchdog unusable: no promote
    RELEASE_LOCK_PRE_PROMOTE = "release_lock_pre_promote"  # pre_promote failed: no promote
    PRE_PROMOTE_WITHDRAW = "pre_promote_withdraw"  # candidate whose pre_promote failed
    REPLICA_DIVERGED = "replica_diverged"
    FOLLOW = "follow"
    REPLICA_HEALTHY = "replica_healthy"
    COPY_LOGICAL_SLOTS = "copy_logical_slots"  # replica: logical slot copies need a restart
    STANDBY_LEADER = "standby_leader"  # holds the lock in a standby cluster: follows the remote
    DEMOTE_CLUSTER = "demote_cluster"  # a primary whose cluster became a standby cluster
    RACE = "race"
    # refusals of the leader race (safety rule 3), one per rule: see pgha.core.race
    RACE_REFUSED_NOFAILOVER = "race_refused_nofailover"
    RACE_REFUSED_WATCHDOG = "race_refused_watchdog"  # watchdog required but not usable
    RACE_REFUSED_PRE_PROMOTE = "race_refused_pre_promote"  # pre_promote failed < ttl ago
    RACE_REFUSED_FAILSAFE_PRIMARY_ALIVE = "race_refused_failsafe_primary_alive"
    RACE_REFUSED_POSITION_UNKNOWN = "race_refused_position_unknown"
    RACE_REFUSED_LAG = "race_refused_lag"
    RACE_REFUSED_TIMELINE_BEHIND = "race_refused_timeline_behind"
    RACE_REFUSED_PEER_AHEAD = "race_refused_peer_ahead"
    RACE_REFUSED_PEER_PRIORITY = "race_refused_peer_priority"
    RACE_REFUSED_PRIMARY_RUNNING = "race_refused_primary_running"
    RACE_REFUSED_NOT_SYNC = "race_refused_not_sync"  # synchronous_mode on: not in sync
    RACE_REFUSED_QUORUM = "race_refused_quorum"  # quorum mode: too few votes
    # refusals of a named switchover/failover candidate: see pgha.core.operator
    CANDIDATE_REFUSED_NOFAILOVER = "candidate_refused_nofailover"
    CANDIDATE_REFUSED_WATCHDOG = "candidate_refused_watchdog"
    CANDIDATE_REFUSED_PRE_PROMOTE = "candidate_refused_pre_promote"
    CANDIDATE_REFUSED_LAG = "candidate_refused_lag"
    CANDIDATE_REFUSED_FAILSAFE_PRIMARY_ALIVE = "candidate_refused_failsafe_primary_alive"
    CANDIDATE_REFUSED_PRIMARY_RUNNING = "candidate_refused_primary_running"
    CANDIDATE_REFUSED_NOT_SYNC = "candidate_refused_not_sync"
    PG_STARTING = "pg_starting"
    PRIMARY_START_TIMEOUT = "primary_start_timeout"
    RESTART_PRIMARY = "restart_primary"
    START_REPLICA = "start_replica"
    REJOIN = "rejoin"
    SWITCHOVER = "switchover"
    SWITCHOVER_SCHEDULED = "switchover_scheduled"
    SWITCHOVER_IMPOSSIBLE = "switchover_impossible"
    SWITCHOVER_CANDIDATE = "switchover_candidate"
    SWITCHOVER_ELSEWHERE = "switchover_elsewhere"
    SWITCHOVER_FAILED = "switchover_failed"
    RESTART = "restart"
    REINITIALIZE = "reinitialize"


RACE_REFUSALS: frozenset[Reason] = frozenset({
    Reason.RACE_REFUSED_NOFAILOVER,
    Reason.RACE_REFUSED_WATCHDOG,
    Reason.RACE_REFUSED_PRE_PROMOTE,
    Reason.RACE_REFUSED_FAILSAFE_PRIMARY_ALIVE,
    Reason.RACE_REFUSED_POSITION_UNKNOWN,
    Reason.RACE_REFUSED_LAG,
    Reason.RACE_REFUSED_TIMELINE_BEHIND,
    Reason.RACE_REFUSED_PEER_AHEAD,
    Reason.RACE_REFUSED_PEER_PRIORITY,
    Reason.RACE_REFUSED_PRIMARY_RUNNING,
    Reason.RACE_REFUSED_NOT_SYNC,
    Reason.RACE_REFUSED_QUORUM,
    Reason.CANDIDATE_REFUSED_NOFAILOVER,
    Reason.CANDIDATE_REFUSED_WATCHDOG,
    Reason.CANDIDATE_REFUSED_PRE_PROMOTE,
    Reason.CANDIDATE_REFUSED_LAG,
    Reason.CANDIDATE_REFUSED_FAILSAFE_PRIMARY_ALIVE,
    Reason.CANDIDATE_REFUSED_PRIMARY_RUNNING,
    Reason.CANDIDATE_REFUSED_NOT_SYNC,
})
"""Every reason for staying out of a free leader lock (a race or a named candidacy): a decision
with one of them has no actions, and the agent re-observes soon (the better peer may be a
primary that is stopping right now)."""


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    reason: Reason
    message: str


def decision(reason: Reason, message: str, *actions: Action) -> Decision:
    """A Decision running ``actions`` in order."""
    return Decision(tuple(actions), reason, message)


def upstream_of(member: Member) -> Upstream:
    return Upstream(member.name, member.conn_url)
