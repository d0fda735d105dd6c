"""Promotion of the local replica and its record in the DCS ``history`` key."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Protocol

from pgha.core.actions import Upstream
from pgha.core.model import HistoryEntry, PgState
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import describe
from pgha.pg.errors import PgError
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.executor")


class Promotable(Protocol):
    """What a promotion needs of the local PostgreSQL."""

    @property
    def settings(self) -> PgSettings: ...

    def conn_url(self) -> str: ...

    async def observe(self) -> PgState: ...

    async def promote(self) -> bool: ...

    async def checkpoint(self) -> None: ...

    async def timeline_history(self, source: Upstream) -> list[tuple[int, int]]: ...


async def promote_and_record(pg: Promotable, store: ClusterStore, *, pg_ctl_timeout: float,
                             dcs_timeout: float, max_history: int = 0) -> bool:
    """Promote the running replica (see :class:`pgha.core.actions.Promote`): once it
    accepts writes, append the ``history`` entry of the timeline it ended (keeping the last
    ``max_history`` entries when > 0: ``max_timelines_history``), then CHECKPOINT
    (pg_rewind on a former primary reads the new timeline from our pg_control). False when
    the promotion failed; a failed history write or checkpoint is logged, not fatal."""
    before = await pg.observe()
    async with asyncio.timeout(pg_ctl_timeout + 5):
        if not await pg.promote():
            return False
    if before.role is not None and before.role.value == "replica":
        entry = await _ended_timeline(pg, before, dcs_timeout)
        if entry is not None:
            await _record_history(store, entry, dcs_timeout, max_history)
    # A CHECKPOINT puts the new timeline into pg_control, which pg_rewind reads on a former
    # primary rejoining us. It runs after promotion: writes are already accepted.
    try:
        async with asyncio.timeout(pg_ctl_timeout):
            await pg.checkpoint()
    except (PgError, OSError, TimeoutError) as exc:
        log.warning("post-promote checkpoint failed: %s", describe(exc))
    return True


async def _ended_timeline(pg: Promotable, before: PgState,
                          dcs_timeout: float) -> HistoryEntry | None:
    """The ``history`` entry of the promotion that just happened: the timeline it ended
    and where, from the last line of our new timeline's history file (exact). The
    timeline observed before promoting is only a fallback: a replica whose WAL receiver
    is down reports pg_control's timeline, which lags until the next restartpoint (it
    may name the timeline before the one the replica was replaying)."""
    me = Upstream(pg.settings.name, pg.conn_url())
    ended: tuple[int, int] | None = None
    try:
        async with asyncio.timeout(dcs_timeout):
            history = await pg.timeline_history(me)
        ended = history[-1] if history else None
    except (PgError, OSError, TimeoutError) as exc:
        log.warning("could not read our timeline history: %s", describe(exc))
    if ended is None:
        if before.timeline is None or before.wal_position is None:
            return None
        ended = (before.timeline, before.wal_position)
    return HistoryEntry(timeline=ended[0], lsn=ended[1],
                        reason="no recovery target specified",
                        timestamp=datetime.now(UTC).isoformat(),
                        new_leader=pg.settings.name)

async def _record_history(store: ClusterStore, entry: HistoryEntry, dcs_timeout: float,
                          max_history: int) -> None:
    """Append ``entry`` to the DCS ``history`` key; a failure is logged, not fatal (the
    promotion stands; replicas still check divergence against our history file when
    they rejoin)."""
    try:
        async with asyncio.timeout(dcs_timeout):
            if await store.append_history(entry, max_entries=max_history):
                return
        log.warning("could not record the promotion in history: every compare-and-set "
                    "lost its race")
    except (DCSError, TimeoutError) as exc:
        log.warning("could not record the promotion in history: %s", describe(exc))
