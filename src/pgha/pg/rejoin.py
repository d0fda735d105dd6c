"""The rejoin procedure: bring a stopped former primary (or a possibly diverged replica) back
as a replica of the leader, never starting diverged data as is."""

from __future__ import annotations

import logging
from typing import Protocol

from pgha.core.actions import StopMode, Upstream
from pgha.core.model import DataState
from pgha.core.timeline import diverged
from pgha.pg import controldata
from pgha.pg.errors import PgError
from pgha.pg.rewind import source_timeline_history
from pgha.pg.settings import PgSettings


class Postgres(Protocol):
    """What the rejoin procedure needs of :class:`pgha.pg.postgres.Postgres`."""

    @property
    def settings(self) -> PgSettings: ...

    def is_running(self) -> bool: ...

    def data_state(self) -> DataState: ...

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool: ...

    async def start(self, role: str, upstream: Upstream | None) -> bool: ...

    async def wipe(self) -> None: ...

    async def clone(self, source: Upstream) -> bool: ...

    async def crash_recover(self) -> bool: ...

    async def controldata(self) -> dict[str, str]: ...

    async def ensure_source_checkpointed(self, source: Upstream) -> None: ...

    async def rewind(self, source: Upstream) -> bool: ...

log = logging.getLogger("pgha.pg")


async def _reclone(pg: Postgres, leader: Upstream, why: str) -> bool:
    log.warning("rejoin: %s: wiping the data directory and cloning from %s", why, leader.name)
    await pg.wipe()
    if not await pg.clone(leader):
        log.error("rejoin: clone from %s failed", leader.name)
        return False
    return True


async def _rewind_or_reclone(pg: Postgres, leader: Upstream, use_pg_rewind: bool,
                             why: str) -> bool:
    """Make the data a prefix of the leader's history; True when done."""
    if not use_pg_rewind:
        return await _reclone(pg, leader, f"{why} and use_pg_rewind is off")
    try:
        await pg.ensure_source_checkpointed(leader)
    except PgError as exc:
        log.error("rejoin: %s, but the leader's checkpoint cannot be confirmed: %s", why, exc)
        return False
    log.info("rejoin: %s: rewinding from %s", why, leader.name)
    if await pg.rewind(leader):
        return True
    if pg.settings.remove_data_directory_on_rewind_failure:
        return await _reclone(pg, leader, "pg_rewind failed")
    log.error("rejoin: pg_rewind failed and remove_data_directory_on_rewind_failure is off")
    return False


async def rejoin(pg: Postgres, leader: Upstream, use_pg_rewind: bool) -> bool:
    """Steps (each logged with its reason):

    1. A running postmaster is stopped (fast) first; an EMPTY data directory is cloned; an
       INVALID one is left for the operator (False).
    2. Single-user crash recovery when the data was not shut down cleanly. If that fails, the
       data is handled like diverged data that cannot be rewound.
    3. Local ``(timeline, lsn)`` from pg_control (see
       :func:`pgha.pg.controldata.divergence_position`); the leader's timeline and history over
       SQL. An unreachable leader ends the rejoin (False) before anything is changed.
    4. :func:`pgha.core.timeline.diverged`; unknown counts as diverged.
    5. Diverged: with ``use_pg_rewind`` make sure the leader checkpointed its new timeline,
       then pg_rewind; on rewind failure wipe and re-clone only when
       ``remove_data_directory_on_rewind_failure``, else False. Without ``use_pg_rewind``:
       wipe and re-clone.
    6. Start as a replica of ``leader``.
    """
    if pg.is_running():
        log.info("rejoin: PostgreSQL is running; stopping it (fast) first")
        if not await pg.stop(StopMode.FAST):
            return False
    state = pg.data_state()
    if state == DataState.INVALID:
        log.error("rejoin: data directory is not a valid cluster; not touching it")
        return False
    if state == DataState.EMPTY:
        if not await _reclone(pg, leader, "data directory is empty"):
            return False
        return await pg.start("replica", leader)

    if not await pg.crash_recover():
        if use_pg_rewind and not pg.settings.remove_data_directory_on_rewind_failure:
            log.error("rejoin: crash recovery failed; not re-cloning "
                      "(remove_data_directory_on_rewind_failure is off)")
            return False
        try:
            await source_timeline_history(pg.settings, leader)  # reachable before wiping
        except PgError as exc:
            log.error("rejoin: crash recovery failed and leader unreachable: %s", exc)
            return False
        if not await _reclone(pg, leader, "crash recovery failed"):
            return False
        return await pg.start("replica", leader)

    local = controldata.divergence_position(await pg.controldata())
    try:
        leader_tli, history = await source_timeline_history(pg.settings, leader)
    except PgError as exc:
        log.error("rejoin: cannot read the timeline history of %s: %s", leader.name, exc)
        return False
    verdict = None if local is None else diverged(local[0], local[1], leader_tli, history)
    where = (f"local timeline {local[0]} at {controldata.format_lsn(local[1])}"
             if local else "local position unknown")
    hist = ", ".join(f"{tl}@{controldata.format_lsn(lsn)}" for tl, lsn in history) or "none"
    log.info("rejoin: %s; leader %s on timeline %d, history [%s] -> %s", where, leader.name,
             leader_tli, hist,
             {True: "diverged", False: "can follow", None: "unknown"}[verdict])
    if verdict is not False:
        why = "diverged from the leader" if verdict else "divergence unknown"
        if not await _rewind_or_reclone(pg, leader, use_pg_rewind, why):
            return False
    return await pg.start("replica", leader)
