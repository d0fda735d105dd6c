"""The publish stage: the status snapshot the REST API serves and the member key in the DCS.

:class:`Publisher` owns the latest :class:`~pgha.core.status.AgentStatus` (replaced, never
mutated: API handlers read it without locks) and what it last wrote to ``members/<name>``.
The member key is written when something other than the WAL positions changed, or when the
positions changed and ``loop_wait`` has passed since the last write: every write wakes the other
members, so a busy primary must not publish on every cycle. A failed write is logged and
retried on the next cycle; nothing here raises into the caller except CancelledError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.observe import Observer
from pgha.agent.peers import parse_peer_status
from pgha.core.decision import Decision, Reason
from pgha.core.model import ClusterView, PeerStatus, PgState, Tags
from pgha.core.status import ActionFailure, AgentStatus
from pgha.dcs.base import DCSError, SessionExpired
from pgha.dcs.store import ClusterStore
from pgha.errors import bounded, describe
from pgha.pg.errors import PgError

log = logging.getLogger("pgha.agent")

_BUSY_PUBLISH_BUDGET = 3.0
LIVE_TIMEOUT = 1.0  # seconds GET /patroni waits for PostgreSQL's live positions

# member-key fields that change with every write on the primary
_POSITIONS = frozenset({"xlog_location", "receive_lsn", "replay_lsn"})


class Publisher:
    """See the module docstring."""

    def __init__(self, store: ClusterStore, status: AgentStatus,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.store = store
        self.status = status
        self._member_json: dict[str, Any] | None = None
        self._member_written = 0.0

    def publish(self, pg: PgState, details: Mapping[str, Any], decision: Decision, *,
                view: ClusterView | None, dcs_ok: bool, dcs_last_seen: float | None,
                tags: Tags, pending_restart: bool,
                pending_restart_reason: Mapping[str, Any] | None,
                scheduled_restart: Mapping[str, Any] | None,
                failure: ActionFailure | None = None,
                slot_problems: Mapping[str, str] | None = None,
                watchdog_failed: bool = False, logger: tuple[int, int] = (0, 0)) -> None:
        """Replace the status snapshot. We hold the lock when the last view shows the leader
        key naming us AND bound to our current session (DESIGN.md safety rule 7: a key that
        merely holds our name is not our lock) and the DCS answered, or when failsafe mode
        keeps us primary."""
        failsafe_active = decision.reason is Reason.FAILSAFE_ACTIVE
        session = self.store.kv.session_id
        holds = bool(view and view.leader and view.leader.name == self.status.name
                     and session is not None and view.leader.session == session
                     and dcs_ok) or failsafe_active
        old = self.status
        self.status = AgentStatus(
            name=old.name, scope=old.scope, tags=tags, conn_url=old.conn_url,
            api_url=old.api_url, pg=pg, pg_details=details, view=view,
            dcs_last_seen=dcs_last_seen, holds_lock=holds, heartbeat=self.clock.monotonic(),
            reason=decision.reason.value, message=decision.message,
            failsafe_active=failsafe_active, scheduled_restart=scheduled_restart,
            pending_restart=pending_restart, pending_restart_reason=pending_restart_reason,
            failure=failure, slot_problems=dict(slot_problems or {}),
            watchdog_failed=watchdog_failed, logger=logger,
        )

    def set_api_url(self, api_url: str) -> None:
        """Publish ``api_url`` from now on (a reloaded ``restapi.connect_address`` or TLS);
        the member key follows on the next write."""
        if api_url != self.status.api_url:
            log.info("REST API URL published as %s", api_url)
            self.status = replace(self.status, api_url=api_url)

    def update_postgres(self, pg: PgState, details: Mapping[str, Any]) -> None:
        """Replace only PostgreSQL's part of the status (between actions of a cycle)."""
        self.status = replace(self.status, pg=pg, pg_details=details,
                              heartbeat=self.clock.monotonic())

    def set_busy(self, what: str | None) -> None:
        """A long action (Patroni's state string, e.g. ``creating replica``) is in flight."""
        self.status = replace(self.status, pg=replace(self.status.pg, busy=what),
                              heartbeat=self.clock.monotonic())

    async def live(self, probe: Callable[[], Awaitable[tuple[PgState, Mapping[str, Any]]]],
                   timeout: float = LIVE_TIMEOUT) -> AgentStatus:
        """The status with PostgreSQL's WAL positions and details read now by ``probe`` (as
        Patroni's ``GET /patroni`` does): a peer comparing positions in a leader race, or
        counting quorum votes, must see the WAL we received since our last cycle. The
        published status as it is when PostgreSQL does not answer within ``timeout``, or no
        longer runs in the role published (the decision loop republishes that)."""
        status = self.status
        if not (status.pg.running and status.pg.accepting):
            return status
        try:
            async with asyncio.timeout(timeout):
                pg, details = await probe()
        except (PgError, OSError, TimeoutError) as exc:
            log.debug("live status unavailable: %s", describe(exc))
            return status
        if (pg.running, pg.accepting, pg.role) != (True, True, status.pg.role):
            return status
        return replace(status, pg=replace(status.pg, wal_position=pg.wal_position,
                                          timeline=pg.timeline), pg_details=details)

    def own_peer_status(self) -> PeerStatus | None:
        """Our own published status as a peer would see it over ``GET /patroni``."""
        return parse_peer_status(self.status.name, self.status.to_patroni_json())

    @property
    def member_key_published(self) -> bool:
        """The last write of our member key worked (and the session has not been lost since)."""
        return self._member_json is not None

    def forget_member_key(self) -> None:
        """The member key is gone (session lost): write it again on the next cycle."""
        self._member_json = None

    async def write_member_key(self, loop_wait: float, budget: float) -> bool:
        """Publish ``members/<name>`` when due (see the module docstring), within ``budget``
        seconds. Returns False when the session was found expired (the caller should wake
        the loop)."""
        data = self.status.to_member_json()
        last = self._member_json
        now = self.clock.monotonic()
        if last is not None:
            same = {k: v for k, v in data.items() if k not in _POSITIONS} == {
                k: v for k, v in last.items() if k not in _POSITIONS}
            due = now - self._member_written >= loop_wait
            if same and (data == last or not due):
                return True
        try:
            await bounded(self.store.touch_member(data), budget)
        except SessionExpired:
            self._member_json = None
            return False
        except (DCSError, TimeoutError) as exc:
            log.warning("could not publish our member key: %s", describe(exc))
            self._member_json = None
        else:
            self._member_json = data
            self._member_written = now
        return True


class StatusRefresher:
    """Re-observes PostgreSQL and republishes the status at once, between actions (the
    executor's :class:`~pgha.agent.executor_ports.PgStatusSink`): peers must never read a status
    that shows a primary already stopped."""

    def __init__(self, observer: Observer, publisher: Publisher) -> None:
        self.observer = observer
        self.publisher = publisher

    async def pg_changed(self) -> None:
        pg, details = await self.observer.postgres()
        self.publisher.update_postgres(pg, details)

    async def busy(self, what: str) -> None:
        """Show ``what`` as the state, in the API and (best effort, within a few seconds) in
        the member key, which ``pgha list`` reads while the action runs."""
        self.publisher.set_busy(what)
        await self.publisher.write_member_key(0.0, _BUSY_PUBLISH_BUDGET)
