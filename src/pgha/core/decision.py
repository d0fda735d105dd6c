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
    WAITING_FOR_LEADER = "waiting_for_leader"
    ADOPT_DATA = "adopt_existing_data"
    SYSID_MISMATCH = "sysid_mismatch"
    LEADER_HEALTHY = "leader_healthy"
    LEADER_DATA_LOST = "leader_data_lost"
    OTHER_LEADER_DEMOTE = "other_leader_demote"
    RETAKE_LOCK_AS_PRIMARY = "retake_lock_as_primary"
    BEHIND_CLUSTER_TIMELINE = "behind_cluster_timeline"
    PROMOTE_HOLDING_LOCK = "promote_holding_lock"
    REPLICA_DIVERGED = "replica_diverged"
    FOLLOW = "follow"
    REPLICA_HEALTHY = "replica_healthy"
    RACE = "race"
    NOT_HEALTHIEST = "not_healthiest"
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
    RESTART = "restart"
    REINITIALIZE = "reinitialize"


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
