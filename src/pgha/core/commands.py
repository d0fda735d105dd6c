"""Operator commands: what the REST API (and through it the CLI) asks the agent to do.

The API layer parses and validates request bodies (400 on malformed input, nothing sent) and
hands one of these frozen commands to ``Agent.submit``; the agent carries it out through its
decision loop and answers with an :class:`Outcome`. API handlers never touch the DCS or
PostgreSQL themselves.

Outcome codes are the HTTP status codes of the Patroni-compatible REST contract, so the API
answers ``Outcome.code`` as is:

===================== ===================================================================
command               codes
===================== ===================================================================
PatchConfig           200 (data: the new config), 409 lost a compare-and-set race,
                      503 no config in the DCS, 502 the DCS write failed
ReplaceConfig         200 (data: the config), 502 the DCS write failed
Switchover            200 done, 202 scheduled, 412 not possible (reason), 503 failed or
                      status unknown after the wait, 400 refused (e.g. scheduled while paused)
CancelSwitchover      200 deleted, 404 none scheduled, 409 lost a race, 502 DCS failure
Restart               200 restarted, 202 scheduled, 409 another restart already scheduled,
                      503 restart failed or conditions not met, 500 schedule while paused
CancelRestart         200 deleted, 404 none scheduled
Reload                202 scheduled
Reinitialize          200 started, 503 refused (reason: leader, no leader, in progress)
===================== ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """The agent's answer. ``data`` (when not None) is sent as the JSON body, else
    ``message`` as text."""

    code: int
    message: str = ""
    data: Any = None


@dataclass(frozen=True)
class PatchConfig:
    """JSON merge patch (RFC 7396) of the DCS ``config``: ``None`` values delete keys. Applied
    with compare-and-set on the revision read."""

    patch: Mapping[str, Any]


@dataclass(frozen=True)
class ReplaceConfig:
    """Replace the whole DCS ``config``."""

    config: Mapping[str, Any]


@dataclass(frozen=True)
class Switchover:
    """Planned switchover (``POST /switchover``) or manual failover (``POST /failover``,
    ``failover=True``: ``candidate`` is required, the cluster may have no leader, and it
    cannot be scheduled). ``leader`` must name the current leader when given.
    ``scheduled_at`` is timezone-aware (UTC or with an offset)."""

    leader: str | None = None
    candidate: str | None = None
    scheduled_at: datetime | None = None
    failover: bool = False


@dataclass(frozen=True)
class CancelSwitchover:
    """Delete a scheduled switchover (``DELETE /switchover``)."""


@dataclass(frozen=True)
class Restart:
    """Restart PostgreSQL on this member (``POST /restart``). Conditions: only when
    ``restart_pending`` is set and a restart is pending; only when the member's role is
    ``role`` (primary|replica; ``master`` means primary); only when the running server is
    older than ``postgres_version`` (text like ``15.4``). ``timeout``: seconds to wait for
    the restart. ``schedule``: timezone-aware instant to restart at instead of now."""

    restart_pending: bool = False
    role: str | None = None
    postgres_version: str | None = None
    timeout: float | None = None
    schedule: datetime | None = None


@dataclass(frozen=True)
class CancelRestart:
    """Delete this member's scheduled restart (``DELETE /restart``)."""


@dataclass(frozen=True)
class Reload:
    """Re-read the local YAML and reload PostgreSQL (``POST /reload``, same as SIGHUP)."""


@dataclass(frozen=True)
class Reinitialize:
    """Wipe this replica's data directory and clone it again (``POST /reinitialize``).
    ``force`` cancels a running action first; ``from_leader`` clones from the leader even
    when a ``clonefrom`` member exists."""

    force: bool = False
    from_leader: bool = False


Command = (
    PatchConfig
    | ReplaceConfig
    | Switchover
    | CancelSwitchover
    | Restart
    | CancelRestart
    | Reload
    | Reinitialize
)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge recursively, ``None`` deletes, anything else
    replaces. Returns a new dict; neither argument is modified."""
    out: dict[str, Any] = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            out[key] = value
    return out

