"""``GET /metrics``: Patroni's Prometheus gauges plus pgha's own metrics, as exposition text.

Everything is computed from the agent's last published :class:`AgentStatus` (and the
in-memory :class:`MetricsSource`, the agent's own registry): rendering makes no DCS or
PostgreSQL call, so scraping every few seconds costs a few microseconds of string formatting.

Every sample carries ``scope`` and ``name`` labels, as in Patroni. The ``patroni_*`` names,
types and meanings follow Patroni, so existing dashboards and alerts keep working; values agree
with ``GET /patroni`` (``patroni_primary`` / ``patroni_replica`` follow its ``role``). A value
the agent does not know (PostgreSQL not running, DCS never read, a feature pgha does not have
yet) is 0, as Patroni reports it. In particular:

* ``patroni_sync_standby`` / ``patroni_quorum_standby`` are 1 exactly when ``GET /patroni``
  says ``sync_standby`` / ``quorum_standby`` (the current leader's ``sync`` key names this
  member, synchronous mode on / quorum); ``patroni_standby_leader`` is 0: no standby clusters
  yet.
* ``patroni_xlog_location`` is the flush position on a primary, 0 elsewhere; the
  ``patroni_xlog_received/replayed_*`` values and ``patroni_xlog_paused`` are 0 except on a
  running replica.
* ``patroni_cluster_unlocked`` and ``patroni_is_paused`` are 0 until the DCS was read once.
* ``patroni_postgres_state`` uses Patroni's codes (:data:`POSTGRES_STATE_CODES`); a state
  outside that list (none is published today) is rendered as -1.

After Patroni's metrics come pgha's own status-derived gauges (:data:`PGHA_STATUS_GAUGES`), whose
value may be unknown: such a gauge then has its HELP and TYPE but no sample (an alert comparing
with it matches nothing instead of comparing with a made-up 0). Then the agent's registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pgha import __version__
from pgha.api.prometheus import escape_help, format_labels, format_value
from pgha.core.model import ClusterView
from pgha.core.status import AgentStatus, SyncState, sync_state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """Metrics rendered after Patroni's gauges (the agent's own registry)."""

    def render(self, const_labels: Mapping[str, str] | None = None) -> str:
        """Exposition text ending with a newline; ``const_labels`` first on every sample."""
        ...

#: Patroni's numeric codes for the ``state`` strings of ``GET /patroni``.
POSTGRES_STATE_CODES: Mapping[str, int] = {
    "initializing new cluster": 0,
    "initdb failed": 1,
    "running custom bootstrap script": 2,
    "custom bootstrap failed": 3,
    "creating replica": 4,
    "running": 5,
    "starting": 6,
    "starting after custom bootstrap": 7,
    "start failed": 8,
    "restarting": 9,
    "restart failed": 10,
    "stopping": 11,
    "stopped": 12,
    "stop failed": 13,
    "crashed": 14,
}


def version_number(version: str) -> str:
    """Patroni's ``patroni_version`` value: each dotted part as two digits, ``4.0.0`` ->
    ``040000`` (Prometheus reads it as 40000). Only each part's leading digits count
    (``3rc1`` -> ``03``)."""
    parts = []
    for part in version.split(".")[:3]:
        digits = re.match(r"\d*", part)
        parts.append((digits.group() if digits else "").zfill(2))
    while len(parts) < 3:
        parts.append("00")
    return "".join(parts)


def epoch_of(timestamp: Any) -> float:
    """Seconds since the epoch of a PostgreSQL timestamp text (``2024-01-31
    12:00:00.123+00:00``; a trailing `` UTC`` is accepted), 0 when absent or unreadable."""
    if not isinstance(timestamp, str) or not timestamp:
        return 0
    text = timestamp.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        return 0  # ambiguous: the server's time zone is not known here
    return parsed.timestamp()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class _Facts:
    """What the gauges are computed from, derived once per scrape from the status."""

    status: AgentStatus
    running: bool
    details: Mapping[str, Any]
    xlog: Mapping[str, Any]
    role: str
    primary: bool
    replica_xlog: bool
    rstate: Any
    view: ClusterView | None
    sync: SyncState | None

    @classmethod
    def of(cls, status: AgentStatus) -> _Facts:
        running = status.pg_state == "running"
        details: Mapping[str, Any] = status.pg_details if status.pg.running else {}
        xlog = details.get("xlog")
        role = status.role
        return cls(status=status, running=running, details=details,
                   xlog=xlog if isinstance(xlog, Mapping) else {}, role=role,
                   primary=running and role == "primary",
                   replica_xlog=running and role == "replica",
                   rstate=details.get("replication_state"), view=status.view,
                   sync=sync_state(status.view))


@dataclass(frozen=True)
class _Gauge:
    name: str
    kind: str
    help_text: str
    value: Callable[[_Facts], float | str | None]


#: Patroni's metrics, in Patroni's order: name, type, help, and how the value is computed.
PATRONI_GAUGES: tuple[_Gauge, ...] = (
    _Gauge("patroni_version", "gauge",
           "Agent version as a number: each semver part as two digits (0.1.0 -> 000100).",
           lambda c: version_number(__version__)),
    _Gauge("patroni_postgres_running", "gauge",
           "1 when PostgreSQL runs and answers queries, else 0.",
           lambda c: int(c.running)),
    _Gauge("patroni_postmaster_start_time", "gauge",
           "Start time of the running postmaster, in epoch seconds (0 when not running).",
           lambda c: epoch_of(c.details.get("postmaster_start_time")) if c.running else 0),
    _Gauge("patroni_primary", "gauge",
           "1 when PostgreSQL runs here as a primary, else 0.",
           lambda c: int(c.role == "primary")),
    _Gauge("patroni_xlog_location", "counter",
           "WAL flush position (bytes) of this primary; 0 on any other member.",
           lambda c: _int(c.xlog.get("location")) if c.primary else 0),
    _Gauge("patroni_standby_leader", "gauge",
           "1 when this member leads a standby cluster, else 0 (no standby clusters yet).",
           lambda c: int(c.role == "standby_leader")),
    _Gauge("patroni_replica", "gauge",
           "1 when this member's role is replica (as in GET /patroni), else 0.",
           lambda c: int(c.role == "replica")),
    _Gauge("patroni_sync_standby", "gauge",
           "1 when the leader's sync key names this member a synchronous standby, else 0.",
           lambda c: int(c.sync is not None and not c.sync.quorum
                         and c.status.name in c.sync.standbys)),
    _Gauge("patroni_quorum_standby", "gauge",
           "1 when the leader's sync key names this member a quorum standby, else 0.",
           lambda c: int(c.sync is not None and c.sync.quorum
                         and c.status.name in c.sync.standbys)),
    _Gauge("patroni_xlog_received_location", "counter",
           "WAL position (bytes) received by this running replica; 0 elsewhere.",
           lambda c: _int(c.xlog.get("received_location")) if c.replica_xlog else 0),
    _Gauge("patroni_xlog_replayed_location", "counter",
           "WAL position (bytes) replayed by this running replica; 0 elsewhere.",
           lambda c: _int(c.xlog.get("replayed_location")) if c.replica_xlog else 0),
    _Gauge("patroni_xlog_replayed_timestamp", "gauge",
           "Commit time (epoch seconds) of the last transaction replayed here; 0 if unknown.",
           lambda c: epoch_of(c.xlog.get("replayed_timestamp")) if c.replica_xlog else 0),
    _Gauge("patroni_xlog_paused", "gauge",
           "1 when WAL replay is paused on this replica, else 0.",
           lambda c: int(bool(c.xlog.get("paused"))) if c.replica_xlog else 0),
    _Gauge("patroni_postgres_streaming", "gauge",
           "1 when this replica receives WAL by streaming replication, else 0.",
           lambda c: int(c.running and c.rstate == "streaming")),
    _Gauge("patroni_postgres_in_archive_recovery", "gauge",
           "1 when this replica recovers from the WAL archive (not streaming), else 0.",
           lambda c: int(c.running and c.rstate == "in archive recovery")),
    _Gauge("patroni_postgres_server_version", "gauge",
           "server_version_num of the running PostgreSQL; 0 when not running.",
           lambda c: _int(c.details.get("server_version")) if c.running else 0),
    _Gauge("patroni_cluster_unlocked", "gauge",
           "1 when no member holds the leader lock, else 0.",
           lambda c: int(c.view is not None and c.view.leader is None)),
    _Gauge("patroni_failsafe_mode_is_active", "gauge",
           "1 when this primary stays writable only through failsafe confirmations, else 0.",
           lambda c: int(c.status.failsafe_active)),
    _Gauge("patroni_postgres_timeline", "gauge",
           "Timeline of the running PostgreSQL; 0 when not running.",
           lambda c: (c.status.pg.timeline or 0) if c.running else 0),
    _Gauge("patroni_dcs_last_seen", "gauge",
           "Epoch seconds of this member's last successful DCS read (0: never).",
           lambda c: int(c.status.dcs_last_seen or 0)),
    _Gauge("patroni_pending_restart", "gauge",
           "1 when PostgreSQL needs a restart to apply settings, else 0.",
           lambda c: int(c.status.pending_restart)),
    _Gauge("patroni_is_paused", "gauge",
           "1 when the cluster is paused (maintenance mode: no automatic failover), else 0.",
           lambda c: int(c.view is not None and c.view.settings.pause)),
    _Gauge("patroni_postgres_state", "gauge",
           "PostgreSQL state as a number (Patroni's codes): 0 initializing new cluster, "
           "4 creating replica, 5 running, 6 starting, 12 stopped, 14 crashed; -1 unknown.",
           lambda c: POSTGRES_STATE_CODES.get(c.status.pg_state, -1)),
)


#: pgha's gauges computed from the status: a value of None renders no sample.
PGHA_STATUS_GAUGES: tuple[_Gauge, ...] = (
    _Gauge("pgha_maximum_lag_on_failover_bytes", "gauge",
           "The cluster's maximum_lag_on_failover (bytes) from the dynamic configuration in "
           "the DCS: a replica further behind the leader is no failover candidate. No sample "
           "until the DCS was read.",
           lambda c: c.view.settings.maximum_lag_on_failover if c.view is not None else None),
)


def status_gauges(status: AgentStatus) -> list[tuple[str, str, str, float | str | None]]:
    """``(name, type, help, value)`` of every Patroni metric, in Patroni's order, then pgha's
    status-derived gauges (whose value may be None: unknown, no sample)."""
    facts = _Facts.of(status)
    return [(g.name, g.kind, g.help_text, g.value(facts))
            for g in PATRONI_GAUGES + PGHA_STATUS_GAUGES]


def render_metrics(status: AgentStatus, metrics: MetricsSource | None) -> str:
    """The whole ``/metrics`` body: Patroni's metrics, then pgha's own (when given)."""
    const = {"scope": status.scope, "name": status.name}
    labels = format_labels(const.items())
    out: list[str] = []
    for name, kind, help_text, value in status_gauges(status):
        out.append(f"# HELP {name} {escape_help(help_text)}")
        out.append(f"# TYPE {name} {kind}")
        if value is not None:
            text = value if isinstance(value, str) else format_value(value)
            out.append(f"{name}{labels} {text}")
    body = "\n".join(out) + "\n"
    if metrics is not None:
        body += metrics.render(const)
    return body
