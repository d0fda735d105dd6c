"""The synchronous hooks as the executor runs them (:mod:`pgha.pg.hooks`): ``pre_promote``
for :class:`pgha.core.actions.PrePromote` and ``before_stop`` before a stop of PostgreSQL.

Contract: :func:`fence_before_promote` and :func:`before_stop` hold the loop busy (not stuck:
the lease keep-alive goes on) for at most the hook's timeout plus a margin, and never raise
for the hook's own failure. Only the DCS write of a failed ``pre_promote`` may raise
(DCSError, TimeoutError): the action then fails, and the core releases the lock later.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager
from typing import Protocol

from pgha.core.model import PgState
from pgha.dcs.store import ClusterStore
from pgha.errors import describe
from pgha.pg.errors import PgError
from pgha.pg.hooks import PgHooks

log = logging.getLogger("pgha.executor")

_MARGIN = 5.0  # seconds beyond a hook's own timeout (killing and reaping it)


class Busy(Protocol):
    """The lease keeper's busy window (:meth:`pgha.agent.executor_ports.LeaseGate.busy`)."""

    def busy(self, seconds: float) -> AbstractContextManager[None]: ...


class Observable(Protocol):
    async def observe(self) -> PgState: ...


async def fence_before_promote(hooks: PgHooks | None, store: ClusterStore, lease: Busy, *,
                               dcs_timeout: float) -> bool:
    """Run ``postgresql.pre_promote``. True when none is set or it exited 0. Otherwise one
    error line names the key and the exit status, the leader key is deleted
    (compare-and-delete on our name and session) and False is returned."""
    if hooks is None or not hooks.configured("pre_promote"):
        return True
    with lease.busy(hooks.timeout() + _MARGIN + dcs_timeout):
        result = await hooks.run("pre_promote")
        if result is None or result.ok:
            return True
        log.error("%s: not promoting; releasing the leader lock and staying out of the "
                  "leader race for ttl seconds", result.describe())
        async with asyncio.timeout(dcs_timeout):
            if not await store.release_leader():
                log.warning("pre_promote failed: the leader key was no longer ours")
    return False


async def before_stop(hooks: PgHooks | None, pg: Observable, lease: Busy, *,
                      probe_timeout: float) -> None:
    """Run ``postgresql.before_stop`` when it is set and PostgreSQL runs (when that cannot be
    told within ``probe_timeout``, it runs all the same); its failure is logged only."""
    if hooks is None or not hooks.configured("before_stop"):
        return
    try:
        async with asyncio.timeout(probe_timeout):
            if not (await pg.observe()).running:
                return
    except (PgError, OSError, TimeoutError) as exc:
        log.warning("before_stop: cannot tell whether PostgreSQL runs (%s): running it",
                    describe(exc))
    with lease.busy(hooks.timeout() + _MARGIN):
        result = await hooks.run("before_stop")
    if result is not None and not result.ok:
        log.warning("%s (ignored): stopping PostgreSQL", result.describe())
