"""The agent's lease keeping (DESIGN.md safety rule 2), as a mixin of :class:`pgha.agent.Agent`.

The keep-alive renews the DCS session every quarter of its TTL, but only while the decision
loop has completed a cycle recently (a stuck loop must let the lease expire). The lease is
counted from the moment the keep-alive was SENT. When the lease (or a failsafe confirmation)
has run out and the decision loop has not acted, the keep-alive task stops a writable primary
itself (the backstop). Long-running tasks are supervised against stray cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pgha.core.actions import StopMode
from pgha.core.model import ClusterView, HaSettings, safety_margin_for
from pgha.dcs.base import DCSError, KVStore, SessionExpired
from pgha.dcs.store import ClusterStore
from pgha.errors import bounded, describe
from pgha.failsafe import Failsafe
from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres
from pgha.status import AgentStatus

log = logging.getLogger("pgha.agent")


class LeaseKeeping:
    """Lease renewal, the fail-closed backstop and task supervision. The attributes below are
    the agent's (set in ``Agent.__init__``)."""

    settings: HaSettings
    kv: KVStore
    store: ClusterStore
    pg: Postgres
    status: AgentStatus
    view: ClusterView | None
    failsafe: Failsafe
    wake: asyncio.Event
    heartbeat: float
    busy_until: float
    lease_deadline: float | None
    _last_member_json: dict[str, Any] | None
    _decision_task: asyncio.Task[None] | None

    def _mark_busy(self, seconds: float) -> None:
        self.busy_until = max(self.busy_until, time.monotonic() + seconds)

    def _loop_is_alive(self) -> bool:
        """The decision loop completed a cycle recently enough: within one sleep plus one
        cycle whose DCS read and PostgreSQL probe both ran into their timeouts (plus the peer
        fetch), or it is inside a long action that announced itself."""
        st = self.settings
        limit = max(st.ttl / 2, st.loop_wait + 2 * st.retry_timeout + 2.0)
        now = time.monotonic()
        return now - self.heartbeat < limit or now < self.busy_until

    async def confirm_lease(self) -> bool:
        """One keep-alive round trip; on success the lease deadline is counted from the moment
        the request was sent (the store may have renewed it earlier than its answer shows),
        using the TTL of the session the store actually holds (``kv.session_ttl``), not the dynamic
        configuration's, which may differ until the session is renewed with it."""
        sent = time.monotonic()
        try:
            await bounded(self.store.keepalive(), self.settings.retry_timeout)
        except SessionExpired:
            log.warning("DCS session expired: our lock and member key are gone")
            self.lease_deadline = None
            self._last_member_json = None
            self.wake.set()
            return False
        except (DCSError, TimeoutError) as exc:
            log.warning("lease keep-alive failed: %s", describe(exc))
            return False
        lease_ttl = self.kv.session_ttl
        self.lease_deadline = sent + lease_ttl - safety_margin_for(lease_ttl)
        return True

    async def _keepalive_loop(self) -> None:
        while True:
            interval = max(0.25, self.kv.session_ttl / 4)
            if self._loop_is_alive():
                await self.confirm_lease()
            else:
                log.error("decision loop stalled: not renewing the lease")
            if self._decision_overdue():
                log.critical("lease deadline passed and the decision loop has not acted")
                self._log_decision_stack()
                await self._fail_closed_backstop()
            await asyncio.sleep(min(interval, safety_margin_for(self.kv.session_ttl) / 2))

    async def _supervised(self, factory: Callable[[], Coroutine[Any, Any, None]],
                          name: str) -> None:
        """Runs ``factory()`` as a task and restarts it if a stray cancellation (one we did
        not request: gRPC cancels calls in flight on a channel another task closes) ends it;
        a TaskGroup would ignore such a child silently, leaving the agent without decisions
        or lease renewals. Exceptions propagate; our own cancellation is passed on."""
        while True:
            task = asyncio.get_running_loop().create_task(factory(), name=name)
            if name == "decision-loop":
                self._decision_task = task
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

    def _log_decision_stack(self) -> None:
        """Where the decision loop is stuck (for the operator's bug report)."""
        task = self._decision_task
        if task is None or task.done():
            return
        buf = io.StringIO()
        task.print_stack(limit=30, file=buf)
        log.critical("decision loop stack:\n%s", buf.getvalue())

    @property
    def _confirmed_until(self) -> float | None:
        """The later of the lease deadline and the failsafe deadline (None: neither)."""
        known = [d for d in (self.lease_deadline, self.failsafe.deadline) if d is not None]
        return max(known) if known else None

    def lease_seconds_left(self) -> float:
        """Seconds until the leader lease we hold must be confirmed again (``lease_deadline``),
        0 when we do not hold the leader lock. For ``pgha_leader_lease_seconds_left``."""
        if not self.status.holds_lock or self.lease_deadline is None:
            return 0.0
        return max(0.0, self.lease_deadline - time.monotonic())

    def _decision_overdue(self) -> bool:
        """The lease (and any failsafe confirmation) ran out, and no decision cycle has
        completed since: the decision loop is stuck, so it cannot demote the primary itself."""
        until = self._confirmed_until
        if until is None or time.monotonic() < until:
            return False  # no lease to be late on (decide demotes such a primary), or not late
        return self.heartbeat < until - 0.5

    def _dcs_budget(self) -> float:
        """Time a DCS call of the decision loop may take: ``retry_timeout``, but for a
        writable primary no longer than its lease is confirmed, so a hanging store never keeps
        the loop from demoting it in time."""
        budget = self.settings.retry_timeout
        st = self.status.pg
        until = self._confirmed_until
        if until is not None and st.running and st.role is not None \
                and st.role.value == "primary":
            budget = min(budget, max(0.05, until - time.monotonic()))
        return budget

    async def _fail_closed_backstop(self) -> None:
        """Safety rule 2 when ``decide`` cannot run: a writable primary whose lease is not
        confirmed any more is stopped at once (immediate mode)."""
        until = self._confirmed_until
        if until is not None and time.monotonic() < until:
            return
        if self.view is not None and self.view.settings.pause:
            return
        st = self.status.pg
        if self.pg.is_running() and st.role is not None and st.role.value == "primary":
            log.critical("decision loop failing and lease unconfirmed: stopping PostgreSQL")
            with contextlib.suppress(PgError, OSError, TimeoutError):
                async with asyncio.timeout(10):
                    await self.pg.stop(StopMode.IMMEDIATE)
