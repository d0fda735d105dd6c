"""The rejoin procedure: bring a stopped former primary (or a possibly diverged replica) back
as a replica of the leader, never starting diverged data as is. It observes the data and the
leader and carries out the plan of :mod:`pgha.core.rejoin` (which decides between following
as is, pg_rewind, re-cloning and waiting for the operator)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pgha.core.actions import StopMode, Upstream
from pgha.core.model import DataState
from pgha.core.rejoin import (
    RejoinPlan,
    RejoinReason,
    RejoinStep,
    data_reason,
    divergence_reason,
    rejoin_plan,
)
from pgha.core.timeline import diverged
from pgha.pg import controldata
from pgha.pg.discarded import DiscardedLog, collect, finish_report, log_report
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

    async def crash_recover(self) -> bool | None: ...

    async def controldata(self) -> dict[str, str]: ...

    async def ensure_source_checkpointed(self, source: Upstream) -> None: ...

    async def rewind(self, source: Upstream) -> bool: ...

log = logging.getLogger("pgha.pg")

History = tuple[int, list[tuple[int, int]]]


class _Discards:
    """What the rejoin is about to throw away: :func:`pgha.pg.discarded.collect` runs once,
    before the first step that destroys WAL (pg_rewind, wipe), and the report is recorded
    after that step ran (a pg_rewind that failed is not recorded: it may have changed nothing;
    the re-clone that may follow is). Nothing is collected without a ``DiscardedLog``."""

    def __init__(self, pg: Postgres, leader: Upstream, book: DiscardedLog | None,
                 history: History | None) -> None:
        self.pg, self.leader, self.book, self.history = pg, leader, book, history
        self.report: dict[str, Any] | None = None

    async def before(self) -> None:
        if self.book is not None and self.report is None:
            self.report = await collect(self.pg.settings, self.leader, self.history)

    async def after(self, method: str) -> None:
        if self.book is None or self.report is None:
            return
        done = finish_report(self.report, method)
        await asyncio.to_thread(self.book.record, done)
        log_report(done)


async def rejoin(pg: Postgres, leader: Upstream, use_pg_rewind: bool,
                 discarded: DiscardedLog | None = None) -> bool:
    """Steps (each logged with its reason); what to do with the data is decided by
    :func:`pgha.core.rejoin.rejoin_plan`, this carries it out:

    1. A running postmaster is stopped (fast) first; an EMPTY data directory is cloned; an
       INVALID one is left for the operator (False).
    2. Single-user crash recovery when the data was not shut down cleanly. If that fails, the
       data is handled like data pg_rewind could not repair (re-cloned, once the leader
       answers, only with ``remove_data_directory_on_rewind_failure``); if it could not run or
       did not finish, nothing is changed (False: the agent retries later).
    3. Local ``(timeline, lsn)`` from pg_control (see
       :func:`pgha.pg.controldata.divergence_position`); the leader's timeline and history over
       SQL. An unreachable leader ends the rejoin (False) before anything is changed.
    4. :func:`pgha.core.timeline.diverged`; unknown counts as diverged.
    5. Diverged: with ``use_pg_rewind`` make sure the leader checkpointed its new timeline,
       then pg_rewind; on rewind failure wipe and re-clone only when
       ``remove_data_directory_on_rewind_failure``, else False. Without ``use_pg_rewind``:
       wipe and re-clone only with ``remove_data_directory_on_diverged_timelines``, else False
       (PostgreSQL stays stopped; the log says what the operator can do).
    6. Start as a replica of ``leader``.

    With ``discarded``, the WAL a rewind or re-clone of existing data throws away is read
    before it is destroyed and recorded there (see :class:`_Discards`); that never changes
    the outcome of the rejoin.
    """
    if pg.settings.use_pg_rewind is not None:
        use_pg_rewind = pg.settings.use_pg_rewind  # the local YAML wins over the dynamic value
    if not await _stop_if_running(pg):
        return False
    observed = await _observe(pg, leader)
    if observed is None:
        return False  # the leader's timeline history could not be read: nothing changed
    reason, history = observed
    keeps_data = reason not in (RejoinReason.DATA_EMPTY, RejoinReason.DATA_INVALID)
    discards = _Discards(pg, leader, discarded if keeps_data else None, history)
    if not await _carry_out(pg, leader, _plan(pg, reason, use_pg_rewind), use_pg_rewind,
                            discards):
        return False
    return await pg.start("replica", leader)


def _plan(pg: Postgres, reason: RejoinReason, use_pg_rewind: bool) -> RejoinPlan:
    st = pg.settings
    plan = rejoin_plan(reason, use_pg_rewind=use_pg_rewind,
                       remove_on_rewind_failure=st.remove_data_directory_on_rewind_failure,
                       remove_on_diverged=st.remove_data_directory_on_diverged_timelines)
    log.info("rejoin: plan %s (%s)", plan.step.value, plan.reason.value)
    return plan


async def _stop_if_running(pg: Postgres) -> bool:
    if not pg.is_running():
        return True
    log.info("rejoin: PostgreSQL is running; stopping it (fast) first")
    return await pg.stop(StopMode.FAST)


async def _observe(pg: Postgres, leader: Upstream
                   ) -> tuple[RejoinReason, History | None] | None:
    """What the data is, as far as the plan needs it: not a valid cluster, crash recovery
    failed, or the divergence verdict (with the leader's history it was judged against).
    None: the leader's history could not be read."""
    reason = data_reason(pg.data_state())
    if reason is not None:
        return reason, None
    recovered = await pg.crash_recover()
    if recovered is None:
        return RejoinReason.CRASH_RECOVERY_INCOMPLETE, None
    if not recovered:
        return RejoinReason.CRASH_RECOVERY_FAILED, None
    return await _divergence(pg, leader)


async def _divergence(pg: Postgres, leader: Upstream
                      ) -> tuple[RejoinReason, History] | None:
    """Compare the local position with the leader's timeline history (None: unreadable)."""
    local = controldata.divergence_position(await pg.controldata())
    try:
        leader_tli, history = await source_timeline_history(pg.settings, leader)
    except PgError as exc:
        log.error("rejoin: cannot read the timeline history of %s: %s", leader.name, exc)
        return None
    verdict = None if local is None else diverged(local[0], local[1], leader_tli, history)
    where = (f"local timeline {local[0]} at {controldata.format_lsn(local[1])}"
             if local else "local position unknown")
    hist = ", ".join(f"{tl}@{controldata.format_lsn(lsn)}" for tl, lsn in history) or "none"
    log.info("rejoin: %s; leader %s on timeline %d, history [%s] -> %s", where, leader.name,
             leader_tli, hist,
             {True: "diverged", False: "can follow", None: "unknown"}[verdict])
    return divergence_reason(verdict), (leader_tli, history)


async def _carry_out(pg: Postgres, leader: Upstream, plan: RejoinPlan,
                     use_pg_rewind: bool, discards: _Discards) -> bool:
    """Make the data fit to follow ``leader`` as ``plan`` says; True when it is."""
    match plan.step:
        case RejoinStep.FOLLOW:
            return True
        case RejoinStep.WAIT_FOR_OPERATOR:
            log.error("rejoin: %s", plan.message)
            return False
        case RejoinStep.RECLONE:
            if plan.confirm_leader_first and not await _leader_answers(pg, leader, plan):
                return False
            return await _reclone(pg, leader, plan.message, discards)
        case RejoinStep.REWIND:
            rewound = await _rewind(pg, leader, plan.message, discards)
            if rewound is None:
                return False
            if rewound:
                return True
            retry = _plan(pg, RejoinReason.REWIND_FAILED, use_pg_rewind)
            return await _carry_out(pg, leader, retry, use_pg_rewind, discards)


async def _leader_answers(pg: Postgres, leader: Upstream, plan: RejoinPlan) -> bool:
    try:
        await source_timeline_history(pg.settings, leader)
    except PgError as exc:
        log.error("rejoin: %s and leader unreachable: %s", plan.message, exc)
        return False
    return True


async def _reclone(pg: Postgres, leader: Upstream, why: str, discards: _Discards) -> bool:
    await discards.before()
    log.warning("rejoin: %s: wiping the data directory and cloning from %s", why, leader.name)
    await pg.wipe()
    await discards.after("reclone")
    if not await pg.clone(leader):
        log.error("rejoin: clone from %s failed", leader.name)
        return False
    return True


async def _rewind(pg: Postgres, leader: Upstream, why: str,
                  discards: _Discards) -> bool | None:
    """pg_rewind from ``leader`` once it checkpointed its new timeline. True: rewound; False:
    pg_rewind failed; None: the checkpoint could not be confirmed (nothing was changed)."""
    try:
        await pg.ensure_source_checkpointed(leader)
    except PgError as exc:
        log.error("rejoin: %s, but the leader's checkpoint cannot be confirmed: %s", why, exc)
        return None
    await discards.before()
    log.info("rejoin: %s: rewinding from %s", why, leader.name)
    if not await pg.rewind(leader):
        return False
    await discards.after("rewind")
    return True
