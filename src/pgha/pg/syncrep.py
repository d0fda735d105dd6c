"""What a primary observes of its standbys for synchronous replication (:mod:`pgha.core.sync`).

:class:`PrimaryReplication` is owned by :class:`pgha.pg.postgres.Postgres` and lives as long as
the agent process: it keeps the last ``pg_stat_replication`` rows (read with each
observation's snapshot, reused by the ``GET /patroni`` status of the same cycle) and the WAL
position at which this process first saw the server run with its current
``synchronous_standby_names``.
"""

from __future__ import annotations

import logging
from typing import Any

from pgha.core.model import StandbyConn
from pgha.pg.errors import PgError
from pgha.pg.probe import LocalProbe, Snapshot
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A pg_stat_replication row as ``GET /patroni`` shows it (Patroni's fields)."""
    return {k: v for k, v in row.items() if k != "flush_lsn"}


class PrimaryReplication:
    """See the module docstring. Failures to read are logged at DEBUG and observed as no
    standby (never raised)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._seen: tuple[str, int | None] | None = None  # (value, position first seen)

    def observed(self, rows: list[dict[str, Any]]) -> tuple[StandbyConn, ...]:
        """The standbys of ``pg_stat_replication`` rows just read with the snapshot (kept for
        :meth:`rows_for_status`)."""
        self._rows = rows
        return tuple(StandbyConn(str(r.get("application_name") or ""), str(r.get("state") or ""),
                                 str(r.get("sync_state") or ""), r.get("flush_lsn"))
                     for r in self._rows)

    def since(self, snap: Snapshot) -> int | None:
        """Our flush position when this process first saw the server run with its current
        ``synchronous_standby_names``: a standby named since then that has flushed it holds
        every commit acknowledged so far. A restarted agent starts counting afresh."""
        value = snap.sync_standby_names or ""
        if self._seen is None or self._seen[0] != value:
            self._seen = (value, snap.flush_lsn)
        return self._seen[1]

    async def rows_for_status(self, probe: LocalProbe, settings: PgSettings, *,
                              primary: bool, observed: bool = False) -> list[dict[str, Any]]:
        """``replication`` of ``GET /patroni``: the rows of the last observation for a primary
        and, when the status is that observation's (``observed``), for a replica; else a
        replica's (cascading standbys) read now."""
        if primary or observed:
            return [_public(r) for r in self._rows]
        try:
            return [_public(r) for r in await probe.replication(settings)]
        except PgError as exc:
            log.debug("pg_stat_replication unavailable: %s", exc)
            return []
