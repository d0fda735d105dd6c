"""Whose leader lock it is (DESIGN.md safety rule 7).

The leader key holds a member name and is bound to a session (``Leader.session``). The lock is
ours only when the key names us AND is bound to our current session (``LocalState.session_id``).
A key that merely holds our name - left by a previous process of this agent whose session has
not expired yet, or written by another agent started with our name - is not our lock: the core
never refreshes, releases or acts as leader on it.

A restarted agent whose PostgreSQL runs as the primary that key protects (or last ran as it and
is down) rebinds the key to its new session with a compare-and-set on the key's revision
(:class:`~pgha.core.actions.RebindLeader`), and counts as leader only once a later view shows
the key bound to its session. In every other state (a replica, PostgreSQL starting, data that
cannot run as this cluster's primary, maintenance mode without a running primary) it leaves the
key alone until that session expires. A writable primary whose own lease is not confirmed
demotes first (the fail-closed rule of :mod:`pgha.core.decide` covers a key naming us, bound or
not).
"""

from __future__ import annotations

from pgha.core.actions import RebindLeader
from pgha.core.decision import Decision, Reason, decision
from pgha.core.model import ClusterView, DataState, LocalState, PgRole


def names_us(view: ClusterView | None, local: LocalState) -> bool:
    """The leader key holds our name (whatever session it is bound to)."""
    return view is not None and view.leader is not None and view.leader.name == local.name


def holds_lock(view: ClusterView | None, local: LocalState) -> bool:
    """The leader key holds our name and is bound to our current session."""
    return (names_us(view, local) and local.session_id is not None
            and view is not None and view.leader is not None
            and view.leader.session == local.session_id)


def stale_lock(view: ClusterView | None, local: LocalState) -> bool:
    """The leader key holds our name but is bound to another session (or to none)."""
    return names_us(view, local) and not holds_lock(view, local)


def _data_is_ours(view: ClusterView, local: LocalState) -> bool:
    pg = local.pg
    return (pg.data is DataState.VALID and bool(view.initialize)
            and (pg.sysid is None or pg.sysid == view.initialize))


def stale_lock_decision(view: ClusterView, local: LocalState) -> Decision | None:
    """The decision while the leader key names us but is not bound to our session; None when
    the key does not name us or is ours. See the module docstring."""
    if not stale_lock(view, local):
        return None
    leader = view.leader
    assert leader is not None  # names_us
    pg = local.pg
    bound = f"bound to session {leader.session}" if leader.session else "bound to no session"
    head = (f"the leader key names us but is {bound}, not to ours "
            f"({local.session_id or 'none yet'})")
    paused = view.settings.pause
    prefix = "paused: " if paused else ""
    if pg.busy is not None:
        return decision(Reason.BUSY, f"{pg.busy} in progress; {head}")
    writable = pg.running and pg.accepting and pg.role is PgRole.PRIMARY
    down_primary = (not pg.running and pg.control_state.was_primary and not paused)
    if (writable or down_primary) and _data_is_ours(view, local):
        return decision(Reason.LEADER_REBIND,
                        f"{prefix}{head}: rebinding it to our session before acting as leader",
                        RebindLeader(leader.revision))
    return decision(Reason.LEADER_KEY_NOT_OURS,
                    f"{prefix}{head}: not our lock; leaving it alone until that session "
                    "expires")
