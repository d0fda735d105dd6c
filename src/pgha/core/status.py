"""A member's published status: the ``GET /patroni`` JSON and the ``members/<name>`` JSON.

Both are built from one immutable :class:`AgentStatus` snapshot that the agent's decision loop
replaces after every cycle; API handlers only read the latest snapshot (they never touch the
DCS or PostgreSQL themselves). Pure values and functions, like the rest of ``core``: they live
here because both the agent (which builds them) and the API (which serves them) use them, and
the API never imports the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgha import __version__
from pgha.core.model import ClusterView, PgRole, PgState, SyncMode, Tags
from pgha.core.standby import standby_cluster


@dataclass(frozen=True)
class ActionFailure:
    """An action the agent keeps retrying with backoff (clone, rejoin, start): its kind, the
    member it targets (upstream/leader; "" for none), the last error, how many consecutive
    attempts failed, and when (wall-clock epoch seconds) the first failed and the next may run."""

    action: str
    target: str
    error: str
    failures: int
    since: float
    retry_at: float

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "error": self.error,
                "failures": self.failures, "since": _iso(self.since),
                "retry_at": _iso(self.retry_at)}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


NORMAL_LOG_BACKLOG = 2
"""Log records waiting to be written that are still normal: ``GET /patroni`` shows
``logger_queue_size`` above it (as Patroni does) and ``logger_records_lost`` once any record
was dropped."""


@dataclass(frozen=True)
class AgentStatus:
    """What the agent knew at the end of its last decision cycle."""

    name: str
    scope: str
    tags: Tags
    conn_url: str
    api_url: str
    pg: PgState = field(default_factory=PgState)
    pg_details: Mapping[str, Any] = field(default_factory=dict)  # from Postgres.status()
    view: ClusterView | None = None
    dcs_last_seen: float | None = None  # epoch seconds of the last successful DCS read
    holds_lock: bool = False
    heartbeat: float = 0.0  # monotonic time of the last completed cycle
    reason: str = ""
    message: str = ""
    failsafe_active: bool = False  # primary kept writable by failsafe confirmations
    pending_restart: bool = False  # a changed parameter needs a PostgreSQL restart
    pending_restart_reason: Mapping[str, Any] | None = None  # {param: {old_value, new_value}}
    scheduled_restart: Mapping[str, Any] | None = None  # {schedule: ISO 8601, ...}
    failure: ActionFailure | None = None  # an action being retried with backoff
    slot_problems: Mapping[str, str] = field(default_factory=dict)  # slot -> what went wrong
    watchdog_failed: bool = False  # watchdog.mode required and the device cannot be armed
    logger: tuple[int, int] = (0, 0)  # log records waiting to be written, records dropped

    @property
    def pg_state(self) -> str:
        """Patroni's ``state`` string."""
        if self.pg.busy:
            return self.pg.busy
        if self.failure is not None and not self.pg.running:
            return f"{self.failure.action} failed"  # Patroni's "start failed", and the like
        if self.pg.running:
            return "running" if self.pg.accepting else "starting"
        if self.pg.down_since is not None and not self.pg.stopped_by_agent:
            return "crashed" if self.pg.data.value == "valid" else "stopped"
        return "stopped"

    @property
    def role(self) -> str:
        """Patroni's role: ``standby_leader`` for the lock holder of a standby cluster."""
        if self.pg.running and self.pg.role is PgRole.PRIMARY:
            return "primary"
        if self.pg.running and self.pg.role is PgRole.REPLICA:
            standby = self.view is not None and standby_cluster(self.view) is not None
            return "standby_leader" if standby and self.holds_lock else "replica"
        if self.pg.data.value == "valid":
            return "demoted" if self.pg.control_state.was_primary else "replica"
        return "uninitialized"

    @property
    def is_primary(self) -> bool:
        """Holds the leader lock AND PostgreSQL runs as a primary accepting connections."""
        return (self.holds_lock and self.pg.running and self.pg.accepting
                and self.pg.role is PgRole.PRIMARY)

    @property
    def is_running_replica(self) -> bool:
        return self.pg.running and self.pg.accepting and self.pg.role is PgRole.REPLICA

    def to_patroni_json(self) -> dict[str, Any]:
        """The ``GET /patroni`` body (field names as in Patroni)."""
        out: dict[str, Any] = {
            "state": self.pg_state,
            "role": self.role,
        }
        details = self.pg_details if self.pg.running else {}
        for key in ("postmaster_start_time", "server_version", "xlog", "replication_state",
                    "replication"):
            if key in details:
                out[key] = details[key]
        if self.pg.timeline is not None:
            out["timeline"] = self.pg.timeline
        if self.view is not None:
            out["cluster_unlocked"] = self.view.leader is None
            if self.view.settings.pause:
                out["pause"] = True
        if self.failsafe_active:
            out["failsafe_mode_is_active"] = True
        if self.dcs_last_seen is not None:
            out["dcs_last_seen"] = int(self.dcs_last_seen)
        out["pending_restart"] = self.pending_restart
        if self.pending_restart_reason:
            out["pending_restart_reason"] = dict(self.pending_restart_reason)
        if self.scheduled_restart:
            out["scheduled_restart"] = dict(self.scheduled_restart)
        if self.failure is not None:
            out["last_error"] = self.failure.to_json()
        sync = sync_state(self.view)
        if sync is not None and self.name in sync.standbys:
            out["quorum_standby" if sync.quorum else "sync_standby"] = True
        tags = self.tags.to_json()
        if tags:
            out["tags"] = tags
        if self.pg.sysid:
            out["database_system_identifier"] = self.pg.sysid
        if self.watchdog_failed:
            out["watchdog_failed"] = True
        waiting, lost = self.logger
        if waiting > NORMAL_LOG_BACKLOG:
            out["logger_queue_size"] = waiting
        if lost:
            out["logger_records_lost"] = lost
        out["patroni"] = {"version": __version__, "scope": self.scope, "name": self.name}
        out["pgha"] = {"reason": self.reason, "message": self.message,
                       "holds_lock": self.holds_lock}
        if self.slot_problems:
            out["pgha"]["slots"] = dict(self.slot_problems)
        return out

    def to_member_json(self) -> dict[str, Any]:
        """The ``members/<name>`` value."""
        out: dict[str, Any] = {
            "conn_url": self.conn_url,
            "api_url": self.api_url,
            "state": self.pg_state,
            "role": self.role,
            "version": __version__,
            "pending_restart": self.pending_restart,
        }
        if self.pending_restart_reason:
            out["pending_restart_reason"] = dict(self.pending_restart_reason)
        if self.scheduled_restart:
            out["scheduled_restart"] = dict(self.scheduled_restart)
        if self.failure is not None:
            out["last_error"] = self.failure.to_json()
        if self.pg.wal_position is not None:
            out["xlog_location"] = self.pg.wal_position
        xlog = self.pg_details.get("xlog") if self.pg.running else None
        if isinstance(xlog, Mapping):
            for key, field_name in (("received_location", "receive_lsn"),
                                    ("replayed_location", "replay_lsn")):
                if isinstance(xlog.get(key), int):
                    out[field_name] = xlog[key]
        if self.pg.timeline is not None:
            out["timeline"] = self.pg.timeline
        rstate = self.pg_details.get("replication_state") if self.pg.running else None
        if rstate:
            out["replication_state"] = rstate
        tags = self.tags.to_json()
        if tags:
            out["tags"] = tags
        return out


@dataclass(frozen=True)
class SyncState:
    """Synchronous replication as published in the DCS ``sync`` key: ``standbys`` are the
    synchronous standbys (``quorum`` False, ``synchronous_mode: on``) or the quorum voters
    (``quorum`` True, ``synchronous_mode: quorum``) chosen by leader ``leader``."""

    leader: str
    standbys: frozenset[str]
    quorum: bool


def sync_state(view: ClusterView | None) -> SyncState | None:
    """Who is a synchronous (or quorum) standby, or None when that is not known.

    Known only when synchronous mode is on (``synchronous_mode`` on or ``quorum`` in the
    view's settings), the view carries a ``sync`` key and that key was written by the current
    leader.
    """
    if view is None or view.leader is None or view.sync is None:
        return None
    leader = view.sync.leader
    if leader is None or leader != view.leader.name:
        return None
    mode = view.settings.synchronous_mode
    if mode is SyncMode.OFF:
        return None
    return SyncState(leader=leader, standbys=view.sync.sync_standby - {leader},
                     quorum=mode is SyncMode.QUORUM)
