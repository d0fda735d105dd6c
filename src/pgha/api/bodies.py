"""Request bodies of the unsafe endpoints, parsed and validated into :mod:`pgha.core.commands`.

Contract: every parser takes the raw body bytes and returns one frozen command, or raises
:class:`BadRequest` with a reason (the handler answers 400 with it and sends nothing to the
agent). Rules shared by all of them: the body is a JSON object (``Content-Type`` is not
checked, so ``curl -d`` works); an empty body is accepted where every field is optional;
unknown fields are ignored; a ``null`` field counts as absent; a field of the wrong type is
rejected. Timestamps are ISO 8601 with a timezone and must lie in the future.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from pydantic import ValidationError

from pgha.config.dynamic import DynamicConfig
from pgha.core.commands import (
    PatchConfig,
    Reinitialize,
    ReplaceConfig,
    Restart,
    Switchover,
    merge_patch,
)

Clock = Callable[[], datetime]


class BadRequest(ValueError):
    """A malformed or invalid request body; ``reason`` is sent to the client with a 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject(reason: str) -> NoReturn:
    raise BadRequest(reason)


def _no_constants(name: str) -> Any:
    _reject(f"body is not valid JSON: {name} is not a number")


def load_object(raw: bytes, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object; ``{}`` for an empty body unless ``required``."""
    if not raw.strip():
        if required:
            _reject("a JSON object body is required")
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except BadRequest:
        raise
    except (ValueError, RecursionError):
        _reject("body is not valid JSON")
    if not isinstance(data, dict):
        _reject("body must be a JSON object")
    return data


def _str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        _reject(f"{key} must be a string")
    if not value.strip():
        _reject(f"{key} must not be empty")
    return value


def _bool(body: Mapping[str, Any], *keys: str) -> bool:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, bool):
            _reject(f"{key} must be true or false")
        return value
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _future_time(body: Mapping[str, Any], key: str, now: Clock) -> datetime | None:
    text = _str(body, key)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        _reject(f"{key} is not an ISO 8601 timestamp: {text!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        _reject(f"{key} must include a timezone (e.g. 2030-01-01T03:00:00+00:00)")
    if when <= now():
        _reject(f"{key} is in the past: {text}")
    return when


def parse_switchover(raw: bytes, now: Clock = _utc_now) -> Switchover:
    """``POST /switchover``: ``leader`` (required), ``candidate`` (alias ``member``),
    ``scheduled_at``."""
    body = load_object(raw, required=True)
    leader = _str(body, "leader")
    if leader is None:
        _reject("leader is required: name the current leader to switch over from")
    candidate = _str(body, "candidate")
    member = _str(body, "member")
    if candidate is not None and member is not None and candidate != member:
        _reject("candidate and member name different members")
    candidate = candidate or member
    if candidate == leader:
        _reject("the candidate is the current leader")
    return Switchover(leader=leader, candidate=candidate,
                      scheduled_at=_future_time(body, "scheduled_at", now))


def parse_failover(raw: bytes) -> Switchover:
    """``POST /failover``: ``candidate`` (required, alias ``member``), ``leader``. A failover
    cannot be scheduled."""
    body = load_object(raw, required=False)
    candidate = _str(body, "candidate") or _str(body, "member")
    if candidate is None:
        _reject("Failover could be performed only to a specific candidate")
    leader = _str(body, "leader")
    if candidate == leader:
        _reject("the candidate is the current leader")
    if body.get("scheduled_at") is not None:
        _reject("a failover cannot be scheduled: use POST /switchover with scheduled_at")
    return Switchover(leader=leader, candidate=candidate, failover=True)


_ROLES = {"primary": "primary", "master": "primary", "replica": "replica", "any": None}
_VERSION = re.compile(r"\d{1,3}(\.\d{1,4}){0,2}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*")
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _timeout(body: Mapping[str, Any]) -> float | None:
    value = body.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool):
        _reject("timeout must be a number of seconds")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
            seconds = float(m.group(1)) * _SECONDS[m.group(2)]
        else:
            _reject("timeout must be a number of seconds or a duration like '30s' or '5min'")
    except OverflowError:
        _reject("timeout is too large")
    if not math.isfinite(seconds) or seconds <= 0:
        _reject("timeout must be positive")
    return seconds


def parse_restart(raw: bytes, now: Clock = _utc_now) -> Restart:
    """``POST /restart``: ``restart_pending``, ``role`` (primary|master|replica|any),
    ``postgres_version`` (``15``, ``15.4``, ``9.6.24``), ``timeout``, ``schedule``."""
    body = load_object(raw, required=False)
    role = _str(body, "role")
    if role is not None and role not in _ROLES:
        _reject("role must be one of primary, master, replica, any")
    version = _str(body, "postgres_version")
    if version is not None and not _VERSION.fullmatch(version.strip()):
        _reject(f"postgres_version is not a PostgreSQL version like 15.4: {version!r}")
    return Restart(
        restart_pending=_bool(body, "restart_pending"),
        role=_ROLES[role] if role is not None else None,
        postgres_version=version.strip() if version is not None else None,
        timeout=_timeout(body),
        schedule=_future_time(body, "schedule", now),
    )


def parse_reinitialize(raw: bytes) -> Reinitialize:
    """``POST /reinitialize``: ``force``, ``from_leader`` (``from-leader`` accepted)."""
    body = load_object(raw, required=False)
    return Reinitialize(force=_bool(body, "force"),
                        from_leader=_bool(body, "from_leader", "from-leader"))


def _check_config(config: Mapping[str, Any]) -> None:
    try:
        DynamicConfig.model_validate(dict(config))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        _reject(f"invalid dynamic configuration: {where}: {err['msg']}")
    except (ValueError, TypeError) as exc:
        _reject(f"invalid dynamic configuration: {exc}")
    except RecursionError:
        _reject("invalid dynamic configuration: nested too deeply")


def parse_replace_config(raw: bytes) -> ReplaceConfig:
    """``PUT /config``: the whole dynamic configuration, validated like ``bootstrap.dcs``."""
    config = load_object(raw, required=True)
    _check_config(config)
    return ReplaceConfig(config=config)


def parse_patch_config(raw: bytes, current: Mapping[str, Any] | None) -> PatchConfig:
    """``PATCH /config``: a JSON merge patch. When the current config is known, the patched
    result must validate (the agent applies the patch again to the config it reads)."""
    patch = load_object(raw, required=True)
    if current is not None:
        try:
            merged = merge_patch(current, patch)
        except RecursionError:
            _reject("the patch is nested too deeply")
        _check_config(merged)
    return PatchConfig(patch=patch)
