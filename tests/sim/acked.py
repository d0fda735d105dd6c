"""Acknowledged commits in synchronous mode, and the invariant that no promotion loses one
(the :class:`~tests.sim.cluster.Sim` part of it).

:meth:`AckedCommits._acknowledge` (called by ``Sim.advance_wal`` after the replicas received)
keeps the latest commit the primary acknowledged while its ``synchronous_standby_names``
named standbys and the DCS config had synchronous mode on (:attr:`AckedCommits.acked`: the
primary's WAL cut there, :meth:`tests.support.fake_pg.FakePostgres.sync_ack_lsn`). An empty
value acknowledges at once but unprotected and does not count; the config switched off
withdraws the promise (``acked`` is forgotten). Whoever is promoted or started as primary
while the config has synchronous mode on must hold it ("acknowledged commit lost"), except a
member an operator's failover named with no leader named (it accepts the loss, as for the lag
limit).
"""

from __future__ import annotations

from typing import Any

from pgha.core.model import HaSettings, SyncKey, SyncMode
from pgha.dcs.codec import sync_from_json
from tests.support.fake_pg import (
    FakePostgres,
    Segments,
    common_prefix,
    consistent,
    truncate,
    wal_end,
)


class AckedCommits:
    """Mixed into the Sim, which supplies the DCS reads and :meth:`violation`."""

    sync_mode: str | None  # synchronous replication modelled (and its faults drawn)
    acked: Segments  # the latest protected acknowledged commit
    acked_at: float | None  # when it last advanced
    _config_cache: tuple[bytes | None, HaSettings]

    def init_acked(self, sync_mode: str | None) -> None:
        self.sync_mode = sync_mode
        self.acked, self.acked_at = (), None
        self._config_cache = (None, HaSettings())

    def _key(self, name: str) -> bytes | None:
        raise NotImplementedError

    def _key_json(self, name: str) -> Any:
        raise NotImplementedError

    def violation(self, what: str) -> None:
        raise NotImplementedError

    def dcs_settings(self) -> HaSettings:
        """The dynamic configuration in the DCS now (defaults when there is none)."""
        raw = self._key("config")
        if raw != self._config_cache[0]:
            config = self._key_json("config")
            settings = HaSettings.from_config(config if isinstance(config, dict) else {})
            self._config_cache = (raw, settings)
        return self._config_cache[1]

    def dcs_sync_key(self) -> SyncKey | None:
        """The ``sync`` key now (None: absent or unreadable)."""
        raw = self._key_json("sync")
        if not isinstance(raw, dict):
            return None
        return sync_from_json(raw)

    def sync_on(self) -> bool:
        return (self.sync_mode is not None
                and self.dcs_settings().synchronous_mode is not SyncMode.OFF)

    def _check_acked(self, pg: FakePostgres, what: str, waived: bool) -> None:
        """The new primary holds the latest protected acknowledged commit (synchronous mode
        on); afterwards only what it holds counts (a waived loss is accepted)."""
        held = common_prefix(pg.segments, self.acked)
        if self.sync_on() and not waived and held < wal_end(self.acked):
            self.violation(f"{pg.name} {what}: acknowledged commit lost (it holds WAL up to "
                           f"{held} of the acknowledged {self.acked})")
        self.acked = truncate(self.acked, held)

    def acknowledge_now(self, prim: FakePostgres) -> None:
        """:meth:`_acknowledge` at once (a scripted write, between two steps of time)."""
        self._acknowledge(prim, self.now())

    def now(self) -> float:
        raise NotImplementedError

    def _acknowledge(self, prim: FakePostgres | None, at: float) -> None:
        """Advance :attr:`acked` to what the primary's standbys acknowledged by ``at`` (see
        the module docstring); synchronous mode off in the DCS forgets it."""
        if not self.sync_on():
            self.acked = ()
            return
        lsn = prim.sync_ack_lsn() if prim is not None else None
        if prim is None or lsn is None or lsn <= wal_end(self.acked):
            return
        acked = truncate(prim.segments, lsn)
        if not consistent(acked, self.acked):
            self.violation(f"{prim.name} acknowledged commits on WAL that diverged from the "
                           "acknowledged ones")
        self.acked, self.acked_at = acked, at
