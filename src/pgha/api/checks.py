"""Health-check conditions and the ``/cluster`` body, as pure functions of a status snapshot."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pgha.core.model import ClusterView
from pgha.status import AgentStatus

Check = Callable[[AgentStatus, web.Request], bool]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3,
          "gb": 1024**3, "t": 1024**4, "tb": 1024**4}


def parse_lag(text: str) -> int | None:
    """``?lag=`` value: bytes, or a number with a kB/MB/GB/TB unit. None when malformed."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?[bB]?)\s*", text)
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _replica_lag_ok(status: AgentStatus, request: web.Request) -> bool:
    raw = request.query.get("lag")
    if raw is None:
        return True
    limit = parse_lag(raw)
    if limit is None or status.view is None:
        return False
    lag = status.view.lag_of(status.pg.wal_position)
    return lag is not None and lag <= limit


def _tags_match(status: AgentStatus, request: web.Request) -> bool:
    tags = status.tags.to_json()
    for key, want in request.query.items():
        if not key.startswith("tag_"):
            continue
        name = key[4:]
        if name not in tags:
            return False
        have = tags[name]
        have_text = have if isinstance(have, str) else str(have).lower()
        if have_text != want.lower() and have_text != want:
            return False
    return True


def is_primary(status: AgentStatus, request: web.Request) -> bool:
    """Holds the lock AND PostgreSQL runs as primary (unlike Patroni, which ignores PG)."""
    return status.is_primary


def is_replica(status: AgentStatus, request: web.Request) -> bool:
    return (status.is_running_replica and not status.tags.noloadbalance
            and _replica_lag_ok(status, request) and _tags_match(status, request))


def is_read_only(status: AgentStatus, request: web.Request) -> bool:
    return status.is_primary or is_replica(status, request)


def is_healthy(status: AgentStatus, request: web.Request) -> bool:
    return status.pg.running and status.pg.accepting


def is_alive(status: AgentStatus, request: web.Request) -> bool:
    """The decision loop completed a cycle recently: within ``ttl`` on the leader, ``2 * ttl``
    elsewhere, or the cluster is paused. Runs no SQL."""
    if status.view is not None and status.view.settings.pause:
        return True
    ttl = status.view.settings.ttl if status.view is not None else 30.0
    limit = ttl if status.holds_lock else 2 * ttl
    return status.now - status.heartbeat < limit


def is_ready(status: AgentStatus, request: web.Request) -> bool:
    """Leader, or a running streaming replica within ``?lag=`` (default
    ``maximum_lag_on_failover``) of the leader."""
    if status.holds_lock:
        return status.is_primary
    if not status.is_running_replica or status.view is None:
        return False
    if status.pg_details.get("replication_state") != "streaming":
        return False
    limit = parse_lag(request.query.get("lag", "")) if "lag" in request.query else \
        status.view.settings.maximum_lag_on_failover
    lag = status.view.lag_of(status.pg.wal_position)
    return limit is not None and lag is not None and lag <= limit


HEALTH_CHECKS: Mapping[str, Check] = {
    "/": is_primary,
    "/primary": is_primary,
    "/master": is_primary,
    "/read-write": is_primary,
    "/leader": lambda s, r: s.holds_lock and s.pg.running and s.pg.accepting,
    "/replica": is_replica,
    "/read-only": is_read_only,
    "/health": is_healthy,
    "/liveness": is_alive,
    "/readiness": is_ready,
}


def _lsn_text(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def cluster_json(view: ClusterView, scope: str) -> dict[str, Any]:
    """The ``GET /cluster`` body: members sorted by name, the leader's role ``leader``."""
    leader_name = view.leader.name if view.leader else None
    members: list[dict[str, Any]] = []
    for name in sorted(view.members):
        m = view.members[name]
        host, _, port = m.conn_url.partition("://")[2].partition("/")[0].rpartition(":")
        item: dict[str, Any] = {
            "name": name,
            "role": "leader" if name == leader_name else "replica",
            "state": m.state if name == leader_name else (m.replication_state or m.state),
            "api_url": m.api_url,
            "host": host or None,
            "port": int(port) if port.isdigit() else None,
            "timeline": m.timeline,
            "pending_restart": m.pending_restart,
            "tags": m.tags.to_json(),
        }
        if name != leader_name:
            lag = view.lag_of(m.xlog_location)
            item["lsn"] = _lsn_text(m.xlog_location)
            item["lag"] = "unknown" if lag is None else lag
        members.append(item)
    out: dict[str, Any] = {"members": members, "scope": scope}
    if view.settings.pause:
        out["pause"] = True
    return out
