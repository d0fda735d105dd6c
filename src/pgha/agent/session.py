"""The DCS session and client follow the dynamic configuration in force (``ttl``,
``retry_timeout``), from the cycle that first sees a change.

:meth:`SessionFollower.follow` runs in the decision cycle between observe and decide, with the
settings the observer just derived from the DCS ``config`` (after ``HaSettings.adjusted()``):

* ``retry_timeout`` becomes the DCS client's per-call ``timeout`` at once (the executor reads
  the same setting for its own DCS timeouts);
* when ``ttl`` differs from the TTL our session was granted for (``kv.ttl``), or a previous
  switch was left unfinished (a retired session is still open), our keys move to a new session
  granted for ``ttl`` (:meth:`pgha.agent.lease.LeaseKeeper.switch_session`, which serializes
  the switch with keep-alives and counts the lease conservatively across it; the procedure and
  its safety argument: :meth:`pgha.dcs.store.ClusterStore.switch_session`). One INFO line per
  switch. A failed switch leaves the old session working (or both sessions renewed, when it
  failed half-way) and is retried with capped exponential backoff, never in a tight loop.

It is an agent-side component, not a core action: the core decides about PostgreSQL and the
leader lock; which session carries the lock is a property of the DCS client, and the core
judges the outcome from the view re-read after a switch (a leader key left on the retired
session is seen as not bound to our session and rebound, DESIGN.md safety rule 7).
"""

from __future__ import annotations

import logging

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.lease import LeaseKeeper
from pgha.agent.publish import Publisher
from pgha.core.model import HaSettings
from pgha.dcs.base import DCSError, KVStore
from pgha.errors import describe

log = logging.getLogger("pgha.agent")

BACKOFF_FIRST = 1.0  # seconds before the first retry of a failed switch
BACKOFF_MAX = 60.0  # ... doubling up to this


class SessionFollower:
    """State owned: the backoff of failed switches and the TTL a pending switch started from
    (for the log line)."""

    def __init__(self, kv: KVStore, lease: LeaseKeeper, publisher: Publisher,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.kv = kv
        self.lease = lease
        self.publisher = publisher
        self.clock = clock
        self.failures = 0
        self.retry_at = 0.0
        self._was: float | None = None  # the TTL before the pending switch

    def pending(self, settings: HaSettings) -> bool:
        """Our session does not match ``settings.ttl`` yet (or a switch is unfinished)."""
        return self.kv.ttl != settings.ttl or self.kv.retired_session_id is not None

    async def follow(self, settings: HaSettings, budget: float) -> bool:
        """Apply ``settings`` (see the module docstring); a switch runs within ``budget``
        seconds. Returns True when our session changed: the caller must re-read the DCS view
        before deciding (the one it holds shows our keys bound to the old session). Never
        raises DCSError/TimeoutError: a failure is logged and retried after a backoff."""
        self.kv.timeout = settings.retry_timeout
        if not self.pending(settings):
            return False
        now = self.clock.monotonic()
        if now < self.retry_at:
            return False
        if self._was is None:
            self._was = self.kv.ttl
        before = self.kv.session_id
        try:
            await self.lease.switch_session(settings.ttl, budget)
        except (DCSError, TimeoutError) as exc:
            self.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
            self.retry_at = now + delay
            log.warning("could not renew the DCS session with ttl %g (%s): the old session "
                        "keeps working; next attempt in %gs", settings.ttl, describe(exc),
                        delay)
            return self.kv.session_id != before
        self.failures, self.retry_at = 0, 0.0
        log.info("DCS session renewed with ttl %g (was %g)", self.kv.ttl, self._was)
        self._was = None
        self.publisher.forget_member_key()  # rewritten on the new session by this cycle
        return True
