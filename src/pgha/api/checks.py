"""Health-check conditions, as pure functions of a status snapshot and the request's query.

Each check answers True (HTTP 200) or False (HTTP 503). Query filters that cannot be parsed
(``?lag=garbage``, ``?mode=fast``) make the check fail (503) instead of answering 400: load
balancers only distinguish 200 from everything else, and a typo must not mark a node healthy.

Differences from Patroni, on purpose: the primary checks also require PostgreSQL to run as a
primary accepting connections (Patroni answers 200 on the lock alone), and ``/leader`` requires
PostgreSQL to run. ``/standby-leader`` answers 200 on the lock holder of a standby cluster
(a ``standby_cluster`` section in the DCS config; it runs as a replica of the remote primary).
Synchronous replication is derived from the DCS ``sync`` key (:func:`pgha.core.status.sync_state`);
while it is unknown the sync/quorum checks answer 503 and the async checks follow the replica
conditions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pgha.core.status import AgentStatus, sync_state

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
    """Every ``?tag_<name>=<value>`` names a published tag with that value (non-text tag
    values compare as lowercase text, so ``tag_nofailover=true`` matches ``True``)."""
    tags: dict[str, Any] | None = None
    for key, want in request.query.items():
        if not key.startswith("tag_"):
            continue
        if tags is None:
            tags = status.tags.to_json()
        name = key[4:]
        if name not in tags:
            return False
        have = tags[name]
        have_text = have if isinstance(have, str) else str(have).lower()
        if have_text != want.lower() and have_text != want:
            return False
    return True


def _replication_state_ok(status: AgentStatus, request: web.Request) -> bool:
    want = request.query.get("replication_state")
    return want is None or status.pg_details.get("replication_state") == want


def is_primary(status: AgentStatus, request: web.Request) -> bool:
    """Holds the lock AND PostgreSQL runs as primary (unlike Patroni, which ignores PG)."""
    return status.is_primary


def is_leader(status: AgentStatus, request: web.Request) -> bool:
    """Holds the lock and PostgreSQL runs and accepts connections (primary or standby
    leader)."""
    return status.holds_lock and status.pg.running and status.pg.accepting


def is_standby_leader(status: AgentStatus, request: web.Request) -> bool:
    """Leader of a standby cluster: holds the lock, runs as a replica, and the DCS config has a
    ``standby_cluster`` section."""
    view = status.view
    return (view is not None and bool((view.config or {}).get("standby_cluster"))
            and status.holds_lock and status.is_running_replica)


def is_replica(status: AgentStatus, request: web.Request) -> bool:
    """Running replica without ``noloadbalance``, within ``?lag=``, matching every
    ``?tag_<name>=`` and ``?replication_state=``."""
    return (status.is_running_replica and not status.tags.noloadbalance
            and _replica_lag_ok(status, request) and _tags_match(status, request)
            and _replication_state_ok(status, request))


def is_read_only(status: AgentStatus, request: web.Request) -> bool:
    return status.is_primary or is_standby_leader(status, request) or is_replica(status, request)


def _is_listed(status: AgentStatus, quorum: bool) -> bool:
    sync = sync_state(status.view)
    return sync is not None and sync.quorum is quorum and status.name in sync.standbys


def is_sync(status: AgentStatus, request: web.Request) -> bool:
    """Replica conditions, and listed as a synchronous standby (``synchronous_mode: on``)."""
    return _is_listed(status, quorum=False) and is_replica(status, request)


def is_quorum(status: AgentStatus, request: web.Request) -> bool:
    """Replica conditions, and listed as a quorum voter (``synchronous_mode: quorum``)."""
    return _is_listed(status, quorum=True) and is_replica(status, request)


def is_async(status: AgentStatus, request: web.Request) -> bool:
    """Replica conditions, and neither a synchronous standby nor a quorum voter."""
    sync = sync_state(status.view)
    listed = sync is not None and status.name in sync.standbys
    return not listed and is_replica(status, request)


def is_read_only_sync(status: AgentStatus, request: web.Request) -> bool:
    return status.is_primary or is_sync(status, request)


def is_read_only_quorum(status: AgentStatus, request: web.Request) -> bool:
    return status.is_primary or is_quorum(status, request)


def is_healthy(status: AgentStatus, request: web.Request) -> bool:
    """PostgreSQL runs and accepts connections, whatever its role."""
    return status.pg.running and status.pg.accepting


def is_alive(status: AgentStatus, request: web.Request) -> bool:
    """The decision loop completed a cycle recently: within ``ttl`` on the leader, ``2 * ttl``
    elsewhere, or the cluster is paused. Runs no SQL."""
    if status.view is not None and status.view.settings.pause:
        return True
    ttl = status.view.settings.ttl if status.view is not None else 30.0
    limit = ttl if status.holds_lock else 2 * ttl
    return time.monotonic() - status.heartbeat < limit


def _position(status: AgentStatus, mode: str) -> int | None:
    """Replayed (``apply``) or received (``write``) WAL position; falls back to the agent's
    combined position when PostgreSQL did not report the detail."""
    xlog = status.pg_details.get("xlog")
    key = "replayed_location" if mode == "apply" else "received_location"
    value = xlog.get(key) if isinstance(xlog, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return status.pg.wal_position


def is_ready(status: AgentStatus, request: web.Request) -> bool:
    """Leader running as primary, or a running streaming replica whose replayed (``?mode=apply``,
    the default) or received (``?mode=write``) position is within ``?lag=`` (default
    ``maximum_lag_on_failover``) of the leader."""
    if status.holds_lock:
        return status.is_primary or is_standby_leader(status, request)
    mode = request.query.get("mode", "apply")
    if mode not in ("apply", "write"):
        return False
    if not status.is_running_replica or status.view is None:
        return False
    if status.pg_details.get("replication_state") != "streaming":
        return False
    limit = parse_lag(request.query["lag"]) if "lag" in request.query else \
        status.view.settings.maximum_lag_on_failover
    lag = status.view.lag_of(_position(status, mode))
    return limit is not None and lag is not None and lag <= limit


HEALTH_CHECKS: Mapping[str, Check] = {
    "/": is_primary,
    "/primary": is_primary,
    "/master": is_primary,
    "/read-write": is_primary,
    "/leader": is_leader,
    "/standby-leader": is_standby_leader,
    "/standby_leader": is_standby_leader,
    "/replica": is_replica,
    "/read-only": is_read_only,
    "/sync": is_sync,
    "/synchronous": is_sync,
    "/async": is_async,
    "/asynchronous": is_async,
    "/read-only-sync": is_read_only_sync,
    "/read-only-synchronous": is_read_only_sync,
    "/quorum": is_quorum,
    "/read-only-quorum": is_read_only_quorum,
    "/health": is_healthy,
    "/liveness": is_alive,
    "/readiness": is_ready,
}
