"""The leader race: whether a healthy replica may take a free leader lock (pure).

DESIGN.md safety rule 3: a replica joins the race only if it is not ``nofailover``, its
watchdog can be armed when ``watchdog.mode`` is ``required`` (``LocalState.watchdog_ok``), its
``pre_promote`` did not fail less than ``ttl`` ago (``LocalState.pre_promote_failed``), no
primary asked it to stay out (failsafe), its own WAL position is known and within
``maximum_lag_on_failover`` of the last known leader position, it is not behind the cluster's
timeline (with ``check_timeline``), and no reachable peer runs as primary, is ahead of it, or
has the same position and a higher ``failover_priority``. A peer whose agent does not answer but
whose PostgreSQL accepts writes counts as a running primary (the observer checks such a peer's
server directly): a dead or frozen agent does not make its primary stop taking writes, so
promoting beside it would make two. Unreachable peers (``None`` in ``local.peers``) and peers
that may not become leader are not compared. In synchronous mode
(safety rule 8) it must also be allowed by the ``sync`` key (:func:`pgha.core.sync.
failover_refusal`: a voter, or enough voters' votes in quorum mode), and only the key's voters
are compared: not its former leader (it may be ahead with WAL no standby acknowledged), nor a
member outside the key (it cannot win, and an ahead one must not keep the voters out).

Each refusal has its own reason code (see :data:`pgha.core.decision.RACE_REFUSALS`).

The rules are also applied to each peer by :mod:`pgha.core.explain` (why each member may or
may not take the lock): :func:`member_refusal` (a member's own rules, from its tags, WAL
position and timeline), :func:`peer_refusal` (one peer against this member) and
:func:`compared_peers`; :func:`race_refusal` is built from the same functions.
"""

from __future__ import annotations

from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.model import ClusterView, LocalState, PeerStatus, SyncMode, Tags
from pgha.core.sync import failover_refusal


def cluster_timeline(view: ClusterView) -> int | None:
    """The latest timeline the cluster is known to have reached: the highest timeline a member
    published, or one past the last timeline the ``history`` key says ended."""
    tls = [m.timeline for m in view.members.values() if m.timeline is not None]
    tls += [h.timeline + 1 for h in view.history]
    return max(tls) if tls else None


def race_refusal(view: ClusterView, local: LocalState) -> Decision | None:
    """Why this member must stay out of the leader race: a Decision without actions whose
    reason is one of the ``RACE_REFUSED_*`` codes; None when it may race. The first rule that
    applies wins, in the order of the module docstring."""
    refusal = _own_refusal(view, local)
    position = local.pg.wal_position  # known when _own_refusal found nothing
    if refusal is None and position is not None:
        refusal = _peer_refusal(local, position, compared_peers(view))
    if refusal is None:
        refusal = sync_refusal(view, local)
    return refusal


def compared_peers(view: ClusterView) -> frozenset[str] | None:
    """The peers whose WAL position counts in the race; None: every peer. In synchronous mode
    with a ``sync`` key naming a leader: its voters but that leader. The key's leader may be
    ahead with WAL no standby acknowledged; a member outside the key may not take the lock
    and holds no acknowledged commit the voters lack, so its position decides nothing --
    comparing it would let an ineligible member (say the former primary, after another
    member took the key over and died before promoting) keep every eligible one out of the
    race for good."""
    key = view.sync
    if view.settings.synchronous_mode is SyncMode.OFF or key is None or not key.leader:
        return None
    return frozenset(key.sync_standby - {key.leader})


def sync_refusal(view: ClusterView, local: LocalState) -> Decision | None:
    """The synchronous-mode refusal of ``local`` (:func:`pgha.core.sync.failover_refusal`) as
    a ``RACE_REFUSED_NOT_SYNC`` / ``RACE_REFUSED_QUORUM`` decision; None when it may race."""
    why = failover_refusal(view, local)
    if why is None:
        return None
    reason = (Reason.RACE_REFUSED_QUORUM if view.sync is not None and view.sync.quorum > 0
              else Reason.RACE_REFUSED_NOT_SYNC)
    return _d(reason, f"synchronous mode: {why}")


def _own_refusal(view: ClusterView, local: LocalState) -> Decision | None:
    """Refusals that depend on this member alone (and the DCS view): :func:`member_refusal`,
    with a required watchdog that cannot be armed, then a ``pre_promote`` that failed less
    than ``ttl`` ago, right after ``nofailover`` (only this member knows those)."""
    if local.tags.can_be_leader and not local.watchdog_ok:
        return _d(Reason.RACE_REFUSED_WATCHDOG,
                  "watchdog mode is required and the watchdog device cannot be armed")
    if local.tags.can_be_leader and local.pre_promote_failed:
        return _d(Reason.RACE_REFUSED_PRE_PROMOTE,
                  "postgresql.pre_promote failed less than ttl ago: backing off")
    return member_refusal(view, local.tags, local.pg.wal_position, local.pg.timeline,
                          local.failsafe_primary)


def member_refusal(view: ClusterView, tags: Tags, position: int | None, timeline: int | None,
                   failsafe_primary: str | None = None) -> Decision | None:
    """A member's own rules, first match wins: ``nofailover`` (or ``failover_priority`` 0),
    a primary that asked it to stay out (failsafe), WAL position unknown, lag past
    ``maximum_lag_on_failover`` behind ``view.optime``, timeline behind the cluster's (with
    ``check_timeline``). Messages are worded for the member itself."""
    if not tags.can_be_leader:
        return _d(Reason.RACE_REFUSED_NOFAILOVER, "tagged nofailover: never taking the lock")
    if failsafe_primary is not None:
        return _d(Reason.RACE_REFUSED_FAILSAFE_PRIMARY_ALIVE,
                  f"primary {failsafe_primary} confirmed it is alive (failsafe)")
    if position is None:
        return _d(Reason.RACE_REFUSED_POSITION_UNKNOWN, "own WAL position unknown")
    lag_limit = view.settings.maximum_lag_on_failover
    if view.optime is not None and view.optime - position > lag_limit:
        return _d(Reason.RACE_REFUSED_LAG,
                  f"lag {view.optime - position} bytes behind the last leader position "
                  f"exceeds maximum_lag_on_failover {lag_limit}")
    cluster_tl = cluster_timeline(view)
    if (view.settings.check_timeline and cluster_tl is not None and timeline is not None
            and timeline < cluster_tl):
        return _d(Reason.RACE_REFUSED_TIMELINE_BEHIND,
                  f"timeline {timeline} behind the cluster's {cluster_tl}")
    return None


def _peer_refusal(local: LocalState, mine: int, compared: frozenset[str] | None
                  ) -> Decision | None:
    """Refusals because of a reachable peer, the first by peer name (see
    :func:`peer_refusal`)."""
    for name in sorted(local.peers):
        peer = local.peers[name]
        if name == local.name or peer is None:
            continue
        refusal = peer_refusal(local, mine, name, peer, compared)
        if refusal is not None:
            return refusal
    return None


def peer_refusal(local: LocalState, mine: int | None, name: str, peer: PeerStatus,
                 compared: frozenset[str] | None) -> Decision | None:
    """Whether reachable ``peer`` (member ``name``) keeps this member out of the race: it
    runs as a primary; or it may become leader, counts (in ``compared``; None: every peer
    does) and is ahead of ``mine`` (this member's WAL position; None: not compared), or at
    the same position with a higher ``failover_priority``."""
    if peer.is_running_primary:
        how = (" (its PostgreSQL accepts writes; its agent does not answer)"
               if peer.agent_silent else "")
        return _d(Reason.RACE_REFUSED_PRIMARY_RUNNING, f"primary {name} is still running{how}")
    if (compared is not None and name not in compared) or not peer.tags.can_be_leader \
            or peer.wal_position is None or mine is None:
        return None
    if peer.wal_position > mine:
        return _d(Reason.RACE_REFUSED_PEER_AHEAD,
                  f"{name} is ahead ({peer.wal_position} > {mine})")
    if peer.wal_position == mine and peer.tags.failover_priority > local.tags.failover_priority:
        return _d(Reason.RACE_REFUSED_PEER_PRIORITY,
                  f"{name} has the same WAL position and a higher failover_priority "
                  f"({peer.tags.failover_priority} > {local.tags.failover_priority})")
    return None
