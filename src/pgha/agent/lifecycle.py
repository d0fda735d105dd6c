"""The agent process: builds the components and runs them in one asyncio TaskGroup:

* the decision loop (:class:`pgha.agent.cycle.DecisionCycle`), the only writer of agent state;
* the lease keep-alive (:class:`pgha.agent.lease.LeaseKeeper`), every ``ttl / 4``, gated on
  the loop's heartbeat;
* the DCS watch, which keeps the store's cache current (so an idle cycle sends no read) and
  wakes the decision loop on any change under the scope but our own writes;
* the postmaster watch (pidfd), which wakes the loop the moment PostgreSQL dies;
* the REST API server (:mod:`pgha.api`), which reads the published status and hands operator
  commands to :class:`pgha.agent.commands.CommandHandler`;
* under systemd with ``WatchdogSec``, the ``WATCHDOG=1`` pings, sent while the decision loop's
  heartbeat is fresh (:mod:`pgha.agent.notify`).

systemd: the notification variables are taken out of the environment first thing in
:class:`Agent` (before the parameter catalogue runs the server binary), so no child inherits
them. ``READY=1`` / ``STATUS=`` come from the decision loop, ``STOPPING=1`` from
:meth:`Agent.request_stop`. The watchdog device (:mod:`pgha.agent.watchdog`) is fed by the
lease keep-alive, armed and disarmed by the decision loop, and disarmed on the way out.

Order on start: DCS client and peer HTTP client are entered; a live agent already running
under our name makes the start fail (:class:`DuplicateMemberError`, checked before our own
REST API listens: :mod:`pgha.agent.unique`); REST API and callback runner are entered; a
first keep-alive; then the tasks. Shutdown (SIGTERM/SIGINT): the loop runs one last decision
with ``shutting_down`` set (stop PostgreSQL, then release the lock), deletes the member key,
and every task ends; the DCS session is closed on the way out and ``run`` returns. SIGHUP
re-reads the YAML. The decision loop and the keep-alive are supervised against stray
cancellations (their exceptions end the agent: :class:`AgentFatal` is how the loop exits). The
two watches are auxiliary and never end the agent: :func:`keep_running` restarts them after any
exception or stray cancellation, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from pgha.agent.commands import CommandHandler
from pgha.agent.cycle import DecisionCycle, Stages
from pgha.agent.executor import Executor
from pgha.agent.failsafe import Failsafe
from pgha.agent.lease import LeaseKeeper
from pgha.agent.local_config import LocalConfig
from pgha.agent.metrics import AgentMetrics
from pgha.agent.notify import Notifier, take_environment
from pgha.agent.observe import Observer
from pgha.agent.peers import PeerClient
from pgha.agent.publish import Publisher, StatusRefresher
from pgha.agent.reload import Reloader
from pgha.agent.session import SessionFollower
from pgha.agent.unique import api_answers, duplicate_message
from pgha.agent.watchdog import LeaderWatchdog
from pgha.api.server import ApiServer
from pgha.config import Config
from pgha.core import lease as lease_rules
from pgha.core.commands import Command, Outcome
from pgha.core.model import HaSettings, PgState
from pgha.core.status import AgentStatus
from pgha.dcs.base import DCSError
from pgha.dcs.factory import open_kv
from pgha.dcs.instrumented import InstrumentedKV
from pgha.dcs.store import ClusterStore
from pgha.errors import AgentFatal, bounded, describe
from pgha.pg.catalogue import load_catalogue
from pgha.pg.configurator import PgConfigurator
from pgha.pg.from_config import pg_settings
from pgha.pg.hooks import PgHooks
from pgha.pg.postgres import Postgres

log = logging.getLogger("pgha.agent")


class DuplicateMemberError(AgentFatal):
    """Another live agent already runs under our name; the message is Patroni's refusal."""


class Agent:
    """One pgha agent. Create, then ``await run()``; ``request_stop()`` ends it cleanly.

    It is also the REST API's :class:`pgha.api.handlers.StatusSource`: ``status``,
    ``metrics``, ``submit``, ``accept_failsafe`` and ``decisions`` are all the API sees of
    it."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        # first: nothing spawned from here on may inherit NOTIFY_SOCKET / WATCHDOG_*
        self.notifier = Notifier(take_environment())
        self.name = config.name
        self.config = config
        dyn = config.bootstrap.dcs.adjusted()
        settings = HaSettings.from_config(dyn.model_dump(mode="json", by_alias=False))
        self.wake = asyncio.Event()
        self.local_config = LocalConfig(config, config_path)
        self.catalogue = load_catalogue(config.postgresql.binary("postgres"))  # judges parameters
        self.pg = Postgres(pg_settings(config, dyn, self.catalogue))
        self._metrics = AgentMetrics()
        self.kv = InstrumentedKV(
            open_kv(config, ttl=settings.ttl, timeout=settings.retry_timeout),
            self._metrics.dcs_duration, self._metrics.dcs_errors, self._metrics.dcs_requests)
        self.store = ClusterStore(self.kv, config.namespace, config.scope, config.name)
        self.api_url = config.restapi.api_url
        self.peers = PeerClient(config, self.name)
        self.observer = Observer(self.store, self.pg, self.peers, settings)
        self.publisher = Publisher(self.store, AgentStatus(
            self.name, config.scope, self.local_config.tags, self.pg.conn_url(), self.api_url))
        self.failsafe = Failsafe(self.name)
        self.watchdog = LeaderWatchdog(config.watchdog, ttl=lambda: self.kv.session_ttl)
        self.lease = LeaseKeeper(self.kv, self.store, self.pg, self.failsafe, self.publisher,
                                 settings=lambda: self.observer.settings,
                                 view=lambda: self.observer.view, wake=self.wake,
                                 renewed=self._lease_renewed)
        self._metrics.lease_seconds_left.only.set_function(self.lease.seconds_left)
        self.commands = CommandHandler(
            self.name, self.store, self.observer, self.publisher, self.wake,
            request_reload=self.request_reload,
            restart_timeout=2 * config.postgresql.pg_ctl_timeout + 30, catalogue=self.catalogue)
        self.configurator = PgConfigurator(self.pg, config, self.catalogue)
        self.api = ApiServer(self, config)
        self.executor = Executor(
            self.pg, self.store, lease=self.lease,
            status=StatusRefresher(self.observer, self.publisher),
            bootstrap_config=dyn.model_dump(mode="json", exclude_none=True),
            post_bootstrap=config.bootstrap.post_bootstrap,
            bootstrap_method=config.bootstrap.custom_method,
            pg_ctl_timeout=config.postgresql.pg_ctl_timeout,
            dcs_timeout=lambda: self.observer.settings.retry_timeout,
            max_history=lambda: self.observer.settings.max_timelines_history,
            handover_timeout=min(10.0, settings.ttl / 2),
            metrics=self._metrics,
            hooks=PgHooks(lambda hook: getattr(self.local_config.config.postgresql, hook),
                          timeout=lambda: self.observer.settings.ttl),
        )
        self.cycle = DecisionCycle(Stages(
            name=self.name, store=self.store, session_ttl=lambda: self.kv.session_ttl,
            local_config=self.local_config, observer=self.observer,
            configurator=self.configurator, failsafe=self.failsafe, commands=self.commands,
            executor=self.executor, publisher=self.publisher, lease=self.lease,
            metrics=self._metrics, reloader=Reloader(
                self.local_config, self.configurator, self.publisher, self.peers, self.api),
            session=SessionFollower(self.kv, self.lease, self.publisher),
            watchdog=self.watchdog, notifier=self.notifier),
            self.wake)
        # our own writes must not wake our own loop (they would make it spin)
        self._quiet_keys = {self.store.key(f"members/{self.name}"), self.store.key("status")}

    def _lease_renewed(self, sent: float) -> None:
        """A keep-alive sent at ``sent`` succeeded: it feeds the watchdog device and tells
        the observer that the DCS answers."""
        self.watchdog.keepalive(sent)
        self.observer.heard(sent)

    # ------------------------------------------------------------------ the API's view of us
    @property
    def status(self) -> AgentStatus:
        return self.publisher.status

    @property
    def metrics(self) -> AgentMetrics:
        return self._metrics

    async def submit(self, command: Command) -> Outcome:
        """Carry out an operator command from the REST API (codes: :mod:`pgha.core.commands`)."""
        return await self.commands.submit(command)

    async def live_status(self) -> AgentStatus:
        """The status with WAL positions read from PostgreSQL now (``GET /patroni``)."""
        return await self.publisher.live(self._probe_postgres)

    async def _probe_postgres(self) -> tuple[PgState, dict[str, Any]]:
        state = await self.pg.observe()
        return state, (await self.pg.status() if state.accepting else {})

    def discarded_reports(self) -> tuple[dict[str, Any], ...]:
        """The discarded-WAL reports this member's rejoins recorded (``GET /history``)."""
        return self.pg.discarded.reports

    def decisions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The recent decisions kept by the decision loop, oldest first (``GET
        /decisions``; see :mod:`pgha.agent.decisions`)."""
        return self.cycle.decisions.to_json(limit)

    def accept_failsafe(self, name: str,
                        slots: Mapping[str, int] | None = None) -> tuple[int, str]:
        """``POST /failsafe`` from primary ``name`` (see :meth:`Failsafe.accept`)."""
        answer = self.failsafe.accept(name, self.observer.view, self.publisher.status.pg,
                                      slots)
        if answer[0] == 200:
            self.wake.set()
        return answer

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        """Begin a clean stop (idempotent); systemd hears ``STOPPING=1``."""
        self.notifier.stopping()
        self.cycle.request_stop()

    def request_reload(self) -> None:
        """Re-read the YAML at the start of the next cycle (SIGHUP, ``POST /reload``)."""
        self.local_config.request_reload()
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        fatal: BaseException | None = None
        async with self.kv, self.peers:
            # before our own REST API listens: an answer at our api_url is someone else
            await self._refuse_duplicate_name()
            async with self.api, self.configurator:
                await self.lease.confirm()
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._decision_loop(), name="decision-supervisor")
                        tg.create_task(self._supervised(self.lease.keepalive_loop,
                                                        "keepalive"),
                                       name="keepalive-supervisor")
                        tg.create_task(keep_running(self._watch_loop, "dcs-watch"),
                                       name="dcs-watch-supervisor")
                        tg.create_task(keep_running(self._postmaster_watch,
                                                    "postmaster-watch"),
                                       name="postmaster-watch-supervisor")
                        tg.create_task(keep_running(self._systemd_watchdog,
                                                    "systemd-watchdog"),
                                       name="systemd-watchdog-supervisor")
                except* _Finished:
                    pass
                except* AgentFatal as group:
                    fatal = group.exceptions[0]
                finally:
                    self.watchdog.disarm()
                    self.notifier.close()
                    await self.pg.close()
        if fatal is not None:
            raise fatal  # after the DCS session is closed and the API stopped
        log.info("agent stopped")

    async def _decision_loop(self) -> None:
        await self._supervised(self.cycle.loop, "decision-loop")
        raise _Finished  # a clean stop: cancel the sibling tasks

    async def _refuse_duplicate_name(self) -> None:
        """Refuse to start when a live agent already runs under our member name: its member
        key exists and its REST API answers, asked with the cluster's REST client TLS
        settings (what counts as alive: :mod:`pgha.agent.unique`). Runs before our own REST
        API listens, so an answer at our own ``api_url`` is another process."""
        try:
            async with asyncio.timeout(self.observer.settings.retry_timeout):
                view = await self.store.load()
        except (DCSError, TimeoutError):
            return  # DCS down: nothing to compare with yet
        other = view.members.get(self.name)
        if other is None or not other.api_url:
            return
        alive = await api_answers(other.api_url, self.config, timeout=3.0)
        if alive is not None:
            log.error("member key %s exists and %s", self.store.key(f"members/{self.name}"),
                      alive)
            raise DuplicateMemberError(duplicate_message(self.name))
        log.info("member key of %s exists but nothing answers at %s: a previous process of "
                 "ours; starting", self.name, other.api_url)

    async def _supervised(self, factory: Callable[[], Coroutine[Any, Any, None]],
                          name: str) -> None:
        """Runs ``factory()`` as a task and restarts it if a stray cancellation (one we did
        not request: gRPC cancels calls in flight on a channel another task closes) ends it;
        a TaskGroup would ignore such a child silently, leaving the agent without decisions
        or lease renewals. Exceptions propagate; our own cancellation is passed on."""
        while True:
            task = asyncio.get_running_loop().create_task(factory(), name=name)
            if name == "decision-loop":
                self.lease.decision_task = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
            if task.cancelled():
                log.error("the %s task was cancelled from outside; restarting it", name)
                continue
            exc = task.exception()
            if exc is not None:
                raise exc
            return

    async def _systemd_watchdog(self) -> None:
        await self.notifier.watchdog_loop(self._loop_alive)

    def _loop_alive(self) -> bool:
        """The decision loop completed a cycle recently or runs an announced long action (the
        same test that gates the lease keep-alive)."""
        return lease_rules.loop_is_alive(self.observer.settings, self.lease.heartbeat,
                                         self.lease.busy_until, time.monotonic())

    # ------------------------------------------------------------------ watches
    async def _watch_loop(self) -> None:
        """Feed the store's watch-fed cache (:attr:`ClusterStore.cache`) and wake the decision
        loop on every change but our own writes. The cache is attached while the watch is
        iterated and detached (stale: the next view is read) when the watch ends or fails;
        an event without its value costs one read of that key, bounded by ``retry_timeout``."""
        await self.observer.first_view.wait()
        view = self.observer.view
        revision = view.revision if view is not None else 0
        delay = _WATCH_RETRY
        cache = self.store.cache
        while True:
            cache.attach()
            try:
                async for event in self.store.watch(revision):
                    delay = _WATCH_RETRY  # it works again
                    revision = max(revision, event.revision)
                    self.observer.heard(time.monotonic())
                    await bounded(cache.apply(event), self.observer.settings.retry_timeout)
                    if event.key not in self._quiet_keys:
                        self.cycle.dcs_changed()
            except (DCSError, TimeoutError) as exc:
                if delay == _WATCH_RETRY:
                    log.warning("DCS watch failed: %s", describe(exc))
                else:
                    log.debug("DCS watch failed again: %s", describe(exc))
            finally:
                cache.detach()
            self.cycle.dcs_changed()  # events may have been missed meanwhile: look once
            await _watch_pause(delay)
            delay = min(_WATCH_RETRY_CAP, delay * 2)

    async def _postmaster_watch(self) -> None:
        started = self.observer.pg_started
        while True:
            if self.pg.is_running():
                await self.pg.wait_postmaster_exit()
                log.warning("postmaster exited")
                self.observer.postmaster_exited()
                self.wake.set()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await started.wait()
                started.clear()


_TRACEBACK_EVERY = 300.0  # seconds: the same failure's traceback is logged at most this often


async def keep_running(factory: Callable[[], Coroutine[Any, Any, None]], name: str, *,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                       clock: Callable[[], float] = time.monotonic, first: float = 0.5,
                       cap: float = 30.0, healthy: float = 60.0) -> None:
    """Runs ``factory()`` (an auxiliary task such as a watch) as a child task until it
    returns; nothing it raises ends the caller. After an exception, or a cancellation we did
    not request, it is logged (with the traceback when the failure differs from the last one
    logged so, or once every ``_TRACEBACK_EVERY`` s; else one line) and a new ``factory()``
    starts after a delay doubling from ``first`` to ``cap`` seconds, back to ``first`` when
    the failed run had lasted ``healthy`` seconds. Our own cancellation cancels the child,
    waits for it, and is passed on."""
    delay = first
    last_traceback: tuple[str, float] | None = None  # (failure, when)
    failures = 0
    while True:
        started = clock()
        task = asyncio.get_running_loop().create_task(factory(), name=name)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            raise
        if task.cancelled():
            exc: BaseException = asyncio.CancelledError("cancelled from outside")
        elif (error := task.exception()) is not None:
            exc = error
        else:
            return
        now = clock()
        if now - started >= healthy:
            delay, failures = first, 0
        failures += 1
        what = describe(exc)
        if last_traceback is None or last_traceback[0] != what or \
                now - last_traceback[1] >= _TRACEBACK_EVERY:
            last_traceback = (what, now)
            log.error("the %s task failed: %s; restarting it in %gs", name, what, delay,
                      exc_info=exc)
        else:
            log.error("the %s task failed again (%d times in a row): %s; restarting it in %gs",
                      name, failures, what, delay)
        await sleep(delay)
        delay = min(cap, delay * 2)


_WATCH_RETRY = 0.5  # seconds before a failed or ended DCS watch is opened again ...
_WATCH_RETRY_CAP = 8.0  # ... doubling while it keeps failing without an event


async def _watch_pause(seconds: float) -> None:
    await asyncio.sleep(seconds)


class _Finished(Exception):
    """Raised inside the TaskGroup to cancel the sibling tasks after a clean stop."""

