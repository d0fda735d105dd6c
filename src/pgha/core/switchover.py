"""Planned switchover and manual failover: the ``failover`` key and candidate checks (pure).

The ``failover`` key (``{"leader": ..., "member": ..., "scheduled_at": ...}``, Patroni's layout)
holds one operator request. Who acts on it (see :mod:`pgha.core.decide`):

* the leader, once it is due: checks the candidate (named, or the healthiest replica), then
  hands over (stop PostgreSQL cleanly, wait until the candidate has received the final WAL,
  release the lock) or, when no candidate is fit, deletes the request;
* the named candidate, when the lock is free: takes it and promotes without comparing WAL
  positions (the leader already checked them), then deletes the request;
* every other member stays out of the race while the named candidate answers as running, and
  races normally when it does not (a candidate that died must not leave the cluster without
  a leader).

The same checks answer the REST API's ``POST /switchover`` before the key is written, so an
impossible request is refused with a reason (412) instead of being stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgha.core.model import ClusterView, PeerStatus
from pgha.core.sync import switchover_refusal, sync_candidates


@dataclass(frozen=True)
class FailoverRequest:
    """A parsed ``failover`` key. ``scheduled_at`` is epoch seconds (None: now)."""

    leader: str | None = None
    candidate: str | None = None
    scheduled_at: float | None = None

    def due(self, wall_time: float) -> bool:
        return self.scheduled_at is None or self.scheduled_at <= wall_time

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.leader:
            out["leader"] = self.leader
        if self.candidate:
            out["member"] = self.candidate
        if self.scheduled_at is not None:
            out["scheduled_at"] = datetime.fromtimestamp(self.scheduled_at, UTC).isoformat()
        return out


def parse_failover(raw: Mapping[str, Any] | None) -> FailoverRequest | None:
    """The request in a ``failover`` key value, or None when there is none or it is unusable
    (neither a leader nor a candidate, wrong types, an unparsable or naive ``scheduled_at``).
    ``master`` is accepted for ``leader`` and ``candidate`` for ``member``."""
    if not raw:
        return None
    leader = raw.get("leader", raw.get("master"))
    candidate = raw.get("member", raw.get("candidate"))
    if leader is not None and not isinstance(leader, str):
        return None
    if candidate is not None and not isinstance(candidate, str):
        return None
    if not leader and not candidate:
        return None
    scheduled: float | None = None
    at = raw.get("scheduled_at")
    if at is not None:
        if not isinstance(at, str):
            return None
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
        scheduled = when.timestamp()
    return FailoverRequest(leader or None, candidate or None, scheduled)


def request_for_leader(raw: Mapping[str, Any] | None, name: str) -> FailoverRequest | None:
    """The request in a ``failover`` key value that member ``name`` acts on as the leader (it
    names ``name`` as leader, or no leader), or None. Whether it is due is not checked."""
    request = parse_failover(raw)
    if request is None or request.leader not in (None, name):
        return None
    return request


def candidate_problem(view: ClusterView, name: str, peer: PeerStatus | None, *,
                      check_lag: bool, check_sync: bool | None = None) -> str | None:
    """Why member ``name`` cannot take over now, or None when it can. ``peer`` is its
    ``/patroni`` answer (None: unreachable). With ``check_lag`` (a switchover, where a leader
    exists) it must also be within ``maximum_lag_on_failover`` of the leader. With
    ``check_sync`` (default: ``check_lag``; a switchover, where the request names the leader)
    it must in synchronous mode be listed in the leader's ``sync`` key: a failover to an
    asynchronous member is the operator's choice to accept a loss."""
    member = view.members.get(name)
    if member is None:
        return f"{name} is not a member of the cluster"
    if not member.tags.can_be_leader:
        return f"{name} is tagged nofailover"
    if check_sync is None:
        check_sync = check_lag
    if check_sync and (refusal := switchover_refusal(view, name)) is not None:
        return refusal
    if peer is None:
        return f"{name} does not answer on its REST API"
    if peer.state != "running":
        return f"{name} is not running ({peer.state})"
    if not peer.tags.can_be_leader:
        return f"{name} is tagged nofailover"
    if check_lag:
        lag = view.lag_of(peer.wal_position)
        limit = view.settings.maximum_lag_on_failover
        if lag is None:
            return f"the WAL position of {name} is unknown"
        if lag > limit:
            return f"{name} lags {lag} bytes behind, more than maximum_lag_on_failover {limit}"
    return None


def pick_candidate(view: ClusterView, peers: Mapping[str, PeerStatus | None],
                   me: str) -> str | None:
    """The healthiest member other than ``me`` that may take over (in synchronous mode one of
    the ``sync`` key's): highest WAL position, then highest ``failover_priority``, then
    name. None when nobody is fit."""
    fit = sorted((-(p.wal_position or 0), -p.tags.failover_priority, name)
                 for name, p in peers.items()
                 if name != me and p is not None and p.role == "replica"
                 and candidate_problem(view, name, p, check_lag=True) is None)
    return fit[0][2] if fit else None


def switchover_problem(view: ClusterView, request: FailoverRequest,
                       peers: Mapping[str, PeerStatus | None], *,
                       check_health: bool = True) -> str | None:
    """Why ``request`` cannot be carried out now (the REST API answers 412 with it), or None.
    With a leader the candidate (or some candidate) must pass :func:`candidate_problem` with
    the lag check; without one (manual failover) the named candidate only has to be fit.
    Without ``check_health`` (a scheduled request: health is checked when it comes due) only
    the names are checked."""
    leader = view.leader.name if view.leader else None
    if request.leader and request.leader != leader:
        return (f"leader name does not match: {request.leader} is not the leader"
                if leader else "leader name does not match: there is no leader")
    others = [n for n in view.members if n != leader]
    if leader is not None and not others:
        return "cluster does not have members except leader"
    if request.candidate:
        if request.candidate == leader:
            return f"{request.candidate} is already the leader"
        if not check_health:
            return None if request.candidate in view.members else \
                f"{request.candidate} is not a member of the cluster"
        return candidate_problem(view, request.candidate, peers.get(request.candidate),
                                 check_lag=leader is not None,
                                 check_sync=bool(request.leader))
    if leader is None:
        return "a failover needs a candidate"
    if sync_candidates(view) == frozenset():
        return "can not find sync_standby"
    if check_health and pick_candidate(view, peers, leader) is None:
        return "no good candidates have been found"
    return None
