"""Carries out the core's actions against PostgreSQL and the DCS.

Contract (see ``pgha.core.actions``): actions run in order; the first one that fails (returns
False, raises, or exceeds its timeout) aborts the rest and ``run`` returns False. Each action is
logged with its outcome. ``asyncio.CancelledError`` is never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from pgha.agent.bootstrap import ClusterBootstrap
from pgha.agent.clock import SYSTEM_CLOCK
from pgha.agent.executor_ports import LeaseGate as LeaseGate
from pgha.agent.executor_ports import PgControl as PgControl
from pgha.agent.executor_ports import PgStatusSink as PgStatusSink
from pgha.agent.fencing import before_stop, fence_before_promote
from pgha.agent.metrics import AgentMetrics
from pgha.agent.promotion import promote_and_record
from pgha.agent.retry import ErrorCapture, RetryGate
from pgha.config import BootstrapMethod
from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    ClearSyncKey,
    CloneReplica,
    CopyLogicalSlots,
    Demote,
    Follow,
    HandOver,
    PrePromote,
    Promote,
    PublishStatus,
    RebindLeader,
    Reinitialize,
    Rejoin,
    ReleaseLeader,
    RestartPostgres,
    SetSyncStandbys,
    StartPostgres,
    StopMode,
    StopPostgres,
    SyncSlots,
    Upstream,
    WriteInitialize,
    WriteSyncKey,
)
from pgha.core.switchover import FailoverRequest
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import describe
from pgha.pg.errors import PgError
from pgha.pg.hooks import PgHooks

log = logging.getLogger("pgha.executor")

_CHANGES_PG = (CloneReplica, StartPostgres, Follow, Rejoin, Promote, Demote, StopPostgres,
               BootstrapCluster, HandOver, RestartPostgres, Reinitialize, CopyLogicalSlots)
_HANDOVER_POLL = 0.02


class Executor:
    """Runs action lists (see the module docstring). Everything an action needs comes with
    it or was given here: ``lease`` confirms the lease right before the lock is taken and
    is told about long actions (its keep-alive gate must not mistake them for a stuck loop);
    ``status.pg_changed()`` is awaited after every action that changes PostgreSQL's state,
    before the next action: the published status (which peers read during a leader race)
    must never show a primary that is already stopped. ``handover_timeout`` bounds the wait
    for a switchover candidate to receive our final WAL; ``metrics`` counts promotions,
    failovers and demotions. After :meth:`run`, ``failed_handover`` names the candidate of a
    HandOver that failed because the candidate could not be asked or did not confirm our
    final WAL (the request is then left in the DCS for the core to withdraw), else None;
    ``slot_problems`` holds what the last SyncSlots could not do normally (slot -> why).
    ``dcs_timeout`` bounds each DCS call of an action: a number, or a callable read at every
    call (the dynamic ``retry_timeout``). ``bootstrap_method`` is the custom method a
    bootstrap runs instead of initdb (``bootstrap.method``; None: initdb). ``hooks`` runs
    ``pre_promote`` for PrePromote (``pre_promote_failed`` after :meth:`run`: it failed) and
    ``before_stop`` before each action stops a running PostgreSQL, except an immediate stop
    (fail-closed demotion, lease backstop: writes stop first); ``before_stop``'s outcome is
    only logged. ``max_history`` (a number, or a callable read at each promotion: the dynamic
    ``max_timelines_history``) is how many ``history`` entries a promotion keeps (0: all).
    Picklable when its callables are (the simulator copies executors)."""

    def __init__(
        self,
        pg: PgControl,
        store: ClusterStore,
        *,
        lease: LeaseGate,
        status: PgStatusSink,
        bootstrap_config: Mapping[str, Any],
        post_bootstrap: str | None,
        pg_ctl_timeout: float,
        dcs_timeout: float | Callable[[], float],
        handover_timeout: float = 10.0,
        metrics: AgentMetrics | None = None,
        retry: RetryGate | None = None,
        bootstrap_method: BootstrapMethod | None = None,
        hooks: PgHooks | None = None,
        max_history: int | Callable[[], int] = 0,
    ) -> None:
        self.pg = pg
        self.store = store
        self.lease = lease
        self.status = status
        self.pg_ctl_timeout = pg_ctl_timeout
        self._dcs_timeout = dcs_timeout if callable(dcs_timeout) else lambda: dcs_timeout
        self.handover_timeout = handover_timeout
        self._max_history = max_history
        self.metrics = metrics
        self.retry = retry if retry is not None else RetryGate(SYSTEM_CLOCK)
        self.bootstrapper = ClusterBootstrap(
            pg, store, lease, bootstrap_config=bootstrap_config, post_bootstrap=post_bootstrap,
            pg_ctl_timeout=pg_ctl_timeout, dcs_timeout=self.dcs_timeout,
            method=bootstrap_method)
        self.hooks = hooks
        self.failed_handover: Upstream | None = None
        self.pre_promote_failed = False
        self.slot_problems: dict[str, str] = {}

    @property
    def max_history(self) -> int:
        """``max_history`` as given, or its value now when given as a callable."""
        limit = self._max_history
        return limit() if callable(limit) else limit

    @property
    def dcs_timeout(self) -> float:
        """The limit of one DCS call of an action: ``dcs_timeout`` as given, or its value now
        when given as a callable (the agent passes the ``retry_timeout`` in force)."""
        return self._dcs_timeout()

    async def run(self, actions: Sequence[Action]) -> bool:
        """Run ``actions`` in order; False at the first one that fails (the rest skipped).

        A gated action (:data:`pgha.agent.retry.GATED`) that failed before is not run again
        until its backoff ends: it counts as failed (logged once per cycle) without running."""
        self.failed_handover = None
        self.pre_promote_failed = False
        self.retry.forget_except(actions)
        for action in actions:
            name = type(action).__name__
            if (wait := self.retry.wait_left(action)) > 0:
                failure = self.retry.failure()
                log.info("action %s: retrying in %.1fs (last error: %s)", name, wait,
                         failure.error if failure is not None else "?")
                return False
            started = time.monotonic()
            kind = self.retry.kind(action)  # only gated actions keep their last error
            capture = ErrorCapture()
            with capture if kind is not None else contextlib.nullcontext():
                try:
                    ok = await self._apply(action)
                    if isinstance(action, _CHANGES_PG) and not isinstance(action, Demote):
                        await self.status.pg_changed()
                except (DCSError, PgError, OSError, TimeoutError) as exc:
                    log.error("action %s failed: %s", name, describe(exc))
                    ok = False
            elapsed = time.monotonic() - started
            delay = None
            if kind is not None:
                delay = self.retry.record(action, ok, capture.last)
                if self.metrics is not None:
                    self.metrics.record_action(kind, ok, self.retry.failing_kinds())
            if not ok:
                retry = f"; next attempt in {delay:g}s" if delay is not None else ""
                log.warning("action %s did not succeed (%.2fs); skipping the rest%s", name,
                            elapsed, retry)
                return False
            quiet = isinstance(action, SyncSlots | PublishStatus)
            log.log(logging.DEBUG if quiet else logging.INFO, "action %s done in %.2fs", name,
                    elapsed)
        return True

    @contextlib.asynccontextmanager
    async def _long(self, seconds: float) -> AsyncIterator[None]:
        """The block of a long action, cut off after ``seconds`` (TimeoutError); while it
        runs, and only then, the lease keeper counts the loop as busy, not stuck."""
        with self.lease.busy(seconds):
            async with asyncio.timeout(seconds):
                yield

    async def _while_busy(self, work: Awaitable[bool]) -> bool:
        """Await ``work`` (a clone or rejoin), with no time limit of its own: the PostgreSQL
        layer stops such work when it stops making progress. While it runs, and only then,
        the lease keeper counts the loop as busy, not stuck."""
        with self.lease.busy(math.inf):
            return await work

    async def _apply(self, action: Action) -> bool:
        match action:
            case WriteInitialize():
                return await self._write_initialize(action)
            case AcquireLeader():
                return await self._acquire_leader(action)
            case ReleaseLeader():
                return await self._release_leader(action)
            case RebindLeader():
                return await self._rebind_leader(action)
            case ClearFailover():
                return await self._clear_failover(action)
            case PublishStatus():
                return await self._publish_status(action)
            case BootstrapCluster():
                return await self._bootstrap_cluster(action)
            case CloneReplica():
                return await self._clone_replica(action)
            case StartPostgres():
                return await self._start_postgres(action)
            case Follow():
                return await self._follow(action)
            case Rejoin():
                return await self._rejoin(action)
            case PrePromote():
                ok = await fence_before_promote(self.hooks, self.store, self.lease,
                                                dcs_timeout=self.dcs_timeout)
                self.pre_promote_failed = not ok
                return ok
            case Promote():
                return await self._promote(action)
            case Demote():
                return await self._demote(action)
            case StopPostgres():
                return await self._stop_postgres(action)
            case HandOver():
                return await self._hand_over(action.candidate)
            case RestartPostgres():
                return await self._restart_postgres(action)
            case Reinitialize():
                return await self._reinitialize(action)
            case SyncSlots():
                async with asyncio.timeout(self.pg_ctl_timeout):
                    self.slot_problems = await self.pg.sync_slots(action)
                return True
            case CopyLogicalSlots():
                async with self._long(2 * self.pg_ctl_timeout + 10):
                    return await self.pg.copy_logical_slots(action.source, action.slots)
            case WriteSyncKey():
                async with asyncio.timeout(self.dcs_timeout):
                    await self.store.write_sync(action.voters, action.quorum)
                return True
            case ClearSyncKey():
                async with asyncio.timeout(self.dcs_timeout):
                    await self.store.delete_sync()
                return True
            case SetSyncStandbys():
                async with asyncio.timeout(self.pg_ctl_timeout):
                    return await self.pg.set_sync_standby_names(action.value)
        raise AssertionError(f"unhandled action {action!r}")

    # ------------------------------------------------------------------ DCS only
    async def _write_initialize(self, action: WriteInitialize) -> bool:
        """Adopt the local data: ``initialize`` with its system identifier, and the dynamic
        configuration from ``bootstrap.dcs`` when the DCS has none (as a bootstrap writes
        it: a standby cluster, cloned from its remote, is created this way)."""
        async with asyncio.timeout(self.dcs_timeout):
            if not await self.store.set_initialize(action.sysid):
                return False
            await self.store.create_config(self.bootstrapper.bootstrap_config)
        return True

    async def _acquire_leader(self, action: AcquireLeader) -> bool:
        if not await self.lease.confirm():
            return False
        async with asyncio.timeout(self.dcs_timeout):
            won = await self.store.acquire_leader()
        if not won:
            log.info("leader lock is taken: lost the race")
        return won

    async def _release_leader(self, action: ReleaseLeader) -> bool:
        async with asyncio.timeout(self.dcs_timeout):
            await self.store.release_leader()
        return True

    async def _rebind_leader(self, action: RebindLeader) -> bool:
        """DESIGN.md safety rule 7: confirm our lease, then move the leader key (holding our
        name, bound to another session) onto our session by compare-and-set."""
        if not await self.lease.confirm():
            return False
        async with asyncio.timeout(self.dcs_timeout):
            return await self.store.rebind_leader(action.revision)

    async def _clear_failover(self, action: ClearFailover) -> bool:
        async with asyncio.timeout(self.dcs_timeout):
            await self.store.delete_failover()
        return True

    async def _publish_status(self, action: PublishStatus) -> bool:
        async with asyncio.timeout(self.dcs_timeout):
            if action.optime is not None:
                await self.store.write_status(action.optime, action.slots, action.retain_slots,
                                              conn_url=self.pg.conn_url())
            if action.failsafe is not None:
                await self.store.write_failsafe(action.failsafe)
        return True

    # ------------------------------------------------------------------ PostgreSQL
    async def _bootstrap_cluster(self, action: BootstrapCluster) -> bool:
        return await self.bootstrapper.run(self.status)

    async def _clone_replica(self, action: CloneReplica) -> bool:
        await self.status.busy("creating replica")
        return await self._while_busy(self.pg.clone(action.source))

    async def _start_postgres(self, action: StartPostgres) -> bool:
        async with self._long(self.pg_ctl_timeout + 5):
            return await self.pg.start(action.role, action.upstream)

    async def _follow(self, action: Follow) -> bool:
        async with asyncio.timeout(self.pg_ctl_timeout):
            return await self.pg.follow(action.upstream)

    async def _rejoin(self, action: Rejoin) -> bool:
        return await self._while_busy(self.pg.rejoin(action.leader, action.use_pg_rewind))

    async def _promote(self, action: Promote) -> bool:
        promoted = await promote_and_record(self.pg, self.store, pg_ctl_timeout=self.pg_ctl_timeout,
                                            dcs_timeout=self.dcs_timeout,
                                            max_history=self.max_history)
        if promoted and self.metrics is not None:
            self.metrics.record_promotion(requested=action.planned)
        return promoted

    async def _before_stop(self, mode: StopMode = StopMode.FAST) -> None:
        """``postgresql.before_stop``, not before an immediate stop (see the class
        docstring). Never fails the action."""
        if mode is not StopMode.IMMEDIATE:
            await before_stop(self.hooks, self.pg, self.lease, probe_timeout=self.pg_ctl_timeout)

    async def _demote(self, action: Demote) -> bool:
        await self._before_stop(action.mode)
        async with asyncio.timeout(self.pg_ctl_timeout + 5):
            stopped = await self.pg.stop(action.mode)
        if stopped and self.metrics is not None:
            self.metrics.demotions.only.inc()
        await self.status.pg_changed()
        if action.release_lock:
            async with asyncio.timeout(self.dcs_timeout):
                await self.store.release_leader()
        return stopped

    async def _stop_postgres(self, action: StopPostgres) -> bool:
        await self._before_stop(action.mode)
        async with asyncio.timeout(2 * self.pg_ctl_timeout + 5):
            return await self.pg.stop(action.mode, action.timeout)

    async def _restart_postgres(self, action: RestartPostgres) -> bool:
        await self._before_stop()
        async with self._long(2 * self.pg_ctl_timeout + 10):
            if not await self.pg.stop(StopMode.FAST):
                return False
            await self.status.pg_changed()
            return await self.pg.start(action.role, action.upstream)

    async def _reinitialize(self, action: Reinitialize) -> bool:
        await self._before_stop()
        async with self._long(3600):
            if not await self.pg.stop(StopMode.IMMEDIATE):
                return False
            await self.status.pg_changed()
            await self.status.busy("creating replica")
            # the replica methods empty the directory first, except a keep_data one
            return (await self.pg.clone(action.source, basebackup_only=action.from_leader,
                                        replace_data=True)
                    and await self.pg.start("replica", action.leader))

    async def _hand_over(self, candidate: Upstream) -> bool:
        """See :class:`pgha.core.actions.HandOver`. Until the lock is released we remain the
        leader; when the candidate cannot be reached or does not catch up, False and
        ``failed_handover`` make the core withdraw the request (``switchover_failed``) and
        then restart PostgreSQL as primary."""
        me = self.pg.settings.name
        try:
            # connect before stopping: the wait afterwards is then one query per poll
            async with self.pg.peer_received_position(candidate.conn_url) as received:
                async with asyncio.timeout(self.dcs_timeout):
                    await self.store.write_failover(
                        FailoverRequest(me, candidate.name).to_json())
                # a checkpoint while writes still run keeps the shutdown checkpoint (which
                # writes wait for) short
                try:
                    async with asyncio.timeout(self.pg_ctl_timeout):
                        await self.pg.checkpoint()
                except (PgError, OSError, TimeoutError) as exc:
                    log.warning("switchover: checkpoint before stopping failed: %s",
                                describe(exc))
                await self._before_stop()
                log.info("switchover to %s: stopping PostgreSQL", candidate.name)
                async with asyncio.timeout(self.pg_ctl_timeout + 5):
                    if not await self.pg.stop(StopMode.FAST):
                        return False
                await self.status.pg_changed()
                final = (await self.pg.observe()).wal_position
                caught_up = await self._caught_up(received, final)
        except PgError as exc:
            log.error("switchover to %s: %s", candidate.name, describe(exc))
            caught_up = False
        if not caught_up:
            log.error("switchover: %s did not confirm our final WAL within %gs; the request "
                      "is to be withdrawn", candidate.name, self.handover_timeout)
            self.failed_handover = candidate
            return False
        async with asyncio.timeout(self.dcs_timeout):
            released = await self.store.release_leader()
        log.info("switchover: %s has our final WAL; lock %s", candidate.name,
                 "released" if released else "was no longer ours")
        if self.metrics is not None:
            self.metrics.demotions.only.inc()
        return True

    async def _caught_up(self, received: Callable[[], Awaitable[int | None]],
                         final: int | None) -> bool:
        """Poll the candidate until the WAL it received is past ``final`` (our last
        checkpoint's start: it then has the whole shutdown checkpoint record)."""
        if final is None:
            return False
        deadline = time.monotonic() + self.handover_timeout
        while time.monotonic() < deadline:
            position = await received()
            if position is not None and position > final:
                return True
            await asyncio.sleep(_HANDOVER_POLL)
        return False
