"""What a simulated agent learns from its peers (pgha.agent.observe.Observer.peer_statuses).

Each other member's ``GET /patroni`` answers while its agent lives (and a random share of the
calls is lost, ``Sim.peer_loss``). Whose agent does not answer -- a listed member, or, once its
keys expired with its session, the leader named in the ``status`` key, any member seen
before or the upstream our replica streams from -- has its PostgreSQL asked directly: a
node that is up with a server accepting writes is reported as a running primary
(``agent_silent``), as the real observer does. A dead node answers nothing, nor does one
across a network partition (``FakePostgres.isolated`` on either side).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pgha.core.model import ClusterView, Member, PeerStatus, PgRole, Tags

if TYPE_CHECKING:
    from tests.sim.agent_parts import SimMember
    from tests.sim.cluster import Sim


def rest_status(sim: Sim, asker: SimMember, name: str) -> PeerStatus | None:
    """A peer's ``GET /patroni`` (None: unreachable) as pgha's REST API answers it: the
    status its agent last published, with the WAL position its PostgreSQL has now
    (:meth:`pgha.agent.publish.Publisher.live`) while it still runs in the role published.
    ``stale_peer_positions`` (a mutation) answers the position of the peer's last cycle
    instead."""
    p = sim.members[name]
    if not p.agent_alive or p.publisher is None or not asker.pg.reaches(p.pg) \
            or sim.rng.random() < sim.peer_loss:
        return None
    status = p.publisher.own_peer_status()
    published = p.publisher.status.pg
    if status is not None and not sim.stale_peer_positions and p.pg.running \
            and p.pg.role is published.role and published.running:
        status = replace(status, wal_position=p.pg.state().wal_position)
    return status


def writable_server(sim: Sim, asker: SimMember, name: str,
                    member: Member | None) -> PeerStatus | None:
    """``name``'s PostgreSQL asked directly: a running primary when its node is up and its
    server accepts writes (the member key's timeline and tags when known, the server's
    position)."""
    p = sim.members.get(name)
    if p is None or not p.pg.node_up or not p.pg.writable or not asker.pg.reaches(p.pg):
        return None
    return PeerStatus(name, "primary", "running", p.pg.wal,
                      member.timeline if member is not None else None,
                      member.tags if member is not None else Tags(), agent_silent=True)


def vanished_servers(m: SimMember, view: ClusterView) -> dict[str, Member | None]:
    """The servers a member whose keys expired may still run on (the observer's
    ``_vanished_servers``): the leader that last wrote the ``status`` key, every member this
    agent has seen that is no longer listed (the last leader first) and the upstream our
    replica streams from (PostgreSQL's own setting: it outlives an agent restart). None while
    a leader holds the lock."""
    if view.leader is not None:
        return {}
    known: dict[str, Member | None] = {}
    if view.status_leader is not None:
        known[view.status_leader[0]] = m.known_members.get(view.status_leader[0])
    if m.last_leader is not None:
        known[m.last_leader.name] = m.last_leader
    known.update(m.known_members)
    upstream = m.pg.upstream if m.pg.running and m.pg.role is PgRole.REPLICA else None
    if upstream is not None:
        known.setdefault(upstream, None)
    return {name: member for name, member in known.items()
            if name not in view.members and name != m.name}


def peer_statuses(sim: Sim, m: SimMember, view: ClusterView) -> dict[str, PeerStatus | None]:
    """Every other member's status, silent agents' servers asked directly."""
    statuses = {n: rest_status(sim, m, n) for n in view.members if n != m.name}
    for name, member in vanished_servers(m, view).items():
        found = writable_server(sim, m, name, member)
        if found is not None:
            statuses[name] = found
    for name, status in list(statuses.items()):
        if status is None and name in view.members:
            statuses[name] = writable_server(sim, m, name, view.members[name])
    return statuses


def note_view(m: SimMember, view: ClusterView) -> None:
    """Remember the leader's member key (the observer's ``last_leader``) and every member key
    (``known_members``)."""
    if view.leader is not None and view.leader.name in view.members:
        m.last_leader = view.members[view.leader.name]
    m.known_members.update(view.members)
