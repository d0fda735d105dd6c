"""The observe stage: the DCS view, PostgreSQL's state, and peers' statuses before a race.

:class:`Observer` owns what the agent last observed: the last DCS snapshot (kept when a read
fails, so decisions see the last known leader), whether the DCS answered, when each member was
last seen (for ``member_slots_ttl``), the HA settings in force (from the DCS ``config``, made
to respect ``loop_wait + 2 * retry_timeout <= ttl``), and when PostgreSQL went down and whether
that was the agent's doing. Every DCS and PostgreSQL call is bounded; a failure is logged and
observed as such (``dcs_ok`` False, a probe with only the data directory's state), never raised.

The DCS view costs no request while the watch-fed cache (:meth:`ClusterStore.cached_view`)
is usable AND the DCS answered this agent recently (:meth:`Observer.heard`: a keep-alive, a
watch event or a read, within one keep-alive interval plus ``retry_timeout``); otherwise, or
when asked for a ``fresh`` view, the cluster is read. So an unreachable DCS is noticed (``dcs_ok``
False) at most one keep-alive interval plus two ``retry_timeout`` after its last answer, and
leadership never rests on the cache: it rests on the lease (DESIGN.md rule 2).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.peers import PeerClient
from pgha.config import dynamic_config_warnings
from pgha.core.lease import keepalive_interval
from pgha.core.model import ClusterView, HaSettings, Member, PeerStatus, PgState, Tags
from pgha.core.standby import REMOTE
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
        self._heard: float | None = None  # monotonic time of the DCS's last answer to us
        # member (or, from the status key's retain_slots, slot) name -> monotonic time last
        # listed, for member_slots_ttl
        self.member_seen: dict[str, float] = {}
        self.down_since: float | None = self.clock.monotonic()
        self.stopped_by_agent = False
        self.first_view = asyncio.Event()
        self.pg_started = asyncio.Event()
        self._config_checked: dict[str, Any] | None = None  # last DCS config looked up
        self.last_leader: Member | None = None  # the member key of the last leader seen
        self.known_members: dict[str, Member] = {}  # every member key seen, the latest of each

    def heard(self, at: float) -> None:
        """The DCS answered a request of ours sent at monotonic time ``at`` (a keep-alive,
        or a watch event delivered then)."""
        self._heard = at if self._heard is None else max(self._heard, at)

    def _recently_heard(self, now: float) -> bool:
        if self._heard is None:
            return False
        retry = self.settings.retry_timeout
        window = keepalive_interval(self.store.kv.session_ttl, retry) + retry
        return now - self._heard <= window

    async def dcs_view(self, budget: float, *, fresh: bool = False) -> ClusterView | None:
        """The cluster (see the module docstring for when it is read, within ``budget``
        seconds); the last view when the read fails."""
        now = self.clock.monotonic()
        cached = None if fresh or not self._recently_heard(now) else self.store.cached_view()
        if cached is not None:
            assert self._heard is not None
            self.dcs_ok = True
            self.dcs_last_seen = self.clock.wall() - (now - self._heard)
            return self._accept(cached, now)
        try:
            view = await bounded(self.store.load(), budget)
        except (DCSError, TimeoutError) as exc:
            if self.dcs_ok:
                log.warning("DCS read failed: %s", describe(exc))
            self.dcs_ok = False
            return self.view
        self.heard(now)
        self.dcs_ok = True
        self.dcs_last_seen = self.clock.wall()
        return self._accept(view, self.clock.monotonic())

    def _accept(self, view: ClusterView, now: float) -> ClusterView:
        """Take ``view`` as the current one (members seen, settings in force)."""
        for name, member in view.members.items():
            self.member_seen[name] = now
            self.known_members[name] = member
        for name in view.retain_slots:  # members the leader saw leave: their slots are kept
            self.member_seen.setdefault(name, now)
        if view is self.view:
            return view  # the cache's unchanged view: the rest was done when it came
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

        Whose agent does not answer has its PostgreSQL asked directly (its ``conn_url``, the
        same bound, the cluster's system identifier checked): a member listed without an
        answer and, while no leader holds the lock, every server a member whose keys expired
        with its session may still run: the leader that last wrote the ``status`` key (the key
        has no lease: even an agent that never saw that leader finds it), each member this
        agent has seen and that is no longer listed (the last leader first), and the upstream
        our own replica was configured to stream from (kept in the data directory). A server
        that accepts writes is reported as a running primary (``agent_silent``): its agent may
        be dead or frozen while its primary keeps taking writes, and nobody may promote beside
        it (safety rule 3)."""
        timeout = min(2.0, self.settings.ttl / 4)
        system_id = view.initialize or None
        vanished = self._vanished_servers(view)
        # the vanished ones are asked at once, beside the others' REST APIs, so a dead host
        # costs one timeout, not two
        asked = asyncio.gather(*(remote_writable_position(self.pg.settings, url, timeout,
                                                          system_id)
                                 for _, url, _ in vanished))
        statuses, found = await asyncio.gather(self.peers.statuses(view, timeout=timeout), asked)
        for (name, _, member), position in zip(vanished, found, strict=True):
            self._writable_primary(statuses, name, member, position)
        silent = [view.members[n] for n, st in statuses.items()
                  if st is None and n in view.members and view.members[n].conn_url]
        if silent:
            positions = await asyncio.gather(*(
                remote_writable_position(self.pg.settings, m.conn_url, timeout, system_id)
                for m in silent))
            for member, position in zip(silent, positions, strict=True):
                self._writable_primary(statuses, member.name, member, position)
        return statuses

    def _vanished_servers(self, view: ClusterView) -> list[tuple[str, str, Member | None]]:
        """``(name, conn_url, member key if known)`` of the servers a member whose keys
        expired may still run on, each once, the ``status`` key's leader first: none while a
        leader holds the lock. The remote primary a standby leader streamed from is none of
        them."""
        if view.leader is not None:
            return []
        known = dict(self.known_members)
        if self.last_leader is not None:
            known = {self.last_leader.name: self.last_leader, **known}
        candidates: list[tuple[str, str, Member | None]] = []
        if view.status_leader is not None:
            name, url = view.status_leader
            candidates.append((name, url, known.get(name)))
        candidates += [(name, m.conn_url, m) for name, m in known.items()]
        upstream = self.pg.current_upstream()
        if upstream is not None and upstream.name != REMOTE:  # a standby cluster's remote
            # primary is writable by design: not a member of this cluster
            candidates.append((upstream.name, upstream.conn_url, known.get(upstream.name)))
        out: dict[str, tuple[str, str, Member | None]] = {}
        for name, url, member in candidates:
            if url and name not in view.members and name != self.store.name:
                out.setdefault(name, (name, url, member))
        return list(out.values())

    @staticmethod
    def _writable_primary(statuses: dict[str, PeerStatus | None], name: str,
                          member: Member | None, position: int | None) -> None:
        """Record ``name`` as a running primary when its server accepted writes."""
        if position is None:
            return
        log.warning("member %s: agent does not answer, but its PostgreSQL accepts writes", name)
        statuses[name] = PeerStatus(name, "primary", "running", position,
                                    member.timeline if member is not None else None,
                                    member.tags if member is not None else Tags(),
                                    agent_silent=True)

    def postmaster_exited(self) -> None:
        """The postmaster watch saw PostgreSQL exit: it is down from now."""
        self.down_since = self.clock.monotonic()

    def agent_stops_postgres(self) -> None:
        """The actions about to run stop PostgreSQL: a stop is ours, not a crash."""
        self.stopped_by_agent = True
