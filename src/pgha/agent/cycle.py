"""The decision loop: observe -> decide -> execute -> publish, the only writer of agent state.

One cycle (:meth:`DecisionCycle.run_once`):

1. observe: re-read the YAML when asked; the DCS view (bounded by the lease when we are a
   writable primary); apply the dynamic configuration; probe PostgreSQL (republishing at once
   when it changed under us); a failsafe round when the DCS is unreachable; the DCS session
   and client follow the ``ttl`` / ``retry_timeout`` in force (:mod:`pgha.agent.session`; the
   view is re-read when our session changed); the operator's pending restart / re-initialise
   requests; peers' statuses when a race may follow;
2. decide: :func:`pgha.core.decide.decide`, logged as one line with its reason code (and
   kept in :attr:`DecisionCycle.decisions` with its explanation, :mod:`pgha.agent.decisions`,
   when it changed something or refused the free lock; logged once more then, with it);
3. execute: the executor runs the actions in order, stopping at the first failure; PostgreSQL
   is probed again after them unless they only wrote the leader's ``status`` key;
4. publish: callbacks for what changed, the status snapshot, the member key; then the
   heartbeat that gates the lease keep-alive, and the heartbeat hooks: the watchdog device
   follows our role (:meth:`pgha.agent.watchdog.LeaderWatchdog.follow`), systemd is told
   ``READY=1`` (once our member key is published) and our ``STATUS=`` (:mod:`pgha.agent.
   notify`).

A decision that promotes arms the watchdog device first; when ``watchdog.mode`` is
``required`` and it cannot be armed, the cycle decides again with ``watchdog_ok`` False (the
race refusal). A failed ``pre_promote`` (the executor released the lock) is reported to the
core as ``pre_promote_failed`` for ``ttl`` seconds from when it failed; meanwhile the loop
sleeps its ``loop_wait`` instead of re-observing soon as after other race refusals.

:meth:`DecisionCycle.loop` repeats it until a clean stop, sleeping up to ``loop_wait`` (less
after a failure, a change or a race sat out; never past the lease while primary) unless
``wake`` is set (postmaster death, an operator command, a stop) or the DCS watch reports a
change (:meth:`DecisionCycle.dcs_changed`). A cycle that raises is logged, the lease backstop
runs, and it is retried after a short pause: only completed cycles refresh the heartbeat.

Repeat guard: the loop never cycles faster than its wake-ups justify. A cycle that makes the
same decision as the one before (reason and actions other than the leader's housekeeping,
SyncSlots and PublishStatus) from the same observations (:func:`progress_key`: leader name and
session, members' roles and states, failover request, PostgreSQL's state; not WAL positions or
store revisions) and that runs an action or fails, made no progress: its action failed, or
changed nothing lasting (another agent undid it, our own write woke us). After ``n`` such
repeats in a row the next cycle waits at least ``min(loop_wait, REPEAT_GUARD * 2**(n-1))``:
DCS-change wake-ups inside that time are held back (the retry timers are stretched to it);
``wake`` still cuts it short, and a writable primary still wakes before its lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.commands import CommandHandler
from pgha.agent.decisions import DecisionLog
from pgha.agent.executor import Executor
from pgha.agent.failsafe import Failsafe
from pgha.agent.lease import LeaseKeeper
from pgha.agent.local_config import LocalConfig
from pgha.agent.logsetup import logger_backlog
from pgha.agent.metrics import AgentMetrics
from pgha.agent.notify import Notifier, status_line
from pgha.agent.observe import Observer
from pgha.agent.publish import Publisher
from pgha.agent.reload import Reloader
from pgha.agent.session import SessionFollower
from pgha.agent.watchdog import LeaderWatchdog
from pgha.core import lease as lease_rules
from pgha.core.actions import (
    Demote,
    HandOver,
    Promote,
    PublishStatus,
    Reinitialize,
    RestartPostgres,
    StopPostgres,
    SyncSlots,
)
from pgha.core.decide import RACE_REFUSALS, Decision, Reason, decide, needs_peer_statuses
from pgha.core.explain import explain
from pgha.core.model import (
    ClusterView,
    HaSettings,
    LocalState,
    PgRole,
    PgState,
    safety_margin_for,
)
from pgha.core.slots import failsafe_slots, slot_parameters
from pgha.core.switchover import request_for_leader
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import AgentFatal, describe
from pgha.pg.configurator import PgConfigurator

log = logging.getLogger("pgha.agent")

# actions after which a stopped PostgreSQL is the agent's doing, not a crash
_STOPS_PG = (StopPostgres, Demote, HandOver, RestartPostgres, Reinitialize)
# the leader's housekeeping: expected in every cycle, not a repeated action
_HOUSEKEEPING = (SyncSlots, PublishStatus)
REPEAT_GUARD = 0.25  # seconds: the first spacing after a decision repeated without progress
SYNC_RECHECK = 1.0  # seconds: how soon a leader re-checks standbys joining synchronous replication
# refusals that last a known time: nothing to re-observe soon
BACKING_OFF = (Reason.RACE_REFUSED_PRE_PROMOTE, Reason.CANDIDATE_REFUSED_PRE_PROMOTE)


def changes_something(decision: Decision) -> bool:
    """The decision runs an action beyond the leader's housekeeping (a healthy leader's
    cycle is not a change worth re-observing at once)."""
    if decision.reason is Reason.LEADER_HEALTHY:
        return False
    return any(not isinstance(a, _HOUSEKEEPING) for a in decision.actions)


def progress_key(me: str, view: ClusterView | None, pg: PgState, decision: Decision,
                 ok: bool) -> tuple[Any, ...] | None:
    """What must change between two cycles for the second to count as progress (see the
    module docstring; our own member key, which we write, does not count); None when the
    decision runs no action but housekeeping and did not fail (a no-op decision never needs
    guarding)."""
    actions = tuple(type(a).__name__ for a in decision.actions
                    if not isinstance(a, _HOUSEKEEPING))
    if ok and not actions:
        return None
    observed: tuple[Any, ...] = ()
    if view is not None:
        leader = (view.leader.name, view.leader.session) if view.leader else None
        members = tuple(sorted((n, m.role, m.state) for n, m in view.members.items()
                               if n != me))
        failover = tuple(sorted((str(k), str(v)) for k, v in (view.failover or {}).items()))
        observed = (leader, members, failover, view.initialize, view.settings.pause)
    return (decision.reason, actions, ok, observed, pg.data, pg.running, pg.accepting,
            pg.role, pg.timeline, pg.busy)


@dataclass(frozen=True)
class Stages:
    """The components one cycle drives (built by :class:`pgha.agent.lifecycle.Agent`)."""

    name: str
    store: ClusterStore
    session_ttl: Callable[[], float]  # the TTL of the session the store holds
    local_config: LocalConfig
    observer: Observer
    configurator: PgConfigurator
    failsafe: Failsafe
    commands: CommandHandler
    executor: Executor
    publisher: Publisher
    lease: LeaseKeeper
    metrics: AgentMetrics
    reloader: Reloader  # applies a re-read YAML (SIGHUP, POST /reload)
    session: SessionFollower  # the DCS session follows the ttl / retry_timeout in force
    watchdog: LeaderWatchdog | None = None  # the watchdog device (None: never armed)
    notifier: Notifier | None = None  # systemd notifications (None: none sent)


class DecisionCycle:
    """See the module docstring. ``wake`` cuts a sleep short; :meth:`request_stop` makes the
    next decision a clean shutdown, after which :meth:`loop` returns."""

    def __init__(self, stages: Stages, wake: asyncio.Event,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.s = stages
        self.wake = wake
        self.stopping = False
        self.last_decision: Decision | None = None
        self.decisions = DecisionLog()  # recent decisions that changed something or refused
        self.handover_failed = False  # see LocalState.handover_failed
        self.pre_promote_failed_at: float | None = None  # monotonic; see the module doc
        self.dcs_wake = asyncio.Event()  # the DCS watch saw a change (subject to the guard)
        self.repeats = 0  # cycles in a row that repeated a decision without progress
        self._last_progress_key: tuple[Any, ...] | None = None

    def dcs_changed(self) -> None:
        """The DCS watch saw a change under the scope: start a cycle, once the repeat guard
        allows it (see the module docstring)."""
        self.dcs_wake.set()

    def request_stop(self) -> None:
        """Begin a clean stop (idempotent)."""
        if not self.stopping:
            log.info("stop requested")
        self.stopping = True
        self.wake.set()

    # ------------------------------------------------------------------ the loop
    async def loop(self) -> None:
        """Cycles until the clean stop's decision ran; then leaves the cluster and returns."""
        while True:
            try:
                with self.s.metrics.time_cycle():
                    ok = await self.run_once()
            except AgentFatal:
                raise  # cleaned up already: the agent exits with the cause
            except Exception:
                # A bug must not kill the agent: log it and try again. Only completed cycles
                # refresh the heartbeat, so a loop that keeps failing stops renewing the lease,
                # and the backstop stops a primary before that lease can expire.
                log.exception("decision cycle failed")
                await self.s.lease.backstop()
                await asyncio.sleep(min(1.0, safety_margin_for(self.s.session_ttl()) / 2))
                continue
            last = self.last_decision
            if self.stopping and last is not None and \
                    last.reason in (Reason.SHUTDOWN, Reason.SHUTDOWN_PAUSED):
                if not ok:
                    log.error("clean stop incomplete: see the action errors above")
                await self._leave_cluster()
                return
            await self._sleep(ok)

    async def run_once(self) -> bool:
        """One observe-decide-execute-publish round. Returns whether the actions all worked.
        Refreshes the heartbeat (which gates the lease keep-alive) only when it completes."""
        s = self.s
        view, pg_state, details = await self._observe()
        if await s.session.follow(s.observer.settings, s.lease.dcs_budget()):
            view = await s.observer.dcs_view(s.lease.dcs_budget(), fresh=True)  # keys moved
        local = await self._local_state(view, pg_state)
        restart, reinit = local.restart_requested, local.reinit_requested
        now = self.clock.monotonic()
        decision = decide(view, local, now)
        if s.watchdog is not None and any(isinstance(a, Promote) for a in decision.actions) \
                and not s.watchdog.arm():
            decision = decide(view, replace(local, watchdog_ok=False), now)
        s.lease.decided(now)  # the backstop waits for a decision taken after the lease ran out
        self._log_decision(decision, view, local)
        if reinit:
            s.commands.reinit_started(decision.reason is Reason.REINITIALIZE, decision.message)
        if any(isinstance(a, _STOPS_PG) for a in decision.actions):
            s.observer.agent_stops_postgres()
        ok = await s.executor.run(decision.actions)
        self._note_progress(progress_key(s.name, view, pg_state, decision, ok))
        self._track_failed_handover(view, local)
        if s.executor.pre_promote_failed:
            self.pre_promote_failed_at = self.clock.monotonic()
        restarted = restart and decision.reason is Reason.RESTART
        if restart:
            s.commands.restart_done(restarted, ok, decision.message)
        if any(not isinstance(a, PublishStatus) for a in decision.actions):
            pg_state, details = await s.observer.postgres()  # PublishStatus leaves PG alone
        self._publish(pg_state, details, decision)
        s.configurator.fire_lifecycle_callbacks(
            pg_state, restarted=restarted and ok,
            standby_leader=s.publisher.status.role == "standby_leader")
        if not self.stopping and s.observer.dcs_ok and not await s.publisher.write_member_key(
                s.observer.settings.loop_wait, s.lease.dcs_budget()):
            self.wake.set()  # our session expired: the next cycle sees it
        s.lease.beat()
        self._heartbeat_hooks()
        return ok

    def _heartbeat_hooks(self) -> None:
        """After a completed cycle: the watchdog device is armed or disarmed as
        :func:`pgha.core.lease.watchdog_armed` says (a leader cut off from the DCS stays
        fenced while its lease keeps it primary). systemd hears ``READY=1`` once our member
        key is published, and our status line when it changed."""
        s = self.s
        st = s.publisher.status
        if s.watchdog is not None:
            view = s.observer.view
            s.watchdog.follow(lease_rules.watchdog_armed(
                st.pg, st.holds_lock, s.lease.confirmed_until,
                view is not None and view.settings.pause, self.stopping,
                self.clock.monotonic()))
        if s.notifier is not None:
            if s.publisher.member_key_published and not self.stopping:
                s.notifier.ready()
            s.notifier.status(status_line(st))

    # ------------------------------------------------------------------ stages
    async def _observe(self) -> tuple[ClusterView | None, PgState, dict[str, Any]]:
        s = self.s
        if s.local_config.reload_requested:
            await self._reload_local_config()
        view = await s.observer.dcs_view(s.lease.dcs_budget())
        await s.configurator.apply_dynamic_config(
            view.config if view is not None else None, s.publisher.status.role,
            timeout=s.observer.settings.retry_timeout + 5,
            slot_parameters=self._slot_parameters(view))
        pg_state, details = await s.observer.postgres()
        published = s.publisher.status.pg
        if self.last_decision is not None and (pg_state.running, pg_state.accepting,
                                               pg_state.role) != (
                published.running, published.accepting, published.role):
            # PostgreSQL changed under us (e.g. the postmaster died): health checks must not
            # answer from the old state while this cycle's actions run
            self._publish(pg_state, details, self.last_decision)
        if not s.observer.dcs_ok:
            body = {"name": s.name, "conn_url": s.publisher.status.conn_url,
                    "api_url": s.publisher.status.api_url,
                    "slots": failsafe_slots(pg_state, s.name)}
            sent = await s.failsafe.confirm(s.observer.peers, view, pg_state, body,
                                            s.session_ttl(), s.observer.settings.ttl)
            if sent is not None and s.watchdog is not None:
                s.watchdog.keepalive(sent)  # a failsafe confirmation renews like a keep-alive
        return view, pg_state, details

    def _slot_parameters(self, view: ClusterView | None) -> dict[str, Any]:
        """The PostgreSQL parameters our replication slots need (:func:`slot_parameters`),
        judged on ``view``, or while the DCS holds no configuration yet on the one we would
        bootstrap with (so a new cluster starts with them instead of pending a restart)."""
        s = self.s
        if view is None or view.config is None:
            seed = s.local_config.config.bootstrap.dcs.to_dcs()
            view = ClusterView(config=seed, settings=HaSettings.from_config(seed))
        local = LocalState(name=s.name, tags=s.local_config.tags, pg=s.publisher.status.pg,
                           member_seen=dict(s.observer.member_seen))
        return slot_parameters(view, local, self.clock.monotonic())

    async def _local_state(self, view: ClusterView | None, pg_state: PgState) -> LocalState:
        """This member's observations for ``decide`` (with peers' statuses when needed)."""
        s = self.s
        wall = self.clock.wall()
        reinit = s.commands.take_reinit()
        hooks = s.executor.hooks
        local = LocalState(
            name=s.name, tags=s.local_config.tags, pg=pg_state, dcs_ok=s.observer.dcs_ok,
            lease_deadline=s.lease.lease_deadline, member_seen=dict(s.observer.member_seen),
            shutting_down=self.stopping, failsafe_deadline=s.failsafe.deadline,
            failsafe_primary=s.failsafe.asking_primary(s.observer.settings.ttl),
            failsafe_slots=s.failsafe.asking_slots(s.observer.settings.ttl),
            wall_time=wall, restart_requested=s.commands.due_restart(wall),
            reinit_requested=reinit is not None,
            reinit_from_leader=reinit is not None and reinit.from_leader,
            replica_without_leader=s.executor.pg.settings.replica_without_leader,
            handover_failed=self.handover_failed, session_id=s.store.kv.session_id,
            watchdog_ok=s.watchdog.usable() if s.watchdog is not None else True,
            pre_promote_hook=hooks is not None and hooks.configured("pre_promote"),
            pre_promote_failed=self.pre_promote_backoff(),
            bootstrap_config=s.local_config.config.bootstrap.dcs.to_dcs()
            if view is None or view.config is None else None,
        )
        if view is not None and needs_peer_statuses(view, local):
            local = replace(local, peers=await s.observer.peer_statuses(view))
        return local

    def pre_promote_backoff(self) -> bool:
        """Our ``pre_promote`` failed less than ``ttl`` seconds ago."""
        at = self.pre_promote_failed_at
        return at is not None and self.clock.monotonic() - at < self.s.observer.settings.ttl

    def _track_failed_handover(self, view: ClusterView | None, local: LocalState) -> None:
        """A hand-over whose candidate did not confirm our final WAL is reported to the core
        (which withdraws its request) from the next cycle on, which starts at once, until a
        DCS read shows no request left that we act on as leader."""
        if self.s.executor.failed_handover is not None:
            self.handover_failed = True
            self.wake.set()
        elif view is not None and local.dcs_ok and \
                request_for_leader(view.failover, local.name) is None:
            self.handover_failed = False

    async def _reload_local_config(self) -> None:
        view = self.s.observer.view
        await self.s.reloader.reload(view.config if view is not None else None,
                                     self.s.publisher.status.role)

    def _log_decision(self, decision: Decision, view: ClusterView | None,
                      local: LocalState) -> None:
        """One line per cycle: the reason code, why, and the actions chosen, with ``reason``,
        ``role``, ``timeline``, ``lag`` and ``leader`` as extra fields. A decision that the
        decision log keeps is logged once more, with its explanation, when it is recorded."""
        actions = ", ".join(type(a).__name__ for a in decision.actions) or "none"
        pg = local.pg
        role = self.s.publisher.status.role
        leader = view.leader.name if view is not None and view.leader is not None else None
        lag = view.lag_of(pg.wal_position) if view is not None and \
            pg.role is not PgRole.PRIMARY else None
        log.info("decision %s: %s [actions: %s]", decision.reason.value, decision.message,
                 actions, extra={"reason": decision.reason.value, "role": role,
                                 "timeline": pg.timeline, "lag": lag, "leader": leader})
        self.last_decision = decision
        record = self.decisions.note(
            decision, acted=changes_something(decision), wall=local.wall_time, role=role,
            timeline=pg.timeline, position=pg.wal_position, lag=lag, leader=leader,
            standings=explain(view, local, decision) if view is not None else ())
        if record is not None:
            log.info("decision recorded: %s", record.describe(),
                     extra={"decision": record.to_json()})

    def _publish(self, pg_state: PgState, details: dict[str, Any], decision: Decision) -> None:
        s = self.s
        scheduled = s.commands.scheduled_restart
        state = s.configurator.state
        s.publisher.publish(
            pg_state, details, decision, view=s.observer.view, dcs_ok=s.observer.dcs_ok,
            dcs_last_seen=s.observer.dcs_last_seen, tags=s.local_config.tags,
            pending_restart=state.pending_restart,
            pending_restart_reason=state.pending_restart_reason,
            scheduled_restart=scheduled.to_json() if scheduled else None,
            failure=s.executor.retry.failure(), slot_problems=s.executor.slot_problems,
            watchdog_failed=s.watchdog is not None and not s.watchdog.usable(),
            logger=logger_backlog())

    def _note_progress(self, key: tuple[Any, ...] | None) -> None:
        """Count the cycles in a row that repeated a decision without progress."""
        if key is not None and key == self._last_progress_key:
            self.repeats += 1
            if self.repeats in (1, 4) or self.repeats % 50 == 0:
                log.warning("decision repeated %d time(s) without progress: next cycle in "
                            "%.2fs at the earliest", self.repeats, self.guard_time())
        else:
            self.repeats = 0
        self._last_progress_key = key

    def guard_time(self) -> float:
        """The least time before the next cycle may start on a DCS change (0: no guard)."""
        if self.repeats == 0:
            return 0.0
        loop_wait = self.s.observer.settings.loop_wait
        return float(min(loop_wait, REPEAT_GUARD * 2 ** min(self.repeats - 1, 16)))

    async def _sleep(self, ok: bool) -> None:
        """Until ``wake`` is set, the timeout passes, or a DCS change is reported once the
        repeat guard has passed."""
        timeout = self._sleep_time(ok)
        guard = min(self.guard_time(), timeout)
        if guard > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(guard):
                    await self.wake.wait()
        if not self.wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout - guard)):
                    await _either(self.wake, self.dcs_wake)
        self.wake.clear()
        self.dcs_wake.clear()

    def _sleep_time(self, ok: bool) -> float:
        s = self.s
        last = self.last_decision
        timeout = s.observer.settings.loop_wait
        if not ok or (last is not None and last.reason in RACE_REFUSALS
                      and last.reason not in BACKING_OFF):
            # retry soon: a failed action, or a free lock we stayed away from (the peer that
            # looked better may be a primary that is stopping right now); an action in
            # backoff is not retried before its time (the wait is at most loop_wait anyway)
            retry_in = 0.0 if last is None else max(
                (s.executor.retry.wait_left(a) for a in last.actions), default=0.0)
            timeout = min(timeout, max(0.5, retry_in))
        elif last is not None and changes_something(last):
            timeout = min(timeout, 0.2)  # re-observe soon after changing something
        elif last is not None and last.reason is Reason.SYNC_PENDING:
            timeout = min(timeout, SYNC_RECHECK)  # a standby may confirm synchronous replication
        timeout = max(timeout, self.guard_time())  # not faster than the repeat guard
        st = s.publisher.status.pg
        if st.running and st.role is PgRole.PRIMARY:
            until = s.lease.confirmed_until
            if until is not None:
                timeout = min(timeout, max(0.05, until - self.clock.monotonic()))
            view = s.observer.view
            if not s.observer.dcs_ok and view is not None and view.settings.failsafe_mode:
                timeout = min(timeout, s.session_ttl() / 4)  # next failsafe round
        return timeout

    async def _leave_cluster(self) -> None:
        try:
            async with asyncio.timeout(self.s.observer.settings.retry_timeout):
                await self.s.store.delete_member(self.s.name)
        except (DCSError, TimeoutError) as exc:
            log.warning("could not delete our member key: %s", describe(exc))


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    """Return once ``a`` or ``b`` is set."""
    if a.is_set() or b.is_set():
        return
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
