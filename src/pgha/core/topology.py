"""Where a member replicates and clones from, and what a replica of a running leader does
(pure)."""

from __future__ import annotations

from pgha.core.actions import Follow, StopMode, StopPostgres
from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.decision import upstream_of as _upstream
from pgha.core.housekeeping import replica_slots
from pgha.core.model import ClusterView, LocalState, Member


def _cascade_parent(view: ClusterView, local: LocalState) -> Member | None:
    """The ``replicatefrom`` member when it runs (as a replica or the primary) and can be
    reached; None otherwise (then the leader is used)."""
    parent_name = local.tags.replicatefrom
    if not parent_name or parent_name == local.name:
        return None
    parent = view.members.get(parent_name)
    if parent is not None and parent.state == "running" and parent.conn_url:
        return parent
    return None


def clone_source(view: ClusterView, local: LocalState) -> Member | None:
    """Where a new replica is cloned from: its running ``replicatefrom`` member, else a
    running replica tagged ``clonefrom`` (not us, the first by name); None: the leader."""
    parent = _cascade_parent(view, local)
    if parent is not None:
        return parent
    for name in sorted(view.members):
        m = view.members[name]
        if (name != local.name and m.tags.clonefrom and m.state == "running"
                and m.role == "replica" and m.conn_url):
            return m
    return None


def follow_target(view: ClusterView, local: LocalState) -> Member | None:
    """The member a replica should stream from: the ``replicatefrom`` member when it is a
    running replica or primary, else the leader."""
    return _cascade_parent(view, local) or view.leader_member


def _replica_diverged(view: ClusterView, local: LocalState, leader: Member) -> bool:
    """A running replica is past the point where its timeline ended in the cluster history.
    Not judged for a ``nostream`` member: with no WAL receiver its timeline is known only
    from its last restartpoint, so after every failover it would look diverged while it
    replays the new timeline from the archive; its data is checked when it rejoins (a stop,
    a restart) instead."""
    tl, pos = local.pg.timeline, local.pg.wal_position
    if tl is None or pos is None or leader.timeline is None or tl >= leader.timeline:
        return False
    for entry in view.history:
        if entry.timeline == tl:
            return pos > entry.lsn
    return False


def replica_of_leader(view: ClusterView, local: LocalState, leader_name: str,
                       now: float) -> Decision:
    """A running replica while ``leader_name`` holds the lock: stream from the right member,
    or stop to rejoin when it went past the end of its timeline."""
    leader = view.leader_member
    if leader is None or not leader.conn_url:
        return _d(Reason.WAITING_FOR_LEADER,
                  f"leader {leader_name} has not published its member key yet")
    if not local.tags.nostream and _replica_diverged(view, local, leader):
        return _d(Reason.REPLICA_DIVERGED,
                  f"replica went past the end of timeline {local.pg.timeline}: stopping "
                  "to rejoin", StopPostgres(StopMode.FAST))
    target = follow_target(view, local) or leader
    if local.pg.upstream != target.name:
        return _d(Reason.FOLLOW, f"following {target.name}", Follow(_upstream(target)))
    slots = replica_slots(view, local, now, leader)
    if isinstance(slots, Decision):
        return slots
    source = "the archive (nostream)" if local.tags.nostream else target.name
    return _d(Reason.REPLICA_HEALTHY, f"replica following {source}", *slots)
