"""Which value of a PostgreSQL parameter wins: pure functions, no IO.

Layers, lowest first (Patroni's order):

1. :data:`DEFAULT_PARAMETERS`: pgha's defaults for the parameters that must be the same on
   every member (see below);
2. the dynamic configuration's ``postgresql.parameters`` (DCS ``config`` key);
3. the local YAML's ``postgresql.parameters``.

:func:`merge_judged` first judges each layer against the server's parameter catalogue
(:func:`pgha.config.pg_parameters.judge_parameters`): names renamed between majors are
translated for the server's major (``wal_keep_segments`` <-> ``wal_keep_size``, the default
included), unknown names and values PostgreSQL would reject are left out with a warning, so one
bad value never keeps PostgreSQL from starting.

Names are compared case-insensitively (as PostgreSQL does) and written lower-cased. Parameters
pgha owns (listen_addresses, port, cluster_name, hot_standby, recovery settings, the minimums of
max_wal_senders/max_replication_slots, ...) are enforced later by
:func:`pgha.pg.conf.managed_parameters`, whatever the layers say.

Shared-memory parameters (:data:`CLUSTER_WIDE`): a hot standby refuses to replay WAL (PostgreSQL
pauses recovery) when one of max_connections, max_worker_processes, max_wal_senders,
max_prepared_transactions or max_locks_per_transaction is lower than on its primary. pgha keeps
them identical on every member, as Patroni does: they come from the dynamic configuration (or the
default) only, and a local YAML value for them is ignored with a warning. While a change is being
rolled out (every member reports ``pending_restart``), a replica never writes a value lower than
the one its primary last recorded in the WAL (``pg_controldata`` "... setting" lines; see
:func:`clamp_to_primary`): a decrease takes effect on a replica only after the primary has been
restarted with it and the replica has replayed that record. Operators restart replicas first
after an increase, the primary first after a decrease; the clamp keeps a replica restarted "too
early" running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.config.pg_parameters import ParamCatalogue, judge_parameters

DEFAULT_PARAMETERS: Mapping[str, Any] = {
    "max_connections": 100,
    "max_locks_per_transaction": 64,
    "max_worker_processes": 8,
    "max_prepared_transactions": 0,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
    "track_commit_timestamp": False,
}
"""Written when neither the dynamic nor the local configuration sets the parameter."""

CLUSTER_WIDE: frozenset[str] = frozenset({
    "max_connections", "max_worker_processes", "max_wal_senders",
    "max_prepared_transactions", "max_locks_per_transaction",
})
"""Shared-memory parameters a replica needs at least as high as its primary's."""

DYNAMIC_ONLY: frozenset[str] = CLUSTER_WIDE | frozenset({
    "max_replication_slots", "wal_level", "track_commit_timestamp", "wal_keep_size",
    "wal_keep_segments", "wal_log_hints",
})
"""Settable only in the dynamic configuration: the parameters Patroni passes on the command
line (a local ``postgresql.parameters`` value is ignored, as Patroni ignores it)."""

CONTROLDATA_NAMES: Mapping[str, str] = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}
"""``pg_controldata`` line (the value the primary last recorded) of each cluster-wide name."""


def merge_parameters(dynamic: Mapping[str, Any], local: Mapping[str, Any],
                     catalogue: ParamCatalogue | None = None,
                     ) -> tuple[dict[str, Any], list[str]]:
    """``(parameters, ignored)``: defaults < ``dynamic`` < ``local``, names lower-cased.

    ``ignored`` lists the local names that were not applied because they are
    :data:`DYNAMIC_ONLY` (the caller logs them). Neither input is modified; values are not
    validated here (see :func:`merge_judged`). With a ``catalogue``, the defaults are written
    under the names of its major (``wal_keep_segments = 8`` up to 12).
    """
    out: dict[str, Any] = dict(DEFAULT_PARAMETERS) if catalogue is None else \
        judge_parameters(DEFAULT_PARAMETERS, catalogue).kept
    for name, value in dynamic.items():
        out[str(name).lower()] = value
    ignored: list[str] = []
    for name, value in local.items():
        key = str(name).lower()
        if key in DYNAMIC_ONLY:
            ignored.append(str(name))
            continue
        out[key] = value
    return out, ignored


@dataclass(frozen=True)
class Merged:
    """Outcome of :func:`merge_judged`: the ``parameters`` to write, the local cluster-wide
    names ``ignored``, ``warnings`` (each names the layer and parameter) and ``notes`` (the
    translations made, for the info log)."""

    parameters: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def merge_judged(dynamic: Mapping[str, Any], local: Mapping[str, Any],
                 catalogue: ParamCatalogue | None) -> Merged:
    """Judge ``dynamic`` and ``local`` against ``catalogue`` (None: pgha's name list), leave
    out what PostgreSQL would not accept, translate renamed names for its major, then
    :func:`merge_parameters`. Neither input is modified."""
    warnings: list[str] = []
    notes: list[str] = []
    kept: list[dict[str, Any]] = []
    for where, params in (("dynamic configuration postgresql.parameters", dynamic),
                          ("postgresql.parameters", local)):
        judged = judge_parameters(params, catalogue)
        warnings += [f"{where}.{name}: {why}; ignored"
                     for name, why in {**judged.dropped, **judged.invalid}.items()]
        warnings += [f"{where}: {conflict}" for conflict in judged.conflicts]
        notes += [f"{where}: {note}" for note in judged.notes]
        kept.append(judged.kept)
    params, ignored = merge_parameters(kept[0], kept[1], catalogue)
    return Merged(params, ignored, warnings, notes)


def restart_needed(old: Mapping[str, Any], new: Mapping[str, Any],
                   catalogue: ParamCatalogue | None) -> dict[str, dict[str, str]]:
    """The parameters whose value differs between ``old`` and ``new`` (lower-case names) and
    whose context in ``catalogue`` is ``postmaster``, as ``{name: {"old_value", "new_value"}}``
    (``pending_restart_reason`` shape; a missing value is ``""``). Empty without a catalogue."""
    if catalogue is None:
        return {}
    return {name: {"old_value": str(old.get(name, "")), "new_value": str(new.get(name, ""))}
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name) and catalogue.needs_restart(name)}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def clamp_to_primary(params: Mapping[str, Any],
                     controldata: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """For a replica: ``(parameters, raised)`` where every :data:`CLUSTER_WIDE` value lower than
    the primary's recorded one (from ``controldata``, the parsed ``pg_controldata`` output) is
    raised to it. ``raised`` maps each raised name to the value written. Values that are not
    integers, and names missing from ``controldata``, are left as they are."""
    out = dict(params)
    raised: dict[str, int] = {}
    for name, line in CONTROLDATA_NAMES.items():
        recorded = _as_int(controldata.get(line, ""))
        wanted = _as_int(out.get(name))
        if recorded is not None and wanted is not None and wanted < recorded:
            out[name] = recorded
            raised[name] = recorded
    return out, raised
