"""Carries out the core's actions against PostgreSQL and the DCS.

Contract (see ``pgha.core.actions``): actions run in order; the first one that fails (returns
False, raises, or exceeds its timeout) aborts the rest and ``run`` returns False. Each action is
logged with its outcome. ``asyncio.CancelledError`` is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from pgha.agent.metrics import AgentMetrics
from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    CloneReplica,
    Demote,
    Follow,
    HandOver,
    Promote,
    PublishStatus,
    RebindLeader,
    Reinitialize,
    Rejoin,
    ReleaseLeader,
    RestartPostgres,
    StartPostgres,
    StopMode,
    StopPostgres,
    SyncSlots,
    Upstream,
    WriteInitialize,
)
from pgha.core.model import HistoryEntry, PgState
from pgha.core.switchover import FailoverRequest
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import describe
from pgha.pg.errors import PgError
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.executor")

_CHANGES_PG = (CloneReplica, StartPostgres, Follow, Rejoin, Promote, Demote, StopPostgres,
               BootstrapCluster, HandOver, RestartPostgres, Reinitialize)
_HANDOVER_POLL = 0.02


class PgControl(Protocol):
    """What the executor needs of the local PostgreSQL (:class:`pgha.pg.postgres.Postgres`;
    the simulation passes a fake). Methods return False (or raise PgError/OSError) on
    failure."""

    @property
    def settings(self) -> PgSettings: ...

    def conn_url(self) -> str: ...

    async def observe(self) -> PgState: ...

    async def initdb(self) -> bool: ...

    async def create_roles(self) -> None: ...

    async def clone(self, source: Upstream) -> bool: ...

    async def start(self, role: str, upstream: Upstream | None) -> bool: ...

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool: ...

    async def promote(self) -> bool: ...

    async def follow(self, upstream: Upstream) -> bool: ...

    async def rejoin(self, leader: Upstream, use_pg_rewind: bool) -> bool: ...

    async def wipe(self) -> None: ...

    async def sync_slots(self, keep: frozenset[str]) -> None: ...

    async def checkpoint(self) -> None: ...

    async def timeline_history(self, source: Upstream) -> list[tuple[int, int]]: ...

    def peer_received_position(self, conn_url: str,
                               ) -> AbstractAsyncContextManager[
                                   Callable[[], Awaitable[int | None]]]: ...


class LeaseGate(Protocol):
    """What the executor needs of the lease keeper."""

    async def confirm(self) -> bool:
        """One keep-alive round trip; True when the lease is confirmed from now."""
        ...

    def mark_busy(self, seconds: float) -> None:
        """A long action runs for up to ``seconds`` (not a stuck loop)."""
        ...


class PgStatusSink(Protocol):
    """Told after every action that changed PostgreSQL's state, before the next action."""

    async def pg_changed(self) -> None: ...


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
    final WAL (the request is then left in the DCS for the core to withdraw), else None."""

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
        dcs_timeout: float,
        handover_timeout: float = 10.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.pg = pg
        self.store = store
        self.lease = lease
        self.status = status
        self.bootstrap_config = bootstrap_config
        self.post_bootstrap = post_bootstrap
        self.pg_ctl_timeout = pg_ctl_timeout
        self.dcs_timeout = dcs_timeout
        self.handover_timeout = handover_timeout
        self.metrics = metrics
        self.failed_handover: Upstream | None = None

    async def run(self, actions: Sequence[Action]) -> bool:
        """Run ``actions`` in order; False at the first one that fails (the rest skipped)."""
        self.failed_handover = None
        for action in actions:
            name = type(action).__name__
            started = time.monotonic()
            try:
                ok = await self._apply(action)
                if isinstance(action, _CHANGES_PG) and not isinstance(action, Demote):
                    await self.status.pg_changed()
            except (DCSError, PgError, OSError, TimeoutError) as exc:
                log.error("action %s failed: %s", name, describe(exc))
                ok = False
            elapsed = time.monotonic() - started
            if not ok:
                log.warning("action %s did not succeed (%.2fs); skipping the rest", name, elapsed)
                return False
            quiet = isinstance(action, SyncSlots | PublishStatus)
            log.log(logging.DEBUG if quiet else logging.INFO, "action %s done in %.2fs", name,
                    elapsed)
        return True

    def _long(self, seconds: float) -> float:
        self.lease.mark_busy(seconds)
        return seconds

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
                return await self._sync_slots(action)
        raise AssertionError(f"unhandled action {action!r}")

    # ------------------------------------------------------------------ DCS only
    async def _write_initialize(self, action: WriteInitialize) -> bool:
        async with asyncio.timeout(self.dcs_timeout):
            return await self.store.set_initialize(action.sysid)

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
                await self.store.write_status(action.optime)
            if action.failsafe is not None:
                await self.store.write_failsafe(action.failsafe)
        return True

    # ------------------------------------------------------------------ PostgreSQL
    async def _bootstrap_cluster(self, action: BootstrapCluster) -> bool:
        return await self._bootstrap()

    async def _clone_replica(self, action: CloneReplica) -> bool:
        async with asyncio.timeout(self._long(3600)):
            return await self.pg.clone(action.source)

    async def _start_postgres(self, action: StartPostgres) -> bool:
        async with asyncio.timeout(self._long(self.pg_ctl_timeout + 5)):
            return await self.pg.start(action.role, action.upstream)

    async def _follow(self, action: Follow) -> bool:
        async with asyncio.timeout(self.pg_ctl_timeout):
            return await self.pg.follow(action.upstream)

    async def _rejoin(self, action: Rejoin) -> bool:
        async with asyncio.timeout(self._long(3600)):
            return await self.pg.rejoin(action.leader, action.use_pg_rewind)

    async def _promote(self, action: Promote) -> bool:
        promoted = await self._promote_and_record()
        if promoted and self.metrics is not None:
            self.metrics.record_promotion(requested=action.planned)
        return promoted

    async def _demote(self, action: Demote) -> bool:
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
        async with asyncio.timeout(self.pg_ctl_timeout + 5):
            return await self.pg.stop(action.mode)

    async def _restart_postgres(self, action: RestartPostgres) -> bool:
        async with asyncio.timeout(self._long(2 * self.pg_ctl_timeout + 10)):
            if not await self.pg.stop(StopMode.FAST):
                return False
            await self.status.pg_changed()
            return await self.pg.start(action.role, action.upstream)

    async def _reinitialize(self, action: Reinitialize) -> bool:
        async with asyncio.timeout(self._long(3600)):
            if not await self.pg.stop(StopMode.IMMEDIATE):
                return False
            await self.status.pg_changed()
            await self.pg.wipe()
            return (await self.pg.clone(action.source)
                    and await self.pg.start("replica", action.leader))

    async def _sync_slots(self, action: SyncSlots) -> bool:
        async with asyncio.timeout(self.pg_ctl_timeout):
            await self.pg.sync_slots(action.keep)
        return True

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

    async def _promote_and_record(self) -> bool:
        before = await self.pg.observe()
        async with asyncio.timeout(self.pg_ctl_timeout + 5):
            if not await self.pg.promote():
                return False
        if before.timeline is not None and before.wal_position is not None and before.role \
                and before.role.value == "replica":
            entry = HistoryEntry(
                timeline=before.timeline,
                lsn=await self._switch_point(before.timeline, before.wal_position),
                reason="no recovery target specified",
                timestamp=datetime.now(UTC).isoformat(),
                new_leader=self.pg.settings.name,
            )
            try:
                async with asyncio.timeout(self.dcs_timeout):
                    await self.store.append_history(entry)
            except DCSError as exc:
                log.warning("could not record the promotion in history: %s", describe(exc))
        # A CHECKPOINT puts the new timeline into pg_control, which pg_rewind reads on a former
        # primary rejoining us. It runs after promotion: writes are already accepted.
        try:
            async with asyncio.timeout(self.pg_ctl_timeout):
                await self.pg.checkpoint()
        except (PgError, OSError, TimeoutError) as exc:
            log.warning("post-promote checkpoint failed: %s", describe(exc))
        return True

    async def _switch_point(self, timeline: int, fallback: int) -> int:
        """Where ``timeline`` ended, from our own new timeline's history file (exact, a record
        boundary); ``fallback`` (the WAL position seen before promoting) if it is unreadable."""
        me = Upstream(self.pg.settings.name, self.pg.conn_url())
        try:
            async with asyncio.timeout(self.dcs_timeout):
                history = await self.pg.timeline_history(me)
        except (PgError, OSError, TimeoutError) as exc:
            log.warning("could not read our timeline history: %s", describe(exc))
            return fallback
        return next((lsn for tl, lsn in history if tl == timeline), fallback)

    async def _bootstrap(self) -> bool:
        pg, store = self.pg, self.store
        async with asyncio.timeout(self.dcs_timeout):
            if not await store.claim_initialize():
                log.info("another member claimed initialize first")
                return False
        log.info("won the initialize race: bootstrapping a new cluster")
        try:
            async with asyncio.timeout(self._long(self.pg_ctl_timeout * 4 + 60)):
                if not await pg.initdb():
                    raise RuntimeError("initdb failed")
                if not await pg.start("primary", None):
                    raise RuntimeError("PostgreSQL did not start after initdb")
                await pg.create_roles()
                if self.post_bootstrap:
                    await self._run_post_bootstrap(self.post_bootstrap)
            async with asyncio.timeout(self.dcs_timeout):
                await store.create_config(self.bootstrap_config)
            if not await self.lease.confirm():
                raise RuntimeError("could not open a DCS session")
            async with asyncio.timeout(self.dcs_timeout):
                if not await store.acquire_leader():
                    raise RuntimeError("leader lock taken during bootstrap")
            state = await pg.observe()
            if not state.sysid:
                raise RuntimeError("no system identifier after initdb")
            async with asyncio.timeout(self.dcs_timeout):
                await store.set_initialize(state.sysid)
        except (RuntimeError, DCSError, PgError, OSError, TimeoutError) as exc:
            log.error("bootstrap failed: %s; cleaning up", exc)
            await self._undo_bootstrap()
            return False
        log.info("bootstrapped cluster %s", state.sysid)
        return True

    async def _undo_bootstrap(self) -> None:
        try:
            await self.pg.stop(StopMode.IMMEDIATE)
            await self.pg.wipe()
        except (PgError, OSError) as exc:
            log.error("cleanup after failed bootstrap: %s", describe(exc))
        try:
            async with asyncio.timeout(self.dcs_timeout):
                await self.store.release_leader()
                await self.store.cancel_initialize()
        except (DCSError, TimeoutError) as exc:
            log.error("could not release initialize after failed bootstrap: %s", describe(exc))

    async def _run_post_bootstrap(self, command: str) -> None:
        st = self.pg.settings
        url = (f"postgresql://{quote(st.superuser.username)}@/postgres"
               f"?host={quote(str(st.socket_dir))}&port={st.port}")
        proc = await asyncio.create_subprocess_shell(
            f"{command} {shlex.quote(url)}",
            env={**os.environ, "PGPASSFILE": str(st.pgpass)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        for line in out.decode(errors="replace").splitlines():
            log.info("post_bootstrap: %s", line)
        if proc.returncode != 0:
            raise RuntimeError(f"post_bootstrap exited with {proc.returncode}")
