"""The agent process: one asyncio TaskGroup running

* the decision loop (observe -> ``decide`` -> execute -> publish), the only writer of agent state;
* the lease keep-alive, on its own schedule (every ``ttl / 4``), gated on the loop's heartbeat;
* the DCS watch, which wakes the decision loop on any change under the scope;
* the postmaster watch (pidfd), which wakes the loop the moment PostgreSQL dies;
* the REST API server.

Shutdown (SIGTERM/SIGINT): the loop runs one last decision with ``shutting_down`` set (stop
PostgreSQL, then release the lock), deletes the member key, closes the session and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from pgha.commands import Command, Outcome
from pgha.config import Config
from pgha.control import Control
from pgha.core.actions import (
    Demote,
    HandOver,
    Reinitialize,
    RestartPostgres,
    StopPostgres,
)
from pgha.core.decide import Decision, Reason, decide, needs_peer_statuses
from pgha.core.model import (
    ClusterView,
    HaSettings,
    LocalState,
    PeerStatus,
    PgState,
    Tags,
    safety_margin_for,
)
from pgha.dcs.base import DCSError, SessionExpired
from pgha.dcs.factory import open_kv
from pgha.dcs.instrumented import InstrumentedKV
from pgha.dcs.store import ClusterStore
from pgha.errors import bounded, describe
from pgha.executor import Executor
from pgha.failsafe import Failsafe
from pgha.httpauth import ssl_context
from pgha.lease import LeaseKeeping
from pgha.metrics import AgentMetrics
from pgha.peers import fetch_peer_statuses, parse_peer_status
from pgha.pg.callbacks import CallbackRunner
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres
from pgha.pgconfigure import PgConfiguring
from pgha.status import AgentStatus
from pgha.wiring import pg_settings

log = logging.getLogger("pgha.agent")

# member-key fields that change with every write on the primary (published at most every
# loop_wait unless something else changed)
_POSITIONS = frozenset({"xlog_location", "receive_lsn", "replay_lsn"})

# actions after which a stopped PostgreSQL is the agent's doing, not a crash
_STOPS_PG = (StopPostgres, Demote, HandOver, RestartPostgres, Reinitialize)


class DuplicateMemberError(RuntimeError):
    """Another live agent already publishes a member key with our name."""


class Agent(LeaseKeeping, PgConfiguring):
    """One pgha agent. Create, then ``await run()``; ``request_stop()`` ends it cleanly."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.reload_requested = False
        self.name = config.name
        dyn = config.bootstrap.dcs.adjusted()
        self.settings = HaSettings.from_config(dyn.model_dump(mode="json", by_alias=False))
        self.tags = Tags.from_json(config.tags.model_dump(exclude_none=True))
        self.pg = Postgres(pg_settings(config, dyn))
        self.metrics = AgentMetrics()
        self.kv = InstrumentedKV(
            open_kv(config, ttl=self.settings.ttl, timeout=self.settings.retry_timeout),
            self.metrics.dcs_duration, self.metrics.dcs_errors)
        self.metrics.lease_seconds_left.only.set_function(self.lease_seconds_left)
        self.store = ClusterStore(self.kv, config.namespace, config.scope, config.name)
        self.api_url = config.restapi.api_url
        self.status = AgentStatus(self.name, config.scope, self.tags, self.pg.conn_url(),
                                  self.api_url)
        self.view: ClusterView | None = None
        self.dcs_ok = False
        self.dcs_last_seen: float | None = None
        self.lease_deadline: float | None = None
        self.failsafe = Failsafe(self.name)
        self.heartbeat = time.monotonic()
        self.busy_until = 0.0
        self.down_since: float | None = time.monotonic()
        self.stopped_by_agent = False
        self.member_seen: dict[str, float] = {}
        # our own writes that must not wake our own loop (they would make it spin)
        self._quiet_keys = {self.store.key(f"members/{self.name}"), self.store.key("status")}
        self._last_member_json: dict[str, Any] | None = None
        self._last_member_write = 0.0
        self.wake = asyncio.Event()
        self.pg_started = asyncio.Event()
        self.first_view = asyncio.Event()
        self.stopping = False
        self.finished = asyncio.Event()
        self.last_decision: Decision | None = None
        self._decision_task: asyncio.Task[None] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.executor = Executor(
            self.pg, self.store,
            bootstrap_config=dyn.model_dump(mode="json", exclude_none=True),
            post_bootstrap=config.bootstrap.post_bootstrap,
            confirm_lease=self.confirm_lease,
            on_busy=self._mark_busy,
            after_pg_change=self._refresh_status,
            pg_ctl_timeout=config.postgresql.pg_ctl_timeout,
            dcs_timeout=self.settings.retry_timeout,
            handover_timeout=min(10.0, self.settings.ttl / 2),
            metrics=self.metrics,
        )
        self.control = Control(self)
        self.dynconf = DynamicConfigApplier(self.pg, config)
        self.callbacks = CallbackRunner(self._callback_commands(config), config.scope)
        self._pg_seen: tuple[bool, str | None] = (False, None)  # (running, role), for callbacks
        self._last_role: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        """Begin a clean stop (idempotent)."""
        if not self.stopping:
            log.info("stop requested")
        self.stopping = True
        self.wake.set()

    def request_reload(self) -> None:
        """Re-read the YAML at the start of the next cycle (SIGHUP)."""
        log.info("reload requested")
        self.reload_requested = True
        self.wake.set()

    def _peer_auth(self) -> aiohttp.BasicAuth | None:
        """Credentials for our calls to peers' REST APIs (``POST /failsafe`` is an unsafe
        method: with ``restapi.authentication`` set, every member requires them)."""
        auth = self.config.restapi.authentication
        return aiohttp.BasicAuth(auth.username, auth.password) if auth else None

    async def run(self) -> None:
        from pgha.api.server import ApiServer

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        async with (
            self.kv,
            aiohttp.ClientSession(
                auth=self._peer_auth(),
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.config)),
            ) as self.http,
            ApiServer(self, self.config) as _api,
            self.callbacks,
        ):
            await self._refuse_duplicate_name()
            await self.confirm_lease()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._supervised(self._decision_loop, "decision-loop"),
                                   name="decision-supervisor")
                    tg.create_task(self._supervised(self._keepalive_loop, "keepalive"),
                                   name="keepalive-supervisor")
                    tg.create_task(self._watch_loop(), name="dcs-watch")
                    tg.create_task(self._postmaster_watch(), name="postmaster-watch")
                    tg.create_task(self._stop_when_finished(), name="stopper")
            except* _Finished:
                pass
            finally:
                await self.pg.close()
        log.info("agent stopped")

    async def _stop_when_finished(self) -> None:
        await self.finished.wait()
        raise _Finished

    async def _refuse_duplicate_name(self) -> None:
        """Refuse to start when a live agent already answers for our member name."""
        try:
            async with asyncio.timeout(self.settings.retry_timeout):
                view = await self.store.load()
        except (DCSError, TimeoutError):
            return  # DCS down: nothing to compare with yet
        other = view.members.get(self.name)
        if other is None or not other.api_url or self.http is None:
            return
        if other.api_url == self.api_url:
            return  # our own previous incarnation; its API port is ours now
        alive = await fetch_peer_statuses(self.http, ClusterView(members={"x": other}), "",
                                          timeout=1.0)
        if alive.get("x") is not None:
            raise DuplicateMemberError(
                f"a member named {self.name!r} is already running ({other.api_url})")


    # ------------------------------------------------------------------ watches
    async def _watch_loop(self) -> None:
        await self.first_view.wait()
        revision = self.view.revision if self.view is not None else 0
        while True:
            try:
                async for event in self.store.watch(revision):
                    revision = max(revision, event.revision)
                    if event.key not in self._quiet_keys:
                        self.wake.set()
            except DCSError as exc:
                log.warning("DCS watch failed: %s", describe(exc))
            await asyncio.sleep(0.5)

    async def _postmaster_watch(self) -> None:
        while True:
            if self.pg.is_running():
                await self.pg.wait_postmaster_exit()
                log.warning("postmaster exited")
                self.down_since = time.monotonic()
                self.wake.set()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.pg_started.wait()
                self.pg_started.clear()

    # ------------------------------------------------------------------ decision loop

    async def _observe_view(self) -> ClusterView | None:
        try:
            view = await bounded(self.store.load(), self._dcs_budget())
        except (DCSError, TimeoutError) as exc:
            if self.dcs_ok:
                log.warning("DCS read failed: %s", describe(exc))
            self.dcs_ok = False
            return self.view
        self.dcs_ok = True
        self.dcs_last_seen = time.time()
        now = time.monotonic()
        for member in view.members:
            self.member_seen[member] = now
        self.view = view
        self.first_view.set()
        if view.config:
            settings = view.settings.adjusted()
            if settings != view.settings and settings != self.settings:
                log.warning("DCS config breaks loop_wait + 2 * retry_timeout <= ttl: using "
                            "loop_wait=%g retry_timeout=%g", settings.loop_wait,
                            settings.retry_timeout)
            self.settings = settings
        return view

    async def _observe_pg(self) -> tuple[PgState, dict[str, Any]]:
        try:
            async with asyncio.timeout(self.settings.retry_timeout):
                state = await self.pg.observe()
                details = await self.pg.status() if state.accepting else {}
        except (PgError, OSError, TimeoutError) as exc:
            log.warning("PostgreSQL probe failed: %s", describe(exc))
            state, details = PgState(data=self.pg.data_state(), running=self.pg.is_running()), {}
        now = time.monotonic()
        if state.accepting:
            self.down_since = None
            self.stopped_by_agent = False
        elif self.down_since is None:
            self.down_since = now
        if state.running:
            self.pg_started.set()
        state = replace(state, down_since=self.down_since, stopped_by_agent=self.stopped_by_agent)
        return state, details

    async def submit(self, command: Command) -> Outcome:
        """Carry out an operator command from the REST API (codes: :mod:`pgha.commands`)."""
        return await self.control.submit(command)

    def own_peer_status(self) -> PeerStatus | None:
        """Our own published status as a peer would see it over ``GET /patroni``."""
        return parse_peer_status(self.name, self.status.to_patroni_json())

    def accept_failsafe(self, name: str) -> tuple[int, str]:
        """``POST /failsafe`` from primary ``name`` (see :meth:`Failsafe.accept`)."""
        answer = self.failsafe.accept(name, self.view, self.status.pg)
        if answer[0] == 200:
            self.wake.set()
        return answer

    async def _cycle(self) -> bool:
        """One observe-decide-execute-publish round. Returns whether the actions all worked.
        Refreshes the heartbeat (which gates the lease keep-alive) only when it completes."""
        if self.reload_requested:
            await self._reload_config()
        view = await self._observe_view()
        await self._apply_dynamic_config(view)
        pg_state, details = await self._observe_pg()
        published = self.status.pg
        if self.last_decision is not None and (pg_state.running, pg_state.accepting,
                                               pg_state.role) != (
                published.running, published.accepting, published.role):
            # PostgreSQL changed under us (e.g. the postmaster died): health checks must not
            # answer from the old state while this cycle's actions run
            self._publish(pg_state, details, self.last_decision)
        if not self.dcs_ok and self.http is not None:
            body = {"name": self.name, "conn_url": self.pg.conn_url(), "api_url": self.api_url}
            await self.failsafe.confirm(self.http, view, pg_state, body, self.kv.session_ttl)
        wall = time.time()
        restart = self.control.due_restart(wall)
        reinit = self.control.take_reinit()
        local = LocalState(
            name=self.name, tags=self.tags, pg=pg_state, dcs_ok=self.dcs_ok,
            lease_deadline=self.lease_deadline, member_seen=dict(self.member_seen),
            shutting_down=self.stopping, failsafe_deadline=self.failsafe.deadline,
            failsafe_primary=self.failsafe.asking_primary(self.settings.ttl),
            wall_time=wall, restart_requested=restart, reinit_requested=reinit is not None,
            reinit_from_leader=reinit is not None and reinit.from_leader,
        )
        if needs_peer_statuses(view, local) and view is not None and self.http is not None:
            peers = await fetch_peer_statuses(self.http, view, self.name,
                                              timeout=min(2.0, self.settings.ttl / 4))
            local = replace(local, peers=peers)
        decision = decide(view, local, time.monotonic())
        self._log_decision(decision)
        if reinit is not None:
            self.control.reinit_started(decision.reason is Reason.REINITIALIZE, decision.message)
        self.executor.last_wal_position = pg_state.wal_position
        self.executor.promotion_requested = view is not None and view.failover is not None
        if any(isinstance(a, _STOPS_PG) for a in decision.actions):
            self.stopped_by_agent = True
        ok = await self.executor.run(decision.actions)
        if restart:
            self.control.restart_done(decision.reason is Reason.RESTART, ok, decision.message)
        if decision.actions:
            pg_state, details = await self._observe_pg()
        self._fire_callbacks(pg_state, restarted=restart and decision.reason is Reason.RESTART
                             and ok)
        self._publish(pg_state, details, decision)
        await self._touch_member()
        self.heartbeat = time.monotonic()
        return ok

    def _log_decision(self, decision: Decision) -> None:
        """One line per cycle: the reason code, why, and the actions chosen."""
        actions = ", ".join(type(a).__name__ for a in decision.actions) or "none"
        log.info("decision %s: %s [actions: %s]", decision.reason.value, decision.message,
                 actions)
        self.last_decision = decision

    async def _refresh_status(self) -> None:
        """Re-observe PostgreSQL and publish the status at once (between actions)."""
        pg_state, details = await self._observe_pg()
        if self.last_decision is not None:
            self._publish(pg_state, details, self.last_decision)

    def _publish(self, pg_state: PgState, details: dict[str, Any], decision: Decision) -> None:
        view = self.view
        failsafe_active = decision.reason is Reason.FAILSAFE_ACTIVE
        holds = bool(view and view.leader and view.leader.name == self.name and self.dcs_ok) \
            or failsafe_active
        self.status = AgentStatus(
            name=self.name, scope=self.config.scope, tags=self.tags,
            conn_url=self.pg.conn_url(), api_url=self.api_url, pg=pg_state,
            pg_details=details, view=view, dcs_last_seen=self.dcs_last_seen,
            holds_lock=holds, heartbeat=time.monotonic(), reason=decision.reason.value,
            message=decision.message, failsafe_active=failsafe_active,
            scheduled_restart=(self.control.scheduled_restart.to_json()
                               if self.control.scheduled_restart else None),
            pending_restart=self.dynconf.state.pending_restart,
            pending_restart_reason=self.dynconf.state.pending_restart_reason,
        )

    async def _touch_member(self) -> None:
        """Publish our member key when something other than the WAL position changed, or
        when the position changed and ``loop_wait`` has passed since the last write: every
        write wakes the other members, so a busy primary must not publish on every cycle."""
        if not self.dcs_ok or self.stopping:
            return
        data = self.status.to_member_json()
        last = self._last_member_json
        now = time.monotonic()
        if last is not None:
            same = {k: v for k, v in data.items() if k not in _POSITIONS} == {
                k: v for k, v in last.items() if k not in _POSITIONS}
            due = now - self._last_member_write >= self.settings.loop_wait
            if same and (data == last or not due):
                return
        try:
            await bounded(self.store.touch_member(data), self._dcs_budget())
        except SessionExpired:
            self._last_member_json = None
            self.wake.set()
        except (DCSError, TimeoutError) as exc:
            log.warning("could not publish our member key: %s", describe(exc))
            self._last_member_json = None
        else:
            self._last_member_json = data
            self._last_member_write = now

    async def _decision_loop(self) -> None:
        while True:
            try:
                with self.metrics.time_cycle():
                    ok = await self._cycle()
            except Exception:
                # A bug must not kill the agent: log it and try again. Only completed cycles
                # refresh the heartbeat, so a loop that keeps failing stops renewing the lease,
                # and the backstop below stops a primary before that lease can expire.
                log.exception("decision cycle failed")
                await self._fail_closed_backstop()
                await asyncio.sleep(min(1.0, safety_margin_for(self.kv.session_ttl) / 2))
                continue
            if self.stopping and self.last_decision is not None and \
                    self.last_decision.reason in (Reason.SHUTDOWN, Reason.SHUTDOWN_PAUSED):
                if not ok:
                    log.error("clean stop incomplete: see the action errors above")
                await self._leave_cluster()
                self.finished.set()
                return
            await self._sleep(ok)

    async def _sleep(self, ok: bool) -> None:
        timeout = self.settings.loop_wait
        if not ok or (self.last_decision is not None
                      and self.last_decision.reason is Reason.NOT_HEALTHIEST):
            # retry soon: a failed action, or a race we sat out because a peer looked better
            # (that peer may be a primary that is stopping right now)
            timeout = min(timeout, 0.5)
        elif (self.last_decision is not None and self.last_decision.actions
              and self.last_decision.reason is not Reason.LEADER_HEALTHY):
            timeout = min(timeout, 0.2)  # re-observe soon after changing something
        st = self.status.pg
        if st.running and st.role is not None and st.role.value == "primary":
            until = self._confirmed_until
            if until is not None:
                timeout = min(timeout, max(0.05, until - time.monotonic()))
            if not self.dcs_ok and self.view is not None and self.view.settings.failsafe_mode:
                timeout = min(timeout, self.kv.session_ttl / 4)  # next failsafe round
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        self.wake.clear()

    async def _leave_cluster(self) -> None:
        try:
            async with asyncio.timeout(self.settings.retry_timeout):
                await self.store.delete_member(self.name)
        except (DCSError, TimeoutError) as exc:
            log.warning("could not delete our member key: %s", describe(exc))


class _Finished(Exception):
    """Raised inside the TaskGroup to cancel the sibling tasks after a clean stop."""
