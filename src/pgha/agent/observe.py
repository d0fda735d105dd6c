"""The observe stage: the DCS view, PostgreSQL's state, and peers' statuses before a race.

:class:`Observer` owns what the agent last observed: the last DCS snapshot (kept when a read
fails, so decisions see the last known leader), whether the DCS answered, when each member was
last seen (for ``member_slots_ttl``), the HA settings in force (from the DCS ``config``, made
to respect ``loop_wait + 2 * retry_timeout <= ttl``), and when PostgreSQL went down and whether
that was the agent's doing. Every DCS and PostgreSQL call is bounded; a failure is logged and
observed as such (``dcs_ok`` False, a probe with only the data directory's state), never raised.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.peers import PeerClient
from pgha.config import dynamic_config_warnings
from pgha.core.model import ClusterView, HaSettings, Member, PeerStatus, PgState
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import bounded, describe
from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres
from pgha.pg.probe import remote_writable_position

log = logging.getLogger("pgha.agent")


class Observer:
    """See the module docstring. ``first_view`` is set once a DCS read succeeded;
    ``pg_started`` whenever a probe found the postmaster running."""

    def __init__(self, store: ClusterStore, pg: Postgres, peers: PeerClient,
                 settings: HaSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.store = store
        self.pg = pg
        self.peers = peers
        self.settings = settings
        self.view: ClusterView | None = None
        self.dcs_ok = False
        self.dcs_last_seen: float | None = None  # epoch seconds of the last successful read
        self.member_seen: dict[str, float] = {}  # member -> monotonic time last listed
        self.down_since: float | None = self.clock.monotonic()
        self.stopped_by_agent = False
        self.first_view = asyncio.Event()
        self.pg_started = asyncio.Event()
        self._config_checked: dict[str, Any] | None = None  # last DCS config looked up
        self.last_leader: Member | None = None  # the member key of the last leader seen

    async def dcs_view(self, budget: float) -> ClusterView | None:
        """Read the cluster within ``budget`` seconds; the last view when the read fails."""
        try:
            view = await bounded(self.store.load(), budget)
        except (DCSError, TimeoutError) as exc:
            if self.dcs_ok:
                log.warning("DCS read failed: %s", describe(exc))
            self.dcs_ok = False
            return self.view
        self.dcs_ok = True
        self.dcs_last_seen = self.clock.wall()
        now = self.clock.monotonic()
        for member in view.members:
            self.member_seen[member] = now
        self.view = view
        self.first_view.set()
        if view.leader is not None and view.leader.name in view.members:
            self.last_leader = view.members[view.leader.name]
        if view.config and view.config != self._config_checked:
            self._config_checked = dict(view.config)  # look its keys up once per content
            for warning in dynamic_config_warnings(view.config):
                log.warning("DCS %s", warning)
        if view.config:
            settings = view.settings.adjusted()
            if settings != view.settings and settings != self.settings:
                log.warning("DCS config breaks loop_wait + 2 * retry_timeout <= ttl: using "
                            "loop_wait=%g retry_timeout=%g", settings.loop_wait,
                            settings.retry_timeout)
            self.settings = settings
        return view

    async def postgres(self) -> tuple[PgState, dict[str, Any]]:
        """Probe PostgreSQL (under ``retry_timeout``): its state and, when it accepts
        connections, the details ``GET /patroni`` shows."""
        try:
            async with asyncio.timeout(self.settings.retry_timeout):
                state = await self.pg.observe()
                details = await self.pg.status() if state.accepting else {}
        except (PgError, OSError, TimeoutError) as exc:
            log.warning("PostgreSQL probe failed: %s", describe(exc))
            state, details = PgState(data=self.pg.data_state(), running=self.pg.is_running()), {}
        if state.accepting:
            self.down_since = None
            self.stopped_by_agent = False
        elif self.down_since is None:
            self.down_since = self.clock.monotonic()
        if state.running:
            self.pg_started.set()
        state = replace(state, down_since=self.down_since, stopped_by_agent=self.stopped_by_agent)
        return state, details

    async def peer_statuses(self, view: ClusterView) -> dict[str, PeerStatus | None]:
        """Every other member's ``GET /patroni``, in parallel (``min(2, ttl/4)`` s each).

        Whose agent does not answer -- a member listed without an answer, or the last leader
        seen when its keys have expired with its session -- has its PostgreSQL asked directly
        (its ``conn_url``, the same bound, the cluster's system identifier checked): when that
        server accepts writes, the member is reported as a running primary (``agent_silent``).
        Its agent may be dead or frozen while its primary keeps taking writes, and nobody may
        promote beside it (safety rule 3)."""
        timeout = min(2.0, self.settings.ttl / 4)
        system_id = view.initialize or None
        last = self.last_leader
        if (view.leader is None and last is not None and last.conn_url
                and last.name not in view.members and last.name != self.store.name):
            # its keys expired: ask its server at once, beside the others' REST APIs, so a
            # dead host costs one timeout, not two
            statuses, last_position = await asyncio.gather(
                self.peers.statuses(view, timeout=timeout),
                remote_writable_position(self.pg.settings, last.conn_url, timeout, system_id))
            self._writable_primary(statuses, last, last_position)
        else:
            statuses = await self.peers.statuses(view, timeout=timeout)
        silent = [view.members[n] for n, st in statuses.items()
                  if st is None and n in view.members and view.members[n].conn_url]
        if silent:
            positions = await asyncio.gather(*(
                remote_writable_position(self.pg.settings, m.conn_url, timeout, system_id)
                for m in silent))
            for member, position in zip(silent, positions, strict=True):
                self._writable_primary(statuses, member, position)
        return statuses

    @staticmethod
    def _writable_primary(statuses: dict[str, PeerStatus | None], member: Member,
                          position: int | None) -> None:
        """Record ``member`` as a running primary when its server accepted writes."""
        if position is None:
            return
        log.warning("member %s: agent does not answer, but its PostgreSQL accepts writes",
                    member.name)
        statuses[member.name] = PeerStatus(member.name, "primary", "running", position,
                                           member.timeline, member.tags, agent_silent=True)

    def postmaster_exited(self) -> None:
        """The postmaster watch saw PostgreSQL exit: it is down from now."""
        self.down_since = self.clock.monotonic()

    def agent_stops_postgres(self) -> None:
        """The actions about to run stop PostgreSQL: a stop is ours, not a crash."""
        self.stopped_by_agent = True
