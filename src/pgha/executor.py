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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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
from pgha.core.model import HistoryEntry
from pgha.core.switchover import FailoverRequest
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import describe
from pgha.metrics import AgentMetrics
from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres
from pgha.pg.probe import remote_connection

log = logging.getLogger("pgha.executor")

_CHANGES_PG = (CloneReplica, StartPostgres, Follow, Rejoin, Promote, Demote, StopPostgres,
               BootstrapCluster, HandOver, RestartPostgres, Reinitialize)
_HANDOVER_POLL = 0.02
_RECEIVED_SQL = "SELECT pg_last_wal_receive_lsn() - '0/0'"


class Executor:
    """Runs action lists. ``confirm_lease`` renews our DCS session and records the lease
    deadline (used right before taking the lock); ``on_busy(seconds)`` tells the agent a long
    action is in progress for up to that long, so its keep-alive gate does not mistake it for a
    stuck loop. ``after_pg_change()`` is awaited after every action that changes PostgreSQL's
    state, before the next action: the published status (which peers read during a leader race)
    must never show a primary that is already stopped. ``handover_timeout`` bounds the wait for
    a switchover candidate to receive our final WAL."""

    def __init__(
        self,
        pg: Postgres,
        store: ClusterStore,
        *,
        bootstrap_config: Mapping[str, Any],
        post_bootstrap: str | None,
        confirm_lease: Callable[[], Awaitable[bool]],
        on_busy: Callable[[float], None],
        after_pg_change: Callable[[], Awaitable[None]],
        pg_ctl_timeout: float,
        dcs_timeout: float,
        handover_timeout: float = 10.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.pg = pg
        self.store = store
        self.bootstrap_config = bootstrap_config
        self.post_bootstrap = post_bootstrap
        self.confirm_lease = confirm_lease
        self.on_busy = on_busy
        self.after_pg_change = after_pg_change
        self.pg_ctl_timeout = pg_ctl_timeout
        self.dcs_timeout = dcs_timeout
        self.handover_timeout = handover_timeout
        self.last_wal_position: int | None = None  # set by the agent before each run
        self.metrics = metrics  # promotions, failovers and demotions are counted here
        # set by the agent before each run: an operator's switchover/failover request is in
        # the DCS, so a promotion now is planned (not counted as a failover)
        self.promotion_requested = False

    async def run(self, actions: Sequence[Action]) -> bool:
        for action in actions:
            name = type(action).__name__
            started = time.monotonic()
            try:
                ok = await self._apply(action)
                if isinstance(action, _CHANGES_PG) and not isinstance(action, Demote):
                    await self.after_pg_change()
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
        self.on_busy(seconds)
        return seconds

    async def _apply(self, action: Action) -> bool:
        pg, store = self.pg, self.store
        match action:
            case BootstrapCluster():
                return await self._bootstrap()
            case WriteInitialize(sysid=sysid):
                async with asyncio.timeout(self.dcs_timeout):
                    return await store.set_initialize(sysid)
            case CloneReplica(source=source):
                async with asyncio.timeout(self._long(3600)):
                    return await pg.clone(source)
            case StartPostgres(role=role, upstream=upstream):
                async with asyncio.timeout(self._long(self.pg_ctl_timeout + 5)):
                    return await pg.start(role, upstream)
            case Follow(upstream=upstream):
                async with asyncio.timeout(self.pg_ctl_timeout):
                    return await pg.follow(upstream)
            case Rejoin(leader=leader, use_pg_rewind=use_rewind):
                async with asyncio.timeout(self._long(3600)):
                    return await pg.rejoin(leader, use_rewind)
            case AcquireLeader():
                if not await self.confirm_lease():
                    return False
                async with asyncio.timeout(self.dcs_timeout):
                    won = await store.acquire_leader()
                if not won:
                    log.info("leader lock is taken: lost the race")
                return won
            case Promote():
                promoted = await self._promote()
                if promoted and self.metrics is not None:
                    self.metrics.record_promotion(requested=self.promotion_requested)
                return promoted
            case Demote(mode=mode, release_lock=release):
                async with asyncio.timeout(self.pg_ctl_timeout + 5):
                    stopped = await pg.stop(mode)
                if stopped and self.metrics is not None:
                    self.metrics.demotions.only.inc()
                await self.after_pg_change()
                if release:
                    async with asyncio.timeout(self.dcs_timeout):
                        await store.release_leader()
                return stopped
            case ReleaseLeader():
                async with asyncio.timeout(self.dcs_timeout):
                    await store.release_leader()
                return True
            case StopPostgres(mode=mode):
                async with asyncio.timeout(self.pg_ctl_timeout + 5):
                    return await pg.stop(mode)
            case HandOver(candidate=candidate):
                return await self._hand_over(candidate)
            case ClearFailover():
                async with asyncio.timeout(self.dcs_timeout):
                    await store.delete_failover()
                return True
            case RestartPostgres(role=role, upstream=upstream):
                async with asyncio.timeout(self._long(2 * self.pg_ctl_timeout + 10)):
                    if not await pg.stop(StopMode.FAST):
                        return False
                    await self.after_pg_change()
                    return await pg.start(role, upstream)
            case Reinitialize(source=source, leader=leader):
                async with asyncio.timeout(self._long(3600)):
                    if not await pg.stop(StopMode.IMMEDIATE):
                        return False
                    await self.after_pg_change()
                    await pg.wipe()
                    return await pg.clone(source) and await pg.start("replica", leader)
            case SyncSlots(keep=keep):
                async with asyncio.timeout(self.pg_ctl_timeout):
                    await pg.sync_slots(keep)
                return True
            case PublishStatus(failsafe=failsafe):
                async with asyncio.timeout(self.dcs_timeout):
                    if self.last_wal_position is not None:
                        await store.write_status(self.last_wal_position)
                    if failsafe is not None:
                        await store.write_failsafe(failsafe)
                return True
        raise AssertionError(f"unhandled action {action!r}")

    async def _hand_over(self, candidate: Upstream) -> bool:
        """See :class:`pgha.core.actions.HandOver`. Until the lock is released we remain the
        leader; when the candidate cannot be reached or does not catch up, the request is
        withdrawn and False makes the next cycle restart PostgreSQL as primary."""
        me = self.pg.settings.name
        try:
            # connect before stopping: the wait afterwards is then one query per poll
            async with remote_connection(self.pg.settings, candidate.conn_url) as conn:
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
                await self.after_pg_change()
                final = (await self.pg.observe()).wal_position
                caught_up = await self._caught_up(conn, final)
        except PgError as exc:
            log.error("switchover to %s: %s", candidate.name, describe(exc))
            caught_up = False
        if not caught_up:
            log.error("switchover: %s did not confirm our final WAL within %gs; withdrawing "
                      "the request", candidate.name, self.handover_timeout)
            async with asyncio.timeout(self.dcs_timeout):
                await self.store.delete_failover()
            return False
        async with asyncio.timeout(self.dcs_timeout):
            released = await self.store.release_leader()
        log.info("switchover: %s has our final WAL; lock %s", candidate.name,
                 "released" if released else "was no longer ours")
        if self.metrics is not None:
            self.metrics.demotions.only.inc()
        return True

    async def _caught_up(self, conn: Any, final: int | None) -> bool:
        """Poll the candidate until the WAL it received is past ``final`` (our last
        checkpoint's start: it then has the whole shutdown checkpoint record)."""
        if final is None:
            return False
        deadline = time.monotonic() + self.handover_timeout
        while time.monotonic() < deadline:
            try:
                received = await conn.fetchval(_RECEIVED_SQL, timeout=1.0)
            except Exception as exc:  # asyncpg errors of every kind: keep polling
                log.debug("switchover: candidate position query failed: %s", describe(exc))
                received = None
            if received is not None and int(received) > final:
                return True
            await asyncio.sleep(_HANDOVER_POLL)
        return False

    async def _promote(self) -> bool:
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
            if not await self.confirm_lease():
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
