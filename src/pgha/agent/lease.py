"""The lease keeper (DESIGN.md safety rule 2): keep-alive, lease deadline, fail-closed backstop.

The keep-alive renews the DCS session every :func:`~pgha.core.lease.keepalive_interval` (at most
a quarter of its TTL), but only while the decision loop has completed a cycle recently
(:meth:`LeaseKeeper.beat`; a stuck loop must let the lease expire) or runs a long action
(:meth:`LeaseKeeper.busy`, for as long as the action runs, never longer). The lease is counted
from the moment the keep-alive was SENT, with the TTL of the session the store actually holds.
When the lease (and any failsafe confirmation) has run out and the decision loop has not decided
since (:meth:`LeaseKeeper.decided`), the keep-alive task stops a writable primary itself (the
backstop; the verdicts are :mod:`pgha.core.lease`).

A session switch (a ``ttl`` change, :meth:`LeaseKeeper.switch_session`) and the keep-alive never
run at the same time: a keep-alive racing with it could renew, or find gone, a session being
retired.

State owned here: ``lease_deadline``, the loop ``heartbeat``, ``decided_at``, the open busy
windows and the decision task (for its stack in the log). Nothing here raises into the caller
except CancelledError (and :meth:`LeaseKeeper.switch_session`'s documented failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import replace

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.failsafe import Failsafe
from pgha.agent.publish import Publisher
from pgha.core import lease as rules
from pgha.core.actions import StopPostgres
from pgha.core.lease import keepalive_interval
from pgha.core.model import ClusterView, HaSettings, safety_margin_for
from pgha.dcs.base import DCSError, KVStore, SessionExpired
from pgha.dcs.store import ClusterStore, SessionSwitch
from pgha.errors import bounded, describe
from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres

log = logging.getLogger("pgha.agent")


class LeaseKeeper:
    """See the module docstring. ``settings()`` returns the current HA settings; ``view()``
    the last DCS snapshot (for ``pause``); ``wake`` is set when the session was lost;
    ``renewed(sent)`` is called after each successful keep-alive with its send time."""

    def __init__(self, kv: KVStore, store: ClusterStore, pg: Postgres, failsafe: Failsafe,
                 publisher: Publisher, settings: Callable[[], HaSettings],
                 view: Callable[[], ClusterView | None], wake: asyncio.Event,
                 clock: Clock = SYSTEM_CLOCK,
                 renewed: Callable[[float], None] | None = None) -> None:
        self.clock = clock
        self.renewed = renewed  # told the send time of each successful keep-alive
        self.kv = kv
        self.store = store
        self.pg = pg
        self.failsafe = failsafe
        self.publisher = publisher
        self.settings = settings
        self.view = view
        self.wake = wake
        self.lease_deadline: float | None = None
        self.heartbeat = self.clock.monotonic()
        self.decided_at = -math.inf  # the ``now`` of the loop's last decide (none yet)
        self._busy: dict[int, float] = {}  # open busy windows: token -> end
        self._tokens = itertools.count()
        self.decision_task: asyncio.Task[None] | None = None
        self._session_lock = asyncio.Lock()  # keep-alive vs session switch

    # ------------------------------------------------------------------ read by others
    @property
    def confirmed_until(self) -> float | None:
        """The later of the lease deadline and the failsafe deadline (None: neither)."""
        return rules.confirmed_until(self.lease_deadline, self.failsafe.deadline)

    def seconds_left(self) -> float:
        """Seconds until the leader lease we hold must be confirmed again, 0 when we do not
        hold the leader lock. For ``pgha_leader_lease_seconds_left``."""
        if not self.publisher.status.holds_lock or self.lease_deadline is None:
            return 0.0
        return max(0.0, self.lease_deadline - self.clock.monotonic())

    @property
    def busy_until(self) -> float:
        """The end of the latest busy window still open (0: none is)."""
        return max(self._busy.values(), default=0.0)

    def dcs_budget(self) -> float:
        """Time a DCS call of the decision loop may take (:func:`pgha.core.lease.dcs_budget`)."""
        return rules.dcs_budget(self.settings(), self.publisher.status.pg,
                                self.confirmed_until, self.clock.monotonic())

    # ------------------------------------------------------------------ told by others
    def beat(self) -> None:
        """The decision loop completed a cycle (gates the keep-alive)."""
        self.heartbeat = self.clock.monotonic()

    def decided(self, now: float) -> None:
        """The decision loop ran ``decide`` with ``now`` (what the backstop waits for)."""
        self.decided_at = max(self.decided_at, now)

    @contextlib.contextmanager
    def busy(self, seconds: float) -> Iterator[None]:
        """Around a long action that runs for up to ``seconds`` (``math.inf``: no limit of
        its own): until the block exits, however it exits (return, exception, timeout,
        cancellation), and at most ``seconds``, the keep-alive counts the loop as alive, not
        stuck. Windows may nest or overlap; each ends with its own block."""
        token = next(self._tokens)
        self._busy[token] = self.clock.monotonic() + seconds
        try:
            yield
        finally:
            del self._busy[token]

    # ------------------------------------------------------------------ the keep-alive
    async def confirm(self) -> bool:
        """One keep-alive round trip; on success the lease deadline is counted from the moment
        the request was sent (the store may have renewed it earlier than its answer shows),
        using the TTL of the session the store holds (``kv.session_ttl``), not the dynamic
        configuration's, which may differ until the session is renewed with it."""
        async with self._session_lock:
            return await self._confirm()

    async def _confirm(self) -> bool:
        sent = self.clock.monotonic()
        try:
            await bounded(self.store.keepalive(), self.settings().retry_timeout)
        except SessionExpired:
            log.warning("DCS session expired: our lock and member key are gone")
            # keep a deadline, already passed: the backstop must still stop a writable
            # primary whose decision loop is stuck (None would mean "no lease to be late on")
            if self.lease_deadline is not None:
                self.lease_deadline = min(self.lease_deadline, sent)
            self.publisher.forget_member_key()
            self.wake.set()
            return False
        except (DCSError, TimeoutError) as exc:
            log.warning("lease keep-alive failed: %s", describe(exc))
            return False
        lease_ttl = self.kv.session_ttl
        self.lease_deadline = sent + lease_ttl - safety_margin_for(lease_ttl)
        if self.renewed is not None:
            self.renewed(sent)  # the watchdog device is fed here (pgha.agent.watchdog)
        return True

    async def switch_session(self, ttl: float, budget: float) -> SessionSwitch:
        """Move our keys to a new DCS session granted for ``ttl``
        (:meth:`ClusterStore.switch_session`) within ``budget`` seconds, with no keep-alive
        running meanwhile. The lease deadline is capped the moment the new session is open,
        before any key moves to it: ``min(deadline, sent + kv.session_ttl - margin)``, ``sent``
        taken before the grant was asked for - our leader key is then bound either to the old
        session (which the current deadline covers) or to the new one (granted after ``sent``
        for at least ``session_ttl``), so the deadline never exceeds what the session the key
        is bound to guarantees (DESIGN.md rules 2 and 7). DCSError/TimeoutError propagate; the
        old session keeps working (or both are renewed, when the switch failed half-way)."""
        async with self._session_lock:
            sent = self.clock.monotonic()

            def opened() -> None:
                if self.lease_deadline is not None:
                    ttl_now = self.kv.session_ttl
                    self.lease_deadline = min(self.lease_deadline,
                                              sent + ttl_now - safety_margin_for(ttl_now))

            return await bounded(self.store.switch_session(ttl, opened), budget)

    async def keepalive_loop(self) -> None:
        """Runs until cancelled: :meth:`keepalive_round`, every ``keepalive_interval``."""
        while True:
            await self.keepalive_round()
            await asyncio.sleep(keepalive_interval(self.kv.session_ttl,
                                                   self.settings().retry_timeout))

    async def keepalive_round(self) -> None:
        """Renew the lease when the loop is alive; then the backstop when the lease has run
        out and the loop has not decided since."""
        now = self.clock.monotonic()
        if rules.loop_is_alive(self.settings(), self.heartbeat, self.busy_until, now):
            await self.confirm()
        else:
            log.error("decision loop stalled: not renewing the lease")
        if rules.decision_overdue(self.confirmed_until, self.decided_at, self.clock.monotonic()):
            log.critical("lease deadline passed and the decision loop has not decided since")
            self._log_decision_stack()
            await self.backstop()

    async def backstop(self) -> None:
        """Carry out :func:`pgha.core.lease.backstop` (called when ``decide`` cannot run)."""
        view = self.view()
        pg_state = replace(self.publisher.status.pg, running=self.pg.is_running())
        verdict = rules.backstop(pg_state, view is not None and view.settings.pause,
                                 self.confirmed_until, self.clock.monotonic())
        if verdict is None:
            return
        log.critical("decision %s: %s", verdict.reason.value, verdict.message)
        for action in verdict.actions:
            if isinstance(action, StopPostgres):
                with contextlib.suppress(PgError, OSError, TimeoutError):
                    async with asyncio.timeout(10):
                        await self.pg.stop(action.mode)

    def _log_decision_stack(self) -> None:
        """Where the decision loop is stuck (for the operator's bug report)."""
        task = self.decision_task
        if task is None or task.done():
            return
        buf = io.StringIO()
        task.print_stack(limit=30, file=buf)
        log.critical("decision loop stack:\n%s", buf.getvalue())
