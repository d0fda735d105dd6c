"""The decision loop's read of the local server in one statement: the status snapshot
(:data:`pgha.pg.probe.SNAPSHOT_SQL`'s columns), ``pg_stat_replication`` (as
:data:`pgha.pg.probe.REPLICATION_SQL` returns it) and the replication slots (as
:data:`pgha.pg.slots.SLOTS_SQL` returns them), so an idle cycle costs one round trip.

The rows of the two views come as JSON arrays built from the same column lists as the
separate queries (:mod:`pgha.pg.sqlcolumns`): the same keys, order and Python types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from pgha.core.model import ObservedSlot
from pgha.pg.probe import (
    QUERY_TIMEOUT,
    REPLICATION_COLUMNS,
    REPLICATION_ORDER,
    REPLICATION_SOURCE,
    SNAPSHOT_SQL,
    Connection,
    LocalProbe,
    Snapshot,
    fetch_status_row,
    snapshot_of,
)
from pgha.pg.settings import PgSettings
from pgha.pg.slots import SLOT_COLUMNS, SLOTS_ORDER, SLOTS_SOURCE, row_slot
from pgha.pg.sqlcolumns import json_rows_sql

OBSERVE_SQL = (SNAPSHOT_SQL.rstrip() + ",\n       "
               + json_rows_sql(REPLICATION_COLUMNS, REPLICATION_SOURCE, REPLICATION_ORDER)
               + " AS replication,\n       "
               + json_rows_sql(SLOT_COLUMNS, SLOTS_SOURCE, SLOTS_ORDER) + " AS slots\n")


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
