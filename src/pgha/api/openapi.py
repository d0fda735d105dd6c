"""The OpenAPI 3.0 document of the REST API, generated from :data:`pgha.api.routes.ROUTES`.

Every route of the table appears under each of its paths, with its parameters, request body
schema and every response code it can answer (:func:`pgha.api.routes.responses_of`). Every
GET also lists HEAD (same codes, no body), and routes with ``code_only`` list OPTIONS too.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pgha import __version__
from pgha.api.routes import ROUTES, STATUS, TEXT, Param, Route, responses_of

_DESCRIPTION = (
    "Patroni-compatible REST API of a pgha agent. Health checks answer 200 when their condition "
    "holds and 503 otherwise, with the status JSON as body; HEAD and OPTIONS give the code only. "
    "A GET (or any other method) on a path not listed here answers 503 with the status JSON. "
    "Unsafe methods (POST, PUT, PATCH, DELETE) are checked against restapi.allowlist (403), a "
    "client certificate when restapi.verify_client is optional or required (403), then HTTP "
    "Basic credentials when restapi.authentication is set (401). Request bodies are JSON "
    "objects; unknown fields are ignored, null counts as absent, wrong types get 400."
)

_SCHEMAS: dict[str, Any] = {
    STATUS: {
        "type": "object",
        "description": "This member's status (field names as in Patroni)",
        "required": ["state", "role", "patroni"],
        "properties": {
            "state": {"type": "string"},
            "role": {"type": "string",
                     "enum": ["primary", "replica", "standby_leader", "demoted",
                              "uninitialized"]},
            "postmaster_start_time": {"type": "string"},
            "server_version": {"type": "integer"},
            "xlog": {"type": "object"},
            "timeline": {"type": "integer"},
            "replication_state": {"type": "string"},
            "replication": {"type": "array", "items": {"type": "object"}},
            "cluster_unlocked": {"type": "boolean"},
            "pause": {"type": "boolean"},
            "failsafe_mode_is_active": {"type": "boolean"},
            "dcs_last_seen": {"type": "integer"},
            "pending_restart": {"type": "boolean"},
            "pending_restart_reason": {"type": "object"},
            "scheduled_restart": {"type": "object"},
            "sync_standby": {"type": "boolean"},
            "quorum_standby": {"type": "boolean"},
            "tags": {"type": "object"},
            "database_system_identifier": {"type": "string"},
            "patroni": {"type": "object", "required": ["version", "scope", "name"],
                        "properties": {"version": {"type": "string"},
                                       "scope": {"type": "string"},
                                       "name": {"type": "string"}}},
            "pgha": {"type": "object"},
        },
    },
    "Cluster": {
        "type": "object", "required": ["members", "scope"],
        "properties": {
            "scope": {"type": "string"},
            "pause": {"type": "boolean"},
            "members": {"type": "array", "items": {
                "type": "object", "required": ["name", "role", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "role": {"type": "string", "enum": ["leader", "sync_standby",
                                                       "quorum_standby", "replica"]},
                    "state": {"type": "string"}, "api_url": {"type": "string"},
                    "host": {"type": "string", "nullable": True},
                    "port": {"type": "integer", "nullable": True},
                    "timeline": {"type": "integer", "nullable": True},
                    "pending_restart": {"type": "boolean"},
                    "scheduled_restart": {"type": "object"},
                    "tags": {"type": "object"},
                    "lsn": {"type": "string"},
                    "lag": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                }}},
            "scheduled_switchover": {"type": "object", "required": ["at"],
                                     "properties": {"at": {"type": "string"},
                                                    "from": {"type": "string"},
                                                    "to": {"type": "string"}}},
        },
    },
    "History": {"type": "array", "items": {
        "type": "array", "minItems": 5, "maxItems": 6, "items": {},
        "description": "[timeline, lsn, reason, timestamp, new_leader], plus "
                       "{\"discarded\": [report, ...]} on a timeline this member discarded "
                       "WAL of (rewind or re-clone)"}},
    "Decisions": {"type": "array", "items": {
        "type": "object",
        "required": ["time", "last_seen", "count", "reason", "message", "actions", "role",
                     "standings"],
        "description": "A decision that changed something or refused the free lock; a repeat "
                       "of the same reason and message only raises count and last_seen",
        "properties": {
            "time": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 1},
            "reason": {"type": "string", "description": "The decision's reason code"},
            "message": {"type": "string"},
            "actions": {"type": "array", "items": {"type": "string"}},
            "role": {"type": "string"},
            "timeline": {"type": "integer", "nullable": True},
            "wal_position": {"type": "integer", "nullable": True},
            "lag": {"type": "integer", "nullable": True},
            "leader": {"type": "string", "nullable": True},
            "standings": {"type": "array", "items": {
                "type": "object", "required": ["name", "code", "summary", "eligible"],
                "description": "Why each member may or may not take the free lock, this "
                               "member first",
                "properties": {
                    "name": {"type": "string"}, "code": {"type": "string"},
                    "summary": {"type": "string"}, "detail": {"type": "string"},
                    "eligible": {"type": "boolean"},
                    "position": {"type": "integer", "nullable": True},
                    "lag": {"type": "integer", "nullable": True},
                    "limit": {"type": "integer", "nullable": True},
                    "priority": {"type": "integer", "nullable": True},
                    "timeline": {"type": "integer", "nullable": True}}}},
        }}},
    "Object": {"type": "object"},
}


def _content(kind: str | None) -> dict[str, Any]:
    if kind is None:
        return {}
    if kind == TEXT:
        return {"content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{kind}"}}}}


def _parameter(param: Param) -> dict[str, Any]:
    if param.free_form:
        return {"name": "tags", "in": "query", "required": False, "style": "form",
                "explode": True, "description": param.description, "schema": dict(param.schema)}
    return {"name": param.name, "in": "query", "required": False,
            "description": param.description, "schema": dict(param.schema)}


def operation_id(method: str, path: str) -> str:
    """``get_readOnlySync`` for ``GET /read-only-sync``, ``get_standby_leader`` for
    ``/standby_leader``, ``get_root`` for ``/``: distinct for every path of the table."""
    words = re.split(r"-", re.sub(r"[^a-zA-Z0-9_-]+", "_", path).strip("_"))
    name = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    return f"{method.lower()}_{name or 'root'}"


def _operation(route: Route, method: str, path: str, with_body: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id(method, path), "summary": route.summary}
    if route.params:
        op["parameters"] = [_parameter(p) for p in route.params]
    if route.body is not None and method == route.method:
        op["requestBody"] = {"required": route.body_required, "content": {
            "application/json": {"schema": dict(route.body)}}}
    op["responses"] = {
        str(code): {"description": desc, **(_content(kind) if with_body else {})}
        for code, (desc, kind) in responses_of(route).items()
    }
    if route.unsafe:
        op["security"] = [{"basicAuth": []}, {}]
    return op


def build_openapi() -> dict[str, Any]:
    """The whole document (a new dict on every call)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        methods = [route.method] + (["HEAD"] if route.method == "GET" else []) + (
            ["OPTIONS"] if route.code_only else [])
        for path in route.paths:
            item = paths.setdefault(path, {})
            for method in methods:
                item[method.lower()] = _operation(route, method, path,
                                                  with_body=method == route.method)
    return {
        "openapi": "3.0.3",
        "info": {"title": "pgha REST API", "version": __version__,
                 "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
        },
    }
