"""Why a member did or did not take a free leader lock (pure): one :class:`Standing` per member
the decision weighed, for the log and ``GET /decisions``.

:func:`explain` takes the ClusterView and LocalState a decision saw and the decision itself,
and applies the rules of :mod:`pgha.core.race` (and, through it, :mod:`pgha.core.sync`) to
every member; it never restates a rule:

* this member (always first): the decision's own verdict: ``eligible`` when it takes the lock,
  else its refusal code (the reason without its ``race_refused_`` / ``candidate_refused_``
  prefix) and message;
* every other member (by name): the members of the view, the peers asked before the race and
  the leader that last wrote the ``status`` key (its member key may have expired with it):
  ``unreachable`` (neither agent nor PostgreSQL answered), ``primary_running``, ``ahead`` /
  ``higher_priority`` (it keeps this member out), its own refusal (``nofailover``, ``lag``,
  ``position_unknown``, ``timeline_behind``, ``not_sync``, ``quorum``: judged with this
  member's view), else ``behind`` (it may race, but does not beat this member).

For a named switchover/failover candidate (``candidate_refused_*``, ``switchover_candidate``)
positions are not compared (the leader compared them before handing over): the other members
are only ``unreachable``, ``primary_running`` or ``not_compared``. Decisions about anything
else than a free lock have no standings (an empty tuple).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pgha.core.decision import RACE_REFUSALS, Decision, Reason
from pgha.core.model import ClusterView, LocalState, PeerStatus, PgState, Tags
from pgha.core.race import (
    cluster_timeline,
    compared_peers,
    member_refusal,
    peer_refusal,
    sync_refusal,
)

__all__ = ["CODES", "Standing", "explain", "size_text"]

ELIGIBLE = "eligible"
BEHIND = "behind"
AHEAD = "ahead"
HIGHER_PRIORITY = "higher_priority"
PRIMARY_RUNNING = "primary_running"
UNREACHABLE = "unreachable"
NOT_COMPARED = "not_compared"

_PEER_CODES = {Reason.RACE_REFUSED_PRIMARY_RUNNING: PRIMARY_RUNNING,
               Reason.RACE_REFUSED_PEER_AHEAD: AHEAD,
               Reason.RACE_REFUSED_PEER_PRIORITY: HIGHER_PRIORITY}

_CANDIDATE_DECISIONS = frozenset({Reason.SWITCHOVER_CANDIDATE}) | frozenset(
    r for r in RACE_REFUSALS if r.name.startswith("CANDIDATE_REFUSED_"))

MB = 1024 * 1024


def code_of(reason: Reason) -> str:
    """The standing code of a refusal reason: its value without the refusal prefix."""
    return reason.value.removeprefix("race_refused_").removeprefix("candidate_refused_")


CODES = frozenset({ELIGIBLE, BEHIND, AHEAD, HIGHER_PRIORITY, PRIMARY_RUNNING, UNREACHABLE,
                   NOT_COMPARED} | {code_of(r) for r in RACE_REFUSALS})
"""Every standing code (refusal codes of this member and of peers included)."""


def size_text(n: int) -> str:
    """Bytes for people: ``3 MB``, ``1.5 MB``, ``16 kB``, ``100 bytes``."""
    if abs(n) >= MB:
        return f"{n / MB:.3g} MB"
    if abs(n) >= 1024:
        return f"{n / 1024:.3g} kB"
    return f"{n} bytes"


def _lsn(n: int | None) -> str:
    return "unknown" if n is None else f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Standing:
    """One member's place in a decision about the free lock.

    ``code``: see the module docstring; ``eligible``: it may take the lock as far as this
    decision can tell (``eligible``, ``behind``, ``ahead``, ``higher_priority``).
    ``summary``: a few words for people (``lag 3 MB > 1 MB``); ``detail``: the rule's
    message. The facts the rule weighed:
    ``position`` (WAL, bytes), ``lag`` (bytes behind the last leader position, never
    negative; None when either is unknown), ``limit`` (``maximum_lag_on_failover``, with
    code ``lag``), ``priority`` (``failover_priority``), ``timeline``."""

    name: str
    code: str
    summary: str
    detail: str
    eligible: bool = False
    position: int | None = None
    lag: int | None = None
    limit: int | None = None
    priority: int | None = None
    timeline: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "code": self.code, "summary": self.summary,
                "detail": self.detail, "eligible": self.eligible, "position": self.position,
                "lag": self.lag, "limit": self.limit, "priority": self.priority,
                "timeline": self.timeline}


def explain(view: ClusterView, local: LocalState, decision: Decision) -> tuple[Standing, ...]:
    """The standings behind ``decision`` (taken on ``view`` and ``local``): this member first,
    then the others by name; empty unless the decision is about the free lock (see the module
    docstring)."""
    candidate = decision.reason in _CANDIDATE_DECISIONS
    if not candidate and decision.reason is not Reason.RACE \
            and decision.reason not in RACE_REFUSALS:
        return ()
    out = [_own(view, local, decision)]
    compared = frozenset() if candidate else compared_peers(view)
    for name in _others(view, local):
        out.append(_other(view, local, name, compared, candidate))
    return tuple(out)


def _others(view: ClusterView, local: LocalState) -> list[str]:
    names = set(view.members) | set(local.peers)
    if view.status_leader is not None:
        names.add(view.status_leader[0])
    names.discard(local.name)
    return sorted(names)


def _facts(view: ClusterView, tags: Tags, position: int | None,
           timeline: int | None) -> dict[str, Any]:
    lag = None if view.optime is None or position is None else max(0, view.optime - position)
    return {"position": position, "lag": lag, "priority": tags.failover_priority,
            "timeline": timeline}


def _own(view: ClusterView, local: LocalState, decision: Decision) -> Standing:
    facts = _facts(view, local.tags, local.pg.wal_position, local.pg.timeline)
    if decision.reason not in RACE_REFUSALS:
        return Standing(local.name, ELIGIBLE, "taking the lock", decision.message,
                        eligible=True, **facts)
    code = code_of(decision.reason)
    return _standing(view, local.name, code, decision.message, facts, decision.message)


def _standing(view: ClusterView, name: str, code: str, detail: str, facts: dict[str, Any],
              fallback: str) -> Standing:
    """A refused member's standing, its summary made from the facts."""
    limit = view.settings.maximum_lag_on_failover
    summaries = {
        "nofailover": "nofailover",
        "lag": f"lag {size_text(facts['lag'] or 0)} > {size_text(limit)}",
        "position_unknown": "WAL position unknown",
        "timeline_behind": f"timeline {facts['timeline']} behind "
                           f"{cluster_timeline(view)}",
        "not_sync": "not in the synchronous set",
        "quorum": "too few quorum votes",
    }
    return Standing(name, code, summaries.get(code, fallback), detail,
                    limit=limit if code == "lag" else None, **facts)


def _other(view: ClusterView, local: LocalState, name: str,
           compared: frozenset[str] | None, candidate: bool) -> Standing:
    peer = local.peers.get(name)
    member = view.members.get(name)
    if peer is None:
        why = ("not in the DCS any more, and its PostgreSQL did not answer"
               if member is None else "neither its agent nor its PostgreSQL answered")
        tags = member.tags if member is not None else Tags()
        position = member.xlog_location if member is not None else None
        timeline = member.timeline if member is not None else None
        return Standing(name, UNREACHABLE, UNREACHABLE, why,
                        **_facts(view, tags, position, timeline))
    facts = _facts(view, peer.tags, peer.wal_position, peer.timeline)
    mine = local.pg.wal_position
    versus = peer_refusal(local, mine, name, peer, compared)
    if versus is not None:
        code = _PEER_CODES.get(versus.reason, code_of(versus.reason))
        summary = {
            PRIMARY_RUNNING: "running primary" + (" (agent silent)" if peer.agent_silent
                                                  else ""),
            AHEAD: f"ahead ({_lsn(peer.wal_position)} > {_lsn(mine)})",
            HIGHER_PRIORITY: f"higher failover_priority ({peer.tags.failover_priority} > "
                             f"{local.tags.failover_priority})",
        }.get(code, versus.message)
        return Standing(name, code, summary, versus.message,
                        eligible=code in (AHEAD, HIGHER_PRIORITY), **facts)
    if candidate:
        return Standing(name, NOT_COMPARED, "not compared",
                        "positions are not compared with a named candidate's", **facts)
    own = member_refusal(view, peer.tags, peer.wal_position, peer.timeline) \
        or sync_refusal(view, _as_local(local, name, peer))
    if own is not None:
        return _standing(view, name, code_of(own.reason), own.message, facts, own.message)
    return Standing(name, BEHIND, f"not ahead ({_lsn(peer.wal_position)})",
                    f"may race, but is not ahead of {local.name}", eligible=True, **facts)


def _as_local(local: LocalState, name: str, peer: PeerStatus) -> LocalState:
    """What ``peer`` would see in the race as far as this member knows: its own position and
    tags, and the other peers' statuses with this member's in place of its own."""
    me = PeerStatus(local.name, local.pg.role.value if local.pg.role is not None else "",
                    "running" if local.pg.running else "stopped", local.pg.wal_position,
                    local.pg.timeline, local.tags)
    peers = {n: p for n, p in local.peers.items() if n != name}
    peers[local.name] = me
    return replace(local, name=name, tags=peer.tags,
                   pg=PgState(wal_position=peer.wal_position, timeline=peer.timeline),
                   peers=peers, failsafe_primary=None)
