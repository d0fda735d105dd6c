"""The decision loop's read of the local server in one statement: the status snapshot
(:data:`pgha.pg.probe.SNAPSHOT_SQL`'s columns), ``pg_stat_replication`` (as
:data:`pgha.pg.probe.REPLICATION_SQL` returns it) and the replication slots (as
:data:`pgha.pg.slots.SLOTS_SQL` returns them), so an idle cycle costs one round trip.

The rows of the two views come as JSON arrays with the same keys, order and Python types as
the separate queries' rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from pgha.core.model import ObservedSlot
from pgha.pg.probe import (
    QUERY_TIMEOUT,
    SNAPSHOT_SQL,
    Connection,
    LocalProbe,
    Snapshot,
    fetch_status_row,
    snapshot_of,
)
from pgha.pg.settings import PgSettings
from pgha.pg.slots import row_slot

OBSERVE_SQL = SNAPSHOT_SQL.rstrip() + """,
       (SELECT coalesce(json_agg(json_build_object(
                   'usename', usename, 'application_name', application_name,
                   'client_addr', client_addr::text, 'state', state, 'sync_state', sync_state,
                   'sync_priority', sync_priority,
                   'flush_lsn', pg_wal_lsn_diff(flush_lsn, '0/0')::bigint)
                 ORDER BY application_name, pid), '[]')
          FROM pg_stat_replication) AS replication,
       (SELECT coalesce(json_agg(json_build_object(
                   'slot_name', s.slot_name, 'slot_type', s.slot_type, 'database', d.datname,
                   'plugin', s.plugin, 'active', s.active,
                   'position', pg_wal_lsn_diff(CASE WHEN s.slot_type = 'logical'
                                                    THEN s.confirmed_flush_lsn
                                                    ELSE s.restart_lsn END, '0/0')::bigint,
                   'lost', coalesce(s.wal_status = 'lost', false))
                 ORDER BY s.slot_name), '[]')
          FROM pg_replication_slots s LEFT JOIN pg_database d ON d.oid = s.datoid
         WHERE NOT s.temporary) AS slots
"""


@dataclass(frozen=True)
class Observation:
    """One read of a running server: its snapshot, ``pg_stat_replication`` rows (cascading
    standbys on a replica) and replication slots (temporary ones left out)."""

    snapshot: Snapshot
    replication: list[dict[str, Any]]
    slots: tuple[ObservedSlot, ...]


async def observation(conn: Connection, timeout: float = QUERY_TIMEOUT) -> Observation:
    """Read an :class:`Observation`; raises PgError."""
    row = await fetch_status_row(conn, OBSERVE_SQL, timeout)
    return Observation(snapshot_of(row), list(json.loads(row["replication"])),
                       tuple(row_slot(r) for r in json.loads(row["slots"])))


async def observe_local(probe: LocalProbe, settings: PgSettings) -> Observation:
    """An :class:`Observation` of the local server over ``probe``'s pooled connection, its
    snapshot's timeline remembered as :meth:`LocalProbe.snapshot` does; raises PgError."""
    obs = await probe.run(settings, observation)
    return replace(obs, snapshot=probe.remember_timeline(obs.snapshot))
