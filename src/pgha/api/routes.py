"""The one table of REST routes: the router (:mod:`pgha.api.server`) and the OpenAPI document
(:mod:`pgha.api.openapi`) are both generated from :data:`ROUTES`, so they cannot drift apart.

Each :class:`Route` names its handler (a key of the handler table built by the server), its
paths (aliases share one handler), query parameters, JSON body schema and every response code
it can answer. Unsafe methods (POST/PUT/PATCH/DELETE) additionally answer the access-control
codes of :mod:`pgha.api.security` (401/403), and routes with a body the body codes
(400/408/413): :func:`responses_of` adds them for the OpenAPI generator; the router guards and
reads bodies the same way. Routes without a body ignore whatever body is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.api import checks
from pgha.api.checks import Check

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Response kinds (the body the code comes with): a component schema name, "text" or None.
STATUS, TEXT, NONE = "Status", "text", None


@dataclass(frozen=True)
class Param:
    """A query parameter. ``free_form``: any number of ``<prefix><name>=<value>`` pairs."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    free_form: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    paths: tuple[str, ...]
    handler: str
    summary: str
    responses: Mapping[int, tuple[str, str | None]]  # code -> (description, body kind)
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None  # JSON schema of the request body
    body_required: bool = False
    code_only: bool = False  # HEAD and OPTIONS answer the same code without a body
    check: Check | None = None  # health-check condition (handler "health")
    allowlist: bool = True  # False: every cluster member passes restapi.allowlist (peer calls)

    @property
    def unsafe(self) -> bool:
        return self.method in UNSAFE_METHODS


LAG = Param("lag", "Maximum replication lag: bytes, or a number with kB/MB/GB/TB. Unparsable "
            "values fail the check.", {"type": "string", "pattern": r"^\d+\s*([kKmMgGtT]?[bB]?)$"})
TAGS = Param("tag_", "Filters tag_<name>=<value>: every named tag must be published with that "
             "value (booleans as true/false).",
             {"type": "object", "additionalProperties": {"type": "string"}}, free_form=True)
REPLICATION_STATE = Param("replication_state", "Required replication state, e.g. `streaming` or "
                          "`in archive recovery`.")
MODE = Param("mode", "`apply` (default): compare the replayed position; `write`: the received "
             "position. Other values fail the check.",
             {"type": "string", "enum": ["apply", "write"]})
REPLICA_FILTERS = (LAG, TAGS, REPLICATION_STATE)


def _health(paths: tuple[str, ...], check: Check, summary: str,
            params: tuple[Param, ...] = ()) -> Route:
    return Route("GET", paths, "health", summary, {
        200: ("The condition holds; the status JSON", STATUS),
        503: ("The condition does not hold; the status JSON", STATUS),
    }, params=params, code_only=True, check=check)


_TIMESTAMP = {"type": "string", "format": "date-time",
              "description": "ISO 8601 with a timezone, in the future"}

SWITCHOVER_BODY = {
    "type": "object", "required": ["leader"],
    "properties": {
        "leader": {"type": "string", "minLength": 1, "description": "The current leader"},
        "candidate": {"type": "string", "minLength": 1,
                      "description": "Member to promote (default: the healthiest)"},
        "member": {"type": "string", "minLength": 1, "description": "Alias of candidate"},
        "scheduled_at": _TIMESTAMP,
    },
}
FAILOVER_BODY = {
    "type": "object", "required": ["candidate"],
    "properties": {
        "candidate": {"type": "string", "minLength": 1, "description": "Member to promote"},
        "leader": {"type": "string", "minLength": 1,
                   "description": "The current leader (makes it a switchover)"},
    },
}
RESTART_BODY = {
    "type": "object",
    "properties": {
        "restart_pending": {"type": "boolean",
                            "description": "Only when a restart is pending"},
        "role": {"type": "string", "enum": ["primary", "master", "replica", "any"],
                 "description": "Only when this member has that role"},
        "postgres_version": {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,4}){0,2}$",
                             "description": "Only when the running server is older"},
        "timeout": {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|min|h|d)?$"}],
                    "description": "Seconds (or a duration like 5min) to wait for the restart"},
        "schedule": _TIMESTAMP,
    },
}
REINIT_BODY = {
    "type": "object",
    "properties": {
        "force": {"type": "boolean", "description": "Cancel a running action first"},
        "from_leader": {"type": "boolean",
                        "description": "Clone from the leader (also `from-leader`)"},
    },
}
FAILSAFE_BODY = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "conn_url": {"type": "string"},
                   "api_url": {"type": "string"}, "slots": {"type": "object"}},
}
CONFIG_BODY = {"type": "object", "description": "Dynamic configuration (as bootstrap.dcs)"}
PATCH_BODY = {"type": "object",
              "description": "JSON merge patch (RFC 7396) of the dynamic configuration; null "
                             "deletes a key"}

ROUTES: tuple[Route, ...] = (
    _health(("/", "/primary", "/read-write", "/master"), checks.is_primary,
            "Holds the leader lock and PostgreSQL runs as a primary"),
    _health(("/leader",), checks.is_leader, "Holds the leader lock and PostgreSQL runs"),
    _health(("/standby-leader", "/standby_leader"), checks.is_standby_leader,
            "Leader of a standby cluster: holds the lock and runs as a replica of the "
            "remote primary named by standby_cluster"),
    _health(("/replica",), checks.is_replica,
            "Running replica without the noloadbalance tag, within the filters",
            REPLICA_FILTERS),
    _health(("/read-only",), checks.is_read_only, "Primary with the lock, or /replica",
            REPLICA_FILTERS),
    _health(("/sync", "/synchronous"), checks.is_sync,
            "/replica and listed as a synchronous standby in the DCS sync key (503 while "
            "synchronous replication is unknown)", REPLICA_FILTERS),
    _health(("/async", "/asynchronous"), checks.is_async,
            "/replica and not a synchronous or quorum standby", REPLICA_FILTERS),
    _health(("/read-only-sync", "/read-only-synchronous"), checks.is_read_only_sync,
            "Primary with the lock, or /sync", REPLICA_FILTERS),
    _health(("/quorum",), checks.is_quorum,
            "/replica and listed as a quorum voter (synchronous_mode: quorum)", REPLICA_FILTERS),
    _health(("/read-only-quorum",), checks.is_read_only_quorum,
            "Primary with the lock, or /quorum", REPLICA_FILTERS),
    _health(("/health",), checks.is_healthy, "PostgreSQL runs and accepts connections"),
    _health(("/liveness",), checks.is_alive,
            "The decision loop ran within ttl (leader) or 2*ttl, or the cluster is paused"),
    _health(("/readiness",), checks.is_ready,
            "Leader running as primary, or a streaming replica within lag (default "
            "maximum_lag_on_failover)", (LAG, MODE)),
    Route("GET", ("/patroni",), "patroni", "This member's status", {
        200: ("The status JSON (always)", STATUS)}, code_only=True),
    Route("GET", ("/cluster",), "cluster", "Members, roles, lag, slots and scheduled operations", {
        200: ("The cluster", "Cluster"),
        503: ("No DCS view yet (empty member list)", "Cluster")}),
    Route("GET", ("/history",), "history", "Timeline history from the DCS", {
        200: ("List of [timeline, lsn, reason, timestamp, new_leader]; a sixth element "
              "{discarded: [...]} on timelines whose WAL this member discarded", "History")}),
    Route("GET", ("/decisions",), "decisions",
          "pgha: this member's recent decisions that changed something or refused the free "
          "leader lock, with what decided them (oldest first)", {
              200: ("List of decision records", "Decisions"),
              400: ("Bad limit (reason as text)", TEXT)},
          params=(Param("limit", "Only the newest N records",
                        {"type": "integer", "minimum": 0}),)),
    Route("GET", ("/config",), "config_get", "The dynamic configuration in the DCS", {
        200: ("The config JSON", "Object"), 502: ("No configuration in the DCS", TEXT)}),
    Route("GET", ("/failsafe",), "failsafe_get", "Members listed in the failsafe key", {
        200: ("member name -> api_url", "Object"), 502: ("failsafe_mode is off", TEXT)}),
    Route("GET", ("/metrics",), "metrics", "Prometheus metrics (text format 0.0.4)", {
        200: ("Patroni-compatible gauges and pgha's own metrics", TEXT)}),
    Route("GET", ("/openapi.json",), "openapi", "This document", {
        200: ("OpenAPI 3.0 document", "Object")}),
    Route("PATCH", ("/config",), "config_patch", "Merge-patch the dynamic configuration", {
        200: ("The new configuration", "Object"), 409: ("Lost a compare-and-set race", TEXT),
        502: ("The DCS write failed", TEXT), 503: ("No configuration in the DCS", TEXT)},
        body=PATCH_BODY, body_required=True),
    Route("PUT", ("/config",), "config_put", "Replace the dynamic configuration", {
        200: ("The configuration", "Object"), 502: ("The DCS write failed", TEXT),
        503: ("No answer from the agent in time", TEXT)},
        body=CONFIG_BODY, body_required=True),
    Route("POST", ("/switchover",), "switchover", "Planned switchover, now or scheduled", {
        200: ("Switched over", TEXT), 202: ("Scheduled", TEXT),
        412: ("Not possible (reason)", TEXT), 503: ("Failed or status unknown", TEXT)},
        body=SWITCHOVER_BODY, body_required=True),
    Route("DELETE", ("/switchover",), "switchover_delete", "Cancel a scheduled switchover", {
        200: ("Deleted", TEXT), 404: ("None scheduled", TEXT),
        409: ("Lost a race", TEXT), 502: ("DCS failure", TEXT),
        503: ("No answer from the agent in time", TEXT)}),
    Route("POST", ("/failover",), "failover", "Manual failover to a named candidate", {
        200: ("Failed over", TEXT), 412: ("Not possible (reason)", TEXT),
        503: ("Failed or status unknown", TEXT)},
        body=FAILOVER_BODY, body_required=True),
    Route("POST", ("/restart",), "restart", "Restart PostgreSQL on this member", {
        200: ("Restarted", TEXT), 202: ("Scheduled", TEXT),
        409: ("Another restart is already scheduled", TEXT),
        500: ("Cannot schedule while paused", TEXT),
        503: ("Restart failed or conditions not met", TEXT)}, body=RESTART_BODY),
    Route("DELETE", ("/restart",), "restart_delete", "Cancel this member's scheduled restart", {
        200: ("Deleted", TEXT), 404: ("None scheduled", TEXT),
        503: ("No answer from the agent in time", TEXT)}),
    Route("POST", ("/reload",), "reload", "Re-read the YAML and reload PostgreSQL", {
        202: ("Reload scheduled", TEXT), 503: ("No answer from the agent in time", TEXT)}),
    Route("POST", ("/reinitialize",), "reinitialize", "Wipe and re-clone this replica", {
        200: ("Started", TEXT), 503: ("Refused (reason) or no answer in time", TEXT)},
        body=REINIT_BODY),
    Route("POST", ("/failsafe",), "failsafe_post",
          "A primary asks this member not to take over while the DCS is unreachable", {
              200: ("Accepted", TEXT),
              409: ("The named member is not the leader of this member's last DCS view "
                    "(nor, without a leader there, listed in its failsafe key)", TEXT),
              500: ("This member runs as a primary", TEXT),
              502: ("failsafe_mode is off", TEXT)},
          body=FAILSAFE_BODY, body_required=True, allowlist=False),
)

# Codes every unsafe route may answer besides its own.
GUARD_RESPONSES: Mapping[int, tuple[str, str | None]] = {
    401: ("Missing or wrong HTTP Basic credentials (restapi.authentication)", TEXT),
    403: ("Client not in restapi.allowlist, or no client certificate", TEXT),
}
BODY_RESPONSES: Mapping[int, tuple[str, str | None]] = {
    400: ("Malformed or invalid body (reason as text); nothing was changed", TEXT),
    408: ("The body did not arrive in time", TEXT),
    413: ("Body too large", TEXT),
}


def responses_of(route: Route) -> dict[int, tuple[str, str | None]]:
    """Every code ``route`` can answer, including the guard and body codes."""
    out = dict(route.responses)
    if route.unsafe:
        out.update(GUARD_RESPONSES)
    if route.body is not None:
        out.update(BODY_RESPONSES)
    return dict(sorted(out.items()))
