"""JSON encodings of DCS values (Patroni-compatible layout, see DESIGN.md section 1).

Decoders are strict: they raise ValueError for wrong types, and the caller
(:mod:`pgha.dcs.store`) logs and ignores the value. Missing fields take their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.core.model import HistoryEntry, Member, SyncKey, Tags


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in DCS JSON")


def loads(raw: bytes) -> Any:
    """Parse JSON (UTF-8). NaN/Infinity are rejected. Raises ValueError."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from exc


def dumps(data: Any) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def member_to_json(member: Member) -> dict[str, Any]:
    """The ``members/<name>`` JSON of ``member``; optional fields are omitted when unset."""
    out: dict[str, Any] = {
        "conn_url": member.conn_url,
        "api_url": member.api_url,
        "state": member.state,
        "role": member.role,
        "version": member.version,
    }
    for key in ("xlog_location", "receive_lsn", "replay_lsn"):
        if getattr(member, key) is not None:
            out[key] = getattr(member, key)
    if member.timeline is not None:
        out["timeline"] = member.timeline
    if member.replication_state is not None:
        out["replication_state"] = member.replication_state
    tags = member.tags.to_json()
    if tags:
        out["tags"] = tags
    if member.pending_restart:
        out["pending_restart"] = True
    if member.scheduled_restart:
        out["scheduled_restart"] = dict(member.scheduled_restart)
    return out


def member_from_json(name: str, data: Any) -> Member:
    """Decode a ``members/<name>`` value. Raises ValueError on wrong types. The role
    ``master`` written by older Patroni versions reads as ``primary``."""
    if not isinstance(data, Mapping):
        raise ValueError("member value must be a JSON object")
    tags = data.get("tags")
    if tags is None:
        tags = {}
    if not isinstance(tags, Mapping):
        raise ValueError("tags must be a JSON object")
    replication_state = data.get("replication_state")
    if replication_state is not None and not isinstance(replication_state, str):
        raise ValueError("replication_state must be a string")
    pending_restart = data.get("pending_restart", False)
    if not isinstance(pending_restart, bool):
        raise ValueError("pending_restart must be a boolean")
    scheduled = data.get("scheduled_restart")
    if scheduled is not None and not isinstance(scheduled, Mapping):
        raise ValueError("scheduled_restart must be a JSON object")
    role = _str(data, "role", "uninitialized")
    return Member(
        name=name,
        conn_url=_str(data, "conn_url", ""),
        api_url=_str(data, "api_url", ""),
        role="primary" if role == "master" else role,
        state=_str(data, "state", "stopped"),
        xlog_location=_int(data, "xlog_location"),
        receive_lsn=_int(data, "receive_lsn"),
        replay_lsn=_int(data, "replay_lsn"),
        timeline=_int(data, "timeline"),
        replication_state=replication_state,
        version=_str(data, "version", ""),
        pending_restart=pending_restart,
        tags=Tags.from_json(tags),
        scheduled_restart=dict(scheduled) if scheduled is not None else None,
    )


def history_entry_to_json(entry: HistoryEntry) -> list[Any]:
    """``[timeline, lsn, reason, timestamp]`` plus ``new_leader`` when known."""
    out: list[Any] = [entry.timeline, entry.lsn, entry.reason, entry.timestamp]
    if entry.new_leader is not None:
        out.append(entry.new_leader)
    return out


def history_entry_from_json(item: Any) -> HistoryEntry:
    """Decode one ``history`` element ``[tl, lsn, reason?, timestamp?, new_leader?]``.
    Raises ValueError on wrong types."""
    if not isinstance(item, list) or len(item) < 2:
        raise ValueError(f"history entry must be a list [timeline, lsn, ...], not {item!r}")
    timeline, lsn = item[0], item[1]
    for value in (timeline, lsn):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"history timeline and lsn must be integers: {item!r}")
    reason = item[2] if len(item) > 2 and item[2] is not None else ""
    timestamp = item[3] if len(item) > 3 and item[3] is not None else ""
    new_leader = item[4] if len(item) > 4 else None
    if not isinstance(reason, str) or not isinstance(timestamp, str):
        raise ValueError(f"history reason and timestamp must be strings: {item!r}")
    if new_leader is not None and not isinstance(new_leader, str):
        raise ValueError(f"history new_leader must be a string: {item!r}")
    return HistoryEntry(timeline, lsn, reason, timestamp, new_leader)


def sync_from_json(data: Any) -> SyncKey:
    """Decode the ``sync`` value ``{"leader": name, "sync_standby": "a,b" | [names],
    "quorum": N}`` (other fields are ignored; a missing or null ``quorum`` is 0). Names are
    stripped; empty ones dropped. Raises ValueError on wrong types."""
    if not isinstance(data, Mapping):
        raise ValueError("sync value must be a JSON object")
    leader = data.get("leader")
    if leader is not None and not isinstance(leader, str):
        raise ValueError("sync leader must be a member name")
    standbys = data.get("sync_standby")
    if standbys is None:
        names: list[str] = []
    elif isinstance(standbys, str):
        names = standbys.split(",")
    elif isinstance(standbys, list) and all(isinstance(n, str) for n in standbys):
        names = standbys
    else:
        raise ValueError("sync_standby must be a comma-separated string or a list of names")
    quorum = data.get("quorum")
    if quorum is None:
        quorum = 0
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 0:
        raise ValueError("sync quorum must be a non-negative integer")
    return SyncKey(leader=leader or None,
                   sync_standby=frozenset(n.strip() for n in names if n.strip()),
                   quorum=quorum)


def sync_to_json(key: SyncKey) -> dict[str, Any]:
    """The ``sync`` value as Patroni writes it: ``sync_standby`` a comma-separated string of
    sorted names (null when there is none), ``quorum`` an integer."""
    return {"leader": key.leader,
            "sync_standby": ",".join(sorted(key.sync_standby)) or None,
            "quorum": key.quorum}


@dataclass(frozen=True)
class StatusKey:
    """The ``status`` key: the leader's ``optime``, its slots' positions (``slots``), the
    member slots it keeps for ``member_slots_ttl`` (``retain_slots``) and, in pgha's own
    ``pgha`` field, ``(leader, conn_url)`` of the writer."""

    optime: int | None = None
    slots: Mapping[str, int] = field(default_factory=dict)
    retain_slots: tuple[str, ...] = ()
    writer: tuple[str, str] | None = None


def _lsn(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def status_from_json(data: Mapping[str, Any]) -> tuple[StatusKey, list[str]]:
    """Decode a ``status`` value leniently: a field of the wrong type is left out and named
    in the returned problems (the caller logs them); entries of ``slots`` that are not
    ``name: LSN`` are dropped the same way."""
    problems: list[str] = []
    optime = _lsn(data.get("optime"))
    if optime is None and data.get("optime") is not None:
        problems.append("optime must be a non-negative integer")
    slots: dict[str, int] = {}
    raw_slots = data.get("slots")
    if isinstance(raw_slots, Mapping):
        for name, value in raw_slots.items():
            if isinstance(name, str) and (lsn := _lsn(value)) is not None:
                slots[name] = lsn
            else:
                problems.append(f"slots.{name}: expected an LSN, got {value!r}")
    elif raw_slots is not None:
        problems.append("slots must be an object of slot name to LSN")
    retain = data.get("retain_slots")
    retain_slots: tuple[str, ...] = ()
    if isinstance(retain, list) and all(isinstance(n, str) for n in retain):
        retain_slots = tuple(retain)
    elif retain is not None:
        problems.append("retain_slots must be a list of slot names")
    writer = None
    ours = data.get("pgha")
    if isinstance(ours, Mapping):
        name, url = ours.get("leader"), ours.get("conn_url")
        if isinstance(name, str) and name and isinstance(url, str) and url:
            writer = (name, url)
    return StatusKey(optime, slots, retain_slots, writer), problems


def status_to_json(key: StatusKey) -> dict[str, Any]:
    """The ``status`` value Patroni reads (``optime``, ``slots``, ``retain_slots``), plus
    ``pgha`` when ``writer`` is set (Patroni ignores fields it does not know)."""
    out: dict[str, Any] = {"optime": key.optime, "slots": dict(key.slots),
                           "retain_slots": list(key.retain_slots)}
    if key.writer is not None:
        out["pgha"] = {"leader": key.writer[0], "conn_url": key.writer[1]}
    return out
