"""The operator-command side of the agent: carries out :mod:`pgha.core.commands`.

The REST API calls :meth:`CommandHandler.submit`. Commands that only edit the DCS (configuration,
switchover requests) are written here under the DCS timeout, then the decision loop is woken;
commands that change PostgreSQL (restart, re-initialize) are handed to the decision loop as
requests that ``decide`` sees in ``LocalState``, and answered once a cycle has acted on them.
Nothing here changes agent state the decision loop owns, except those request slots; the
handler reaches the loop only through the components it is given (the observer's latest view,
the published status, the store) and the loop's ``wake`` event, never through the agent.

Failure behaviour: every DCS call is bounded by ``retry_timeout``; a DCS failure answers 502/503
and changes nothing; no exception escapes :meth:`submit` except CancelledError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgha.agent.observe import Observer
from pgha.agent.publish import Publisher
from pgha.config import ConfigError
from pgha.config.loader import parse_dynamic_config
from pgha.config.pg_parameters import ParamCatalogue, changed_value_errors
from pgha.core.commands import (
    CancelRestart,
    CancelSwitchover,
    Command,
    Outcome,
    PatchConfig,
    Reinitialize,
    Reload,
    ReplaceConfig,
    Restart,
    Switchover,
    merge_patch,
)
from pgha.core.model import ClusterView, PeerStatus
from pgha.core.operator import restart_problem
from pgha.core.switchover import FailoverRequest, switchover_problem
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import bounded, describe

log = logging.getLogger("pgha.agent.commands")

_LAG_RECHECK = 0.25
_POLL = 0.05


@dataclass
class ScheduledRestart:
    """A restart this member runs at ``at`` (epoch seconds) if ``conditions`` still hold."""

    at: float
    conditions: Restart

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schedule": datetime.fromtimestamp(self.at, UTC).isoformat()}
        if self.conditions.role:
            out["role"] = self.conditions.role
        if self.conditions.postgres_version:
            out["postgres_version"] = self.conditions.postgres_version
        if self.conditions.restart_pending:
            out["restart_pending"] = True
        return out


class CommandHandler:
    """The agent's command side (see the module docstring). ``observer`` supplies the latest
    view, ``publisher`` the published status; ``request_reload`` asks the loop to re-read the
    YAML; ``restart_timeout`` bounds the wait for a restart without a timeout of its own;
    ``catalogue`` (the local server's parameters) judges the parameter values a configuration
    change sets."""

    def __init__(self, name: str, store: ClusterStore, observer: Observer,
                 publisher: Publisher, wake: asyncio.Event,
                 request_reload: Callable[[], None], restart_timeout: float,
                 catalogue: ParamCatalogue | None = None) -> None:
        self.name = name
        self.catalogue = catalogue
        self.store = store
        self.observer = observer
        self.publisher = publisher
        self.wake = wake
        self.request_reload = request_reload
        self.restart_timeout = restart_timeout
        self.scheduled_restart: ScheduledRestart | None = None
        self.restart_waiters: list[asyncio.Future[tuple[bool, str]]] = []
        self.reinit: Reinitialize | None = None
        self.reinit_waiters: list[asyncio.Future[tuple[bool, str]]] = []
        self._restarts_seen = 0
        self._reinits_seen = 0

    async def submit(self, command: Command) -> Outcome:
        try:
            match command:
                case PatchConfig() | ReplaceConfig():
                    return await self._config(command)
                case Switchover():
                    return await self._switchover(command)
                case CancelSwitchover():
                    return await self._cancel_switchover()
                case Restart():
                    return await self._restart(command)
                case CancelRestart():
                    if self.scheduled_restart is None:
                        return Outcome(404, "no restart is scheduled")
                    self.scheduled_restart = None
                    self.wake.set()
                    return Outcome(200, "scheduled restart deleted")
                case Reload():
                    self.request_reload()
                    return Outcome(202, "reload scheduled")
                case Reinitialize():
                    return await self._reinitialize(command)
        except (DCSError, TimeoutError) as exc:
            log.warning("%s: DCS failure: %s", type(command).__name__, describe(exc))
            return Outcome(503, f"DCS failure: {describe(exc)}")
        raise AssertionError(f"unhandled command {command!r}")

    # ------------------------------------------------------------------ configuration
    async def _config(self, command: PatchConfig | ReplaceConfig) -> Outcome:
        store, timeout = self.store, self.observer.settings.retry_timeout
        current: dict[str, Any] | None = None
        if isinstance(command, ReplaceConfig):
            new = dict(command.config)
            revision: int | None = None
        else:
            current, revision = await bounded(store.read_config(), timeout)
            if current is None:
                return Outcome(503, "there is no configuration in the DCS")
            new = merge_patch(current, command.patch)
        try:
            parse_dynamic_config(new)
        except ConfigError as exc:
            return Outcome(400, f"invalid configuration: {exc}")
        bad = changed_value_errors(current, new, self.catalogue)
        if bad:
            return Outcome(400, "invalid configuration: " + "; ".join(
                f"{key}: {why}" for key, why in bad))
        try:
            written = await bounded(store.write_config(new, if_revision=revision), timeout)
        except (DCSError, TimeoutError) as exc:
            return Outcome(502, f"could not write the configuration: {describe(exc)}")
        if not written:
            return Outcome(409, "the configuration was changed concurrently; try again")
        log.info("dynamic configuration %s by an operator",
                 "replaced" if isinstance(command, ReplaceConfig) else "patched")
        self.wake.set()
        return Outcome(200, data=new)

    # ------------------------------------------------------------------ switchover
    async def _fresh_view(self) -> ClusterView:
        """The cluster as the DCS holds it now: one read, within ``retry_timeout`` (a failure
        propagates and answers 503). An operator's switchover is judged on it, not on the
        decision loop's last view, which may predate a key this member has just written (the
        ``sync`` key naming the standby a switchover must go to, a scheduled switchover)."""
        return await bounded(self.store.load(), self.observer.settings.retry_timeout)

    async def _switchover(self, cmd: Switchover) -> Outcome:
        view = await self._fresh_view()
        paused = view.settings.pause
        if cmd.scheduled_at is not None:
            if cmd.failover:
                return Outcome(400, "a failover cannot be scheduled")
            if paused:
                return Outcome(400, "Can't schedule switchover in the paused state")
        if paused and not cmd.candidate:
            return Outcome(400, "Switchover is possible only to a specific candidate in a "
                                "paused state")
        if cmd.candidate and cmd.candidate == cmd.leader:
            return Outcome(400, "Switchover target and source are the same")
        if view.failover is not None:
            return Outcome(412, "a switchover or failover is already scheduled or running")
        leader = cmd.leader
        if cmd.failover and leader is None and view.leader is not None:
            leader = view.leader.name
        at = cmd.scheduled_at.timestamp() if cmd.scheduled_at is not None else None
        request = FailoverRequest(leader, cmd.candidate, at)
        problem = await self._switchover_problem(view, request, at is None)
        if problem is not None:
            return Outcome(412, problem)
        await bounded(self.store.write_failover(request.to_json()),
                      self.observer.settings.retry_timeout)
        self.wake.set()
        if at is not None:
            return Outcome(202, f"Switchover scheduled at {cmd.scheduled_at}")
        return await self._wait_for_new_leader(view.leader.name if view.leader else None,
                                               cmd.candidate)

    async def _switchover_problem(self, view: ClusterView, request: FailoverRequest,
                                  check_health: bool) -> str | None:
        """:func:`switchover_problem` with the members' live statuses. A candidate's status is
        up to ``loop_wait`` old, and the leader's position may have just jumped (a WAL segment
        switch at the end of a base backup): a lag refusal is asked again with fresh statuses
        until ``loop_wait + 1`` seconds have passed before it is final."""
        deadline = time.monotonic() + self.observer.settings.loop_wait + 1
        while True:
            peers: dict[str, PeerStatus | None] = {}
            if check_health:
                peers = await self.observer.peer_statuses(view)
                if self.name in view.members:
                    peers[self.name] = self.publisher.own_peer_status()
            problem = switchover_problem(view, request, peers, check_health=check_health)
            if problem is None or "maximum_lag_on_failover" not in problem or \
                    time.monotonic() >= deadline:
                return problem
            await asyncio.sleep(_LAG_RECHECK)
            view = await self._fresh_view()

    async def _wait_for_new_leader(self, old: str | None, candidate: str | None) -> Outcome:
        """Wait (``2 * max(10, loop_wait)`` s) until a leader other than ``old`` (``candidate``
        when named) runs as primary (or standby leader); 503 when the request is withdrawn or
        time runs out."""
        limit = 2 * max(10.0, self.observer.settings.loop_wait)
        deadline = time.monotonic() + limit
        seen_request = False
        while time.monotonic() < deadline:
            view = self.observer.view
            if view is not None:
                member = view.leader_member
                if member is not None and member.name != old and member.is_running_leader \
                        and (candidate is None or member.name == candidate):
                    return Outcome(200, f'Successfully switched over to "{member.name}"')
                if view.failover is not None:
                    seen_request = True
                elif seen_request and (view.leader is None or view.leader.name == old):
                    return Outcome(503, "Switchover failed: the request was withdrawn (see the "
                                        "leader's log)")
            await asyncio.sleep(_POLL)
        return Outcome(503, f"Switchover status unknown after {limit:g} seconds")

    async def _cancel_switchover(self) -> Outcome:
        view = await self._fresh_view()
        if view.failover is None:
            return Outcome(404, "no switchover is scheduled")
        deleted = await bounded(self.store.delete_failover(),
                                self.observer.settings.retry_timeout)
        self.wake.set()
        if not deleted:
            return Outcome(404, "no switchover is scheduled")
        return Outcome(200, "scheduled switchover deleted")

    # ------------------------------------------------------------------ restart, reinit
    def restart_check(self, conditions: Restart) -> str | None:
        status = self.publisher.status
        version = status.pg_details.get("server_version")
        return restart_problem(conditions, status.role, status.pending_restart,
                               version if isinstance(version, int) else None)

    async def _restart(self, cmd: Restart) -> Outcome:
        view = self.observer.view
        if cmd.schedule is not None:
            if view is not None and view.settings.pause:
                return Outcome(500, "Can't schedule restart in the paused state")
            if self.scheduled_restart is not None:
                return Outcome(409, "Cannot schedule a restart: another restart is already "
                                    "scheduled")
            self.scheduled_restart = ScheduledRestart(cmd.schedule.timestamp(), cmd)
            self.wake.set()
            return Outcome(202, f"Restart scheduled at {cmd.schedule.isoformat()}")
        problem = self.restart_check(cmd)
        if problem is not None:
            return Outcome(503, f"restart conditions are not satisfied: {problem}")
        waiter = asyncio.get_running_loop().create_future()
        self.restart_waiters.append(waiter)
        self.wake.set()
        timeout = cmd.timeout or self.restart_timeout
        try:
            ok, message = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return Outcome(503, f"restart not finished within {timeout:g}s")
        return Outcome(200, "restarted successfully") if ok else \
            Outcome(503, f"restart failed: {message}")

    def due_restart(self, wall_time: float) -> bool:
        """Called by the decision loop each cycle: True when a restart should run now (an
        operator request, or a scheduled one that came due and whose conditions hold)."""
        sched = self.scheduled_restart
        if sched is not None and sched.at <= wall_time:
            self.scheduled_restart = None
            problem = self.restart_check(sched.conditions)
            if problem is not None:
                log.warning("scheduled restart skipped: %s", problem)
            else:
                self.restart_waiters.append(asyncio.get_running_loop().create_future())
        self._restarts_seen = len(self.restart_waiters)
        return bool(self.restart_waiters)

    def restart_done(self, ran: bool, ok: bool, message: str) -> None:
        """Answer the restart requests the cycle's :meth:`due_restart` saw (later ones wait
        for the next cycle)."""
        waiters = self.restart_waiters[:self._restarts_seen]
        del self.restart_waiters[:self._restarts_seen]
        self._restarts_seen = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result((ran and ok, message))

    async def _reinitialize(self, cmd: Reinitialize) -> Outcome:
        view = self.observer.view
        if view is not None and view.leader is not None and view.leader.name == self.name:
            return Outcome(503, "I am the leader, can not reinitialize")
        if view is None or view.leader is None:
            return Outcome(503, "Cluster has no leader, can not reinitialize")
        busy = self.publisher.status.pg.busy
        if busy and not cmd.force:
            return Outcome(503, f"{busy} already in progress")
        waiter = asyncio.get_running_loop().create_future()
        self.reinit = cmd
        self.reinit_waiters.append(waiter)
        self.wake.set()
        try:
            ok, message = await asyncio.wait_for(asyncio.shield(waiter),
                                                 self.observer.settings.loop_wait + 30)
        except TimeoutError:
            return Outcome(503, "the agent is busy with another action; try again")
        return Outcome(200, "reinitialize started") if ok else Outcome(503, message)

    def take_reinit(self) -> Reinitialize | None:
        """The pending re-initialize request, for this cycle's ``decide``; it is answered by
        :meth:`reinit_started` (requests arriving meanwhile wait for the next cycle)."""
        request, self.reinit = self.reinit, None
        self._reinits_seen = len(self.reinit_waiters) if request is not None else 0
        return request

    def reinit_started(self, started: bool, message: str) -> None:
        """Answer the re-initialize requests :meth:`take_reinit` handed to ``decide``."""
        waiters = self.reinit_waiters[:self._reinits_seen]
        del self.reinit_waiters[:self._reinits_seen]
        self._reinits_seen = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result((started, message))
