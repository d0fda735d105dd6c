"""Where a member replicates and clones from (pure)."""

from __future__ import annotations

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
