"""Standby clusters (pure): a cluster whose dynamic configuration has a ``standby_cluster``
section replicates from a remote PostgreSQL (the primary of another cluster, usually in
another data centre) instead of running a primary of its own.

Rules (Patroni's):

* The member holding the leader lock is the *standby leader*: its PostgreSQL runs as a
  replica streaming from ``standby_cluster.host``/``port`` (with ``primary_slot_name`` on the
  remote, when set) or replaying the remote's archive (``restore_command``), and it never
  promotes. The other members follow the standby leader, as replicas follow a leader.
* A new standby cluster is bootstrapped by cloning the remote (``pg_basebackup`` from it,
  or the section's ``create_replica_methods``, e.g. a restore from the backup repository)
  instead of initdb.
* Failover and switchover happen inside the standby cluster: the new lock holder points its
  replication at the remote; nobody promotes (a switchover is a release of the lock by the
  standby leader).
* Removing the section (``pgha promote-cluster``) makes the standby leader promote; adding it
  to a primary cluster (``pgha demote-cluster``) makes the leader stop and come back as a
  standby leader of the remote (rewound when its timeline diverged and ``use_pg_rewind``
  allows).
* Several hosts are not supported: put a load balancer or a virtual IP in front of the remote
  primary (refused by name where it is written, warned about when found in the DCS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pgha.core.actions import (
    Action,
    CloneReplica,
    Demote,
    Follow,
    HandOver,
    Rejoin,
    ReleaseLeader,
    StartPostgres,
    StopMode,
    Upstream,
)
from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.housekeeping import leader_housekeeping
from pgha.core.model import ClusterView, LocalState
from pgha.core.operator import leader_switchover

REMOTE = "standby_cluster"  # the name a standby leader's upstream goes by
RECOVERY_KEYS = ("restore_command", "archive_cleanup_command", "recovery_min_apply_delay")
KNOWN_KEYS = frozenset({"host", "port", "primary_slot_name", "create_replica_methods",
                        *RECOVERY_KEYS})


@dataclass(frozen=True)
class StandbyCluster:
    """A valid ``standby_cluster`` section."""

    host: str | None = None
    port: int = 5432
    primary_slot_name: str | None = None
    recovery: tuple[tuple[str, str], ...] = ()  # restore_command, ... as given
    methods: tuple[str, ...] = ()  # create_replica_methods for a clone of the remote

    @property
    def remote(self) -> Upstream:
        """What the standby leader follows: the remote host (or no host: the archive only),
        with its slot there, the recovery settings to use and the methods a new member of
        the standby cluster is created with from it (``create_replica_methods``: sections
        ``postgresql.<name>`` of the member's configuration, or ``basebackup``)."""
        url = f"postgres://{_url_host(self.host)}:{self.port}/postgres" if self.host else ""
        return Upstream(REMOTE, url, slot=self.primary_slot_name, recovery=self.recovery,
                        methods=self.methods)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_standby_cluster(value: Any) -> StandbyCluster | str | None:
    """The section, None when absent or empty (a primary cluster), or why it is invalid (one
    line naming the key below ``standby_cluster``)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping):
        return f"expected a mapping of host, port, ..., got {value!r}"
    host = value.get("host")
    if host is not None and (not isinstance(host, str) or not host.strip()):
        return f"host: expected a host name or address, got {host!r}"
    if isinstance(host, str) and ("," in host or " " in host.strip()):
        return ("host: several hosts are not supported; put a load balancer or a virtual IP "
                "in front of the remote primary")
    raw_port = value.get("port", 5432)
    try:
        port = int(str(raw_port).strip())
    except ValueError:
        return f"port: expected a port number, got {raw_port!r}"
    if not 0 < port < 65536:
        return f"port: expected a port number, got {raw_port!r}"
    slot = value.get("primary_slot_name")
    if slot is not None and (not isinstance(slot, str) or not slot):
        return f"primary_slot_name: expected a slot name, got {slot!r}"
    recovery: list[tuple[str, str]] = []
    for key in RECOVERY_KEYS:
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, str | int) or isinstance(item, bool) or "\n" in str(item):
            return f"{key}: expected a single-line value, got {item!r}"
        recovery.append((key, str(item)))
    methods = value.get("create_replica_methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
        return f"create_replica_methods: expected a list of method names, got {methods!r}"
    methods_given = tuple(methods)
    if host is None and not any(k == "restore_command" for k, _ in recovery) \
            and not methods_given:
        return ("needs a host to stream from, a restore_command to replay the archive with "
                "or create_replica_methods")
    return StandbyCluster(host.strip() if isinstance(host, str) else None, port, slot,
                          tuple(recovery), methods_given)


def standby_cluster(view: ClusterView) -> StandbyCluster | None:
    """The view's valid ``standby_cluster`` section (an invalid one counts as absent: the
    observer logged it)."""
    parsed = parse_standby_cluster((view.config or {}).get("standby_cluster"))
    return parsed if isinstance(parsed, StandbyCluster) else None


def new_cluster_standby(view: ClusterView, local: LocalState) -> StandbyCluster | None:
    """Whether a cluster being created is a standby cluster: from the DCS configuration, or
    while there is none yet, from the ``bootstrap.dcs`` this member would seed it with."""
    config = view.config if view.config is not None else local.bootstrap_config
    parsed = parse_standby_cluster((config or {}).get("standby_cluster"))
    return parsed if isinstance(parsed, StandbyCluster) else None




def follow_remote(local: LocalState, standby: StandbyCluster) -> tuple[Action, ...]:
    """What a standby leader does instead of promoting: point its replication at the remote
    (nothing when it already does)."""
    return () if local.pg.upstream == REMOTE else (Follow(standby.remote),)


def standby_leader(view: ClusterView, local: LocalState, standby: StandbyCluster,
                   now: float) -> Decision:
    """A running replica holding the lock in a standby cluster. A switchover to a fit
    candidate (checked as for a primary) is a release of the lock: nothing is written here,
    so there is no final WAL to hand over; the candidate takes the lock and follows the
    remote, this member then follows the candidate."""
    switchover = leader_switchover(view, local)
    if switchover is not None:
        return replace(switchover, actions=tuple(
            ReleaseLeader() if isinstance(a, HandOver) else a for a in switchover.actions))
    target = standby.host or "the archive"
    return _d(Reason.STANDBY_LEADER, f"standby leader replicating from {target}",
              *follow_remote(local, standby), *leader_housekeeping(view, local, now))


def demote_cluster(standby: StandbyCluster) -> Decision:
    """A primary holding the lock when ``standby_cluster`` appeared (``demote-cluster``):
    stop it (keeping the lock); it comes back as a standby leader of the remote."""
    target = standby.host or "the archive"
    return _d(Reason.DEMOTE_CLUSTER, f"standby_cluster configured: demoting to a standby "
              f"leader of {target}", Demote(StopMode.FAST))


def start_standby_leader(view: ClusterView, local: LocalState,
                         standby: StandbyCluster) -> Decision:
    """A stopped member holding the lock in a standby cluster: a former primary is checked
    against the remote's timeline history first (rewound when needed), other data starts as
    a replica of the remote."""
    remote = standby.remote
    if local.pg.control_state.was_primary and remote.conn_url:
        return _d(Reason.REJOIN, "rejoining the remote primary as a standby leader after "
                  "checking for divergence", Rejoin(remote, view.settings.use_pg_rewind))
    return _d(Reason.START_REPLICA, "holding the lock in a standby cluster: starting as a "
              "standby leader", StartPostgres("replica", remote))


def bootstrap_standby(standby: StandbyCluster) -> Decision:
    """A new standby cluster: the data is cloned from the remote (every member that starts
    before the cluster is initialized clones it; the first to publish it writes
    ``initialize``, the race then picks the standby leader)."""
    remote = standby.remote
    if not remote.conn_url and not remote.methods:
        return _d(Reason.WAITING_FOR_LEADER, "standby cluster without a host: a new member "
                  "needs create_replica_methods to restore from the archive")
    source = standby.host or "its create_replica_methods"
    return _d(Reason.CLONE, f"bootstrapping a standby cluster from {source}",
              CloneReplica(remote), StartPostgres("replica", remote))
