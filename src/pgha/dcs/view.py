"""The cluster's keys parsed into the core's :class:`~pgha.core.model.ClusterView`.

:func:`parse_snapshot` turns a :class:`~pgha.dcs.base.Snapshot` of every key under the cluster
prefix into the view the decision core reads. Values written by someone else that cannot be
parsed never raise: they are logged at WARNING on the ``pgha.dcs`` logger, naming the key, and
left out of the view. Pure (no IO) apart from that logging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from pgha.core.model import ClusterView, HaSettings, HistoryEntry, Leader, Member, SyncKey
from pgha.dcs.base import KeyValue, Snapshot
from pgha.dcs.codec import (
    StatusKey,
    history_entry_from_json,
    loads,
    member_from_json,
    status_from_json,
    sync_from_json,
)

log = logging.getLogger("pgha.dcs")

T = TypeVar("T")


def _json_value(kv: KeyValue) -> Any:
    """Parsed JSON of ``kv``, or None (with a warning) when it is not valid JSON."""
    try:
        return loads(kv.value)
    except ValueError as exc:
        log.warning("ignoring DCS key %s: not valid JSON (%s)", kv.key, exc)
        return None


def json_object(kv: KeyValue) -> dict[str, Any] | None:
    """Parsed JSON object of ``kv``, or None (with a warning) when it is not one."""
    data = _json_value(kv)
    if data is None:
        return None
    if not isinstance(data, dict):
        log.warning("ignoring DCS key %s: expected a JSON object, got %s",
                    kv.key, type(data).__name__)
        return None
    return data


def _text(kv: KeyValue) -> str | None:
    try:
        return kv.value.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("ignoring DCS key %s: value is not UTF-8 text", kv.key)
        return None


def history_entries(kv: KeyValue) -> tuple[HistoryEntry, ...]:
    """The parseable entries of a ``history`` key (others logged and left out)."""
    data = _json_value(kv)
    if data is None:
        return ()
    if not isinstance(data, list):
        log.warning("ignoring DCS key %s: expected a JSON list, got %s",
                    kv.key, type(data).__name__)
        return ()
    entries: list[HistoryEntry] = []
    for item in data:
        try:
            entries.append(history_entry_from_json(item))
        except ValueError as exc:
            log.warning("ignoring an entry of DCS key %s: %s", kv.key, exc)
    return tuple(entries)


def _maybe(keys: Mapping[str, KeyValue], name: str,
           parse: Callable[[KeyValue], T | None]) -> T | None:
    """``parse`` of key ``name`` when it is present, else None."""
    kv = keys.get(name)
    return None if kv is None else parse(kv)


def _settings(config: Mapping[str, Any] | None, key: str) -> HaSettings:
    """The core's settings from the ``config`` JSON (defaults when absent or unusable)."""
    if config is None:
        return HaSettings()
    try:
        return HaSettings.from_config(config)
    except (ValueError, TypeError, OverflowError) as exc:
        log.warning("DCS key %s: unusable settings, using defaults (%s)", key, exc)
        return HaSettings()


def _leader(kv: KeyValue) -> Leader | None:
    text = _text(kv)
    if text:
        return Leader(text, kv.revision, kv.session)
    if text is not None:
        log.warning("ignoring DCS key %s: empty leader name", kv.key)
    return None


def _members(keys: Mapping[str, KeyValue]) -> dict[str, Member]:
    """Every parseable ``members/<name>`` key (names holding ``/`` are not member keys)."""
    members: dict[str, Member] = {}
    for name, kv in keys.items():
        if not name.startswith("members/"):
            continue
        member_name = name[len("members/"):]
        if not member_name or "/" in member_name:
            continue
        data = _json_value(kv)
        if data is None:
            continue
        try:
            members[member_name] = member_from_json(member_name, data)
        except ValueError as exc:
            log.warning("ignoring DCS key %s: %s", kv.key, exc)
    return members


def _status(keys: Mapping[str, KeyValue]) -> StatusKey:
    """The ``status`` key (fields of the wrong type logged and left out); its ``optime``
    falls back to the ``optime/leader`` key old Patroni versions write."""
    data = _maybe(keys, "status", json_object)
    key = StatusKey()
    if data is not None:
        key, problems = status_from_json(data)
        for problem in problems:
            log.warning("ignoring part of DCS key %s: %s", keys["status"].key, problem)
    if key.optime is None:
        text = _maybe(keys, "optime/leader", _text)
        if text is not None and text.strip().isdigit():
            key = replace(key, optime=int(text.strip()))
    return key


def _failover(kv: KeyValue) -> dict[str, Any] | None:
    """The switchover/failover request; an empty value means none."""
    return json_object(kv) if kv.value.strip() else None


def _failsafe(kv: KeyValue) -> dict[str, str] | None:
    data = json_object(kv)
    if data is None:
        return None
    if not all(isinstance(v, str) for v in data.values()):
        log.warning("ignoring DCS key %s: expected {member: api_url}", kv.key)
        return None
    return {str(k): v for k, v in data.items()}


def _sync(kv: KeyValue) -> SyncKey | None:
    data = json_object(kv)
    if data is None:
        return None
    try:
        return sync_from_json(data)
    except ValueError as exc:
        log.warning("ignoring DCS key %s: %s", kv.key, exc)
        return None


def parse_snapshot(prefix: str, snapshot: Snapshot) -> ClusterView:
    """Build the :class:`ClusterView` of the keys under ``prefix``. Garbage values are logged
    and left out; unknown keys are ignored silently (but listed in ``key_revisions``). Never
    raises for bad data."""
    keys = {key[len(prefix):]: kv for key, kv in snapshot.items.items()
            if key.startswith(prefix)}
    config = _maybe(keys, "config", json_object)
    status = _status(keys)
    return ClusterView(
        initialize=_maybe(keys, "initialize", _text),
        settings=_settings(config, prefix + "config"),
        config=config,
        leader=_maybe(keys, "leader", _leader),
        members=_members(keys),
        optime=status.optime,
        status_leader=status.writer,
        status_slots=status.slots,
        retain_slots=status.retain_slots,
        history=_maybe(keys, "history", history_entries) or (),
        failover=_maybe(keys, "failover", _failover),
        failsafe=_maybe(keys, "failsafe", _failsafe),
        revision=snapshot.revision,
        sync=_maybe(keys, "sync", _sync),
        key_revisions={name: kv.revision for name, kv in keys.items()},
    )
