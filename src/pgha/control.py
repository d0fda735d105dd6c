"""Carrying out operator commands (:mod:`pgha.commands`) for the agent.

The REST API calls :meth:`Control.submit`. Commands that only edit the DCS (configuration,
switchover requests) are written here under the DCS timeout, then the decision loop is woken;
commands that change PostgreSQL (restart, re-initialize) are handed to the decision loop as
requests that ``decide`` sees in ``LocalState``, and answered once a cycle has acted on them.
Nothing here changes agent state the decision loop owns, except those request slots.

Failure behaviour: every DCS call is bounded by ``retry_timeout``; a DCS failure answers 502/503
and changes nothing; no exception escapes :meth:`submit` except CancelledError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgha.commands import (
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
from pgha.config import ConfigError
from pgha.config.loader import parse_dynamic_config
from pgha.core.model import PeerStatus
from pgha.core.switchover import FailoverRequest, switchover_problem
from pgha.dcs.base import DCSError
from pgha.errors import bounded, describe
from pgha.peers import fetch_peer_statuses

if TYPE_CHECKING:
    from pgha.agent import Agent

log = logging.getLogger("pgha.control")

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


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _server_version_text(number: int) -> str:
    """160004 -> "16.4"; 90624 -> "9.6.24"."""
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def restart_problem(conditions: Restart, role: str, pending_restart: bool,
                    server_version: int | None) -> str | None:
    """Why a restart with ``conditions`` must not run on a member in ``role`` now, or None."""
    if conditions.restart_pending and not pending_restart:
        return "no restart is pending"
    want = conditions.role
    if want in ("master", "leader"):
        want = "primary"
    if want not in (None, "any") and want != role:
        return f"role is {role}, not {want}"
    if conditions.postgres_version:
        if server_version is None:
            return "the running PostgreSQL version is unknown"
        have = _server_version_text(server_version)
        if _version_tuple(have) >= _version_tuple(conditions.postgres_version):
            return f"PostgreSQL {have} is not older than {conditions.postgres_version}"
    return None


class Control:
    """The agent's command side (see module docstring). ``agent`` supplies the latest view,
    status, store and the request slots the decision loop reads."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
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
                    self.agent.wake.set()
                    return Outcome(200, "scheduled restart deleted")
                case Reload():
                    self.agent.request_reload()
                    return Outcome(202, "reload scheduled")
                case Reinitialize():
                    return await self._reinitialize(command)
        except (DCSError, TimeoutError) as exc:
            log.warning("%s: DCS failure: %s", type(command).__name__, describe(exc))
            return Outcome(503, f"DCS failure: {describe(exc)}")
        raise AssertionError(f"unhandled command {command!r}")

    # ------------------------------------------------------------------ configuration
    async def _config(self, command: PatchConfig | ReplaceConfig) -> Outcome:
        store, timeout = self.agent.store, self.agent.settings.retry_timeout
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
        try:
            written = await bounded(store.write_config(new, if_revision=revision), timeout)
        except (DCSError, TimeoutError) as exc:
            return Outcome(502, f"could not write the configuration: {describe(exc)}")
        if not written:
            return Outcome(409, "the configuration was changed concurrently; try again")
        log.info("dynamic configuration %s by an operator",
                 "replaced" if isinstance(command, ReplaceConfig) else "patched")
        self.agent.wake.set()
        return Outcome(200, data=new)

    # ------------------------------------------------------------------ switchover
    async def _switchover(self, cmd: Switchover) -> Outcome:
        agent = self.agent
        view = agent.view
        if view is None or not agent.dcs_ok:
            return Outcome(503, "the DCS is not reachable")
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
        peers: dict[str, PeerStatus | None] = {}
        if agent.http is not None and at is None:
            peers = await fetch_peer_statuses(agent.http, view, agent.name,
                                              timeout=min(2.0, agent.settings.ttl / 4))
            if agent.name in view.members:
                peers[agent.name] = agent.own_peer_status()
        problem = switchover_problem(view, request, peers, check_health=at is None)
        if problem is not None:
            return Outcome(412, problem)
        await bounded(agent.store.write_failover(request.to_json()), agent.settings.retry_timeout)
        agent.wake.set()
        if at is not None:
            return Outcome(202, f"Switchover scheduled at {cmd.scheduled_at}")
        return await self._wait_for_new_leader(view.leader.name if view.leader else None,
                                               cmd.candidate)

    async def _wait_for_new_leader(self, old: str | None, candidate: str | None) -> Outcome:
        """Wait (``2 * max(10, loop_wait)`` s) until a leader other than ``old`` (``candidate``
        when named) runs as primary; 503 when the request is withdrawn or time runs out."""
        agent = self.agent
        limit = 2 * max(10.0, agent.settings.loop_wait)
        deadline = time.monotonic() + limit
        seen_request = False
        while time.monotonic() < deadline:
            view = agent.view
            if view is not None:
                member = view.leader_member
                if member is not None and member.name != old and member.is_running_primary \
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
        view = self.agent.view
        if view is None or view.failover is None:
            return Outcome(404, "no switchover is scheduled")
        deleted = await bounded(self.agent.store.delete_failover(),
                                self.agent.settings.retry_timeout)
        self.agent.wake.set()
        if not deleted:
            return Outcome(404, "no switchover is scheduled")
        return Outcome(200, "scheduled switchover deleted")

    # ------------------------------------------------------------------ restart, reinit
    def restart_check(self, conditions: Restart) -> str | None:
        status = self.agent.status
        version = status.pg_details.get("server_version")
        return restart_problem(conditions, status.role, status.pending_restart,
                               version if isinstance(version, int) else None)

    async def _restart(self, cmd: Restart) -> Outcome:
        view = self.agent.view
        if cmd.schedule is not None:
            if view is not None and view.settings.pause:
                return Outcome(500, "Can't schedule restart in the paused state")
            if self.scheduled_restart is not None:
                return Outcome(409, "Cannot schedule a restart: another restart is already "
                                    "scheduled")
            self.scheduled_restart = ScheduledRestart(cmd.schedule.timestamp(), cmd)
            self.agent.wake.set()
            return Outcome(202, f"Restart scheduled at {cmd.schedule.isoformat()}")
        problem = self.restart_check(cmd)
        if problem is not None:
            return Outcome(503, f"restart conditions are not satisfied: {problem}")
        waiter = asyncio.get_running_loop().create_future()
        self.restart_waiters.append(waiter)
        self.agent.wake.set()
        timeout = cmd.timeout or (2 * self.agent.pg.settings.pg_ctl_timeout + 30)
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
        agent = self.agent
        view = agent.view
        if view is not None and view.leader is not None and view.leader.name == agent.name:
            return Outcome(503, "I am the leader, can not reinitialize")
        if view is None or view.leader is None:
            return Outcome(503, "Cluster has no leader, can not reinitialize")
        busy = agent.status.pg.busy
        if busy and not cmd.force:
            return Outcome(503, f"{busy} already in progress")
        waiter = asyncio.get_running_loop().create_future()
        self.reinit = cmd
        self.reinit_waiters.append(waiter)
        agent.wake.set()
        try:
            ok, message = await asyncio.wait_for(asyncio.shield(waiter),
                                                 agent.settings.loop_wait + 30)
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
