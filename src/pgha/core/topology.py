"""Where a member replicates and clones from (pure)."""

from __future__ import annotations

from pgha.core.model import ClusterView, LocalState, Member


def clone_source(view: ClusterView, local: LocalState) -> Member | None:
    """A running replica tagged ``clonefrom`` (not us), preferring the first by name."""
    for name in sorted(view.members):
        m = view.members[name]
        if (name != local.name and m.tags.clonefrom and m.state == "running"
                and m.role == "replica" and m.conn_url):
            return m
    return None


def follow_target(view: ClusterView, local: LocalState) -> Member | None:
    """The member a replica should stream from: the ``replicatefrom`` member when it is a
    running replica or primary, else the leader."""
    parent_name = local.tags.replicatefrom
    if parent_name and parent_name != local.name:
        parent = view.members.get(parent_name)
        if parent is not None and parent.state == "running" and parent.conn_url:
            return parent
    return view.leader_member
