"""Which value of a PostgreSQL parameter wins: pure functions, no IO.

Layers, lowest first (Patroni's order):

1. :data:`DEFAULT_PARAMETERS`: pgha's defaults for the parameters that must be the same on
   every member (see below);
2. the dynamic configuration's ``postgresql.parameters`` (DCS ``config`` key);
3. the local YAML's ``postgresql.parameters``.

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
from typing import Any

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
"""Settable only in the dynamic configuration (identical on all members)."""

CONTROLDATA_NAMES: Mapping[str, str] = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}
"""``pg_controldata`` line (the value the primary last recorded) of each cluster-wide name."""


def merge_parameters(dynamic: Mapping[str, Any],
                     local: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(parameters, ignored)``: defaults < ``dynamic`` < ``local``, names lower-cased.

    ``ignored`` lists the local names that were not applied because they are
    :data:`CLUSTER_WIDE` (the caller logs them). Neither input is modified; values are not
    validated (PostgreSQL does that on reload).
    """
    out: dict[str, Any] = dict(DEFAULT_PARAMETERS)
    for name, value in dynamic.items():
        out[str(name).lower()] = value
    ignored: list[str] = []
    for name, value in local.items():
        key = str(name).lower()
        if key in CLUSTER_WIDE:
            ignored.append(str(name))
            continue
        out[key] = value
    return out, ignored


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
