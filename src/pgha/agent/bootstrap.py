"""Bootstrapping a new cluster: the ``BootstrapCluster`` action, carried out by the executor.

Contract (Patroni's semantics):

1. Claim the ``initialize`` key (create-if-absent). Losing that race is not a failure: the
   action returns False and the member later clones from the winner.
2. initdb and a first start as primary (state ``initializing new cluster``), or instead the
   custom method ``bootstrap.method`` names: its command (``running custom bootstrap
   script``), then the restored data recovered and promoted (``starting after custom
   bootstrap``), see :mod:`pgha.pg.custom_bootstrap`. Then, either way: roles,
   ``post_bootstrap`` (its process group is killed when the bootstrap's time is up, or when
   the agent stops), the dynamic configuration, the leader lock, and finally the system
   identifier of the data (a restored cluster keeps its source's) in ``initialize``.
3. If any step fails, everything this member created is undone (PostgreSQL stopped, the data
   directory wiped, the leader lock released, ``initialize`` given back so another member may
   bootstrap) and :class:`BootstrapFailed` is raised: the agent exits non-zero with the cause
   in one line (systemd restarts it with its own backoff), it never loops on initdb or on the
   method. A custom method's failure shows as ``custom bootstrap failed`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from pgha.config import BootstrapMethod
from pgha.core.actions import StopMode, Upstream
from pgha.core.model import PgState
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.errors import AgentFatal, describe
from pgha.pg import custom_bootstrap
from pgha.pg.cmd import kill_group
from pgha.pg.connparams import client_files, local_superuser_url
from pgha.pg.errors import PgError
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.executor")


class BootstrapFailed(AgentFatal):
    """The new cluster could not be bootstrapped; what was created has been cleaned up."""


class BootstrapPg(Protocol):
    """What bootstrapping needs of the local PostgreSQL."""

    @property
    def settings(self) -> PgSettings: ...

    async def initdb(self) -> bool: ...

    async def start(self, role: str, upstream: Upstream | None) -> bool: ...

    async def create_roles(self) -> None: ...

    async def observe(self) -> PgState: ...

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool: ...

    async def wipe(self) -> None: ...


class LeaseConfirm(Protocol):
    async def confirm(self) -> bool: ...

    def busy(self, seconds: float) -> AbstractContextManager[None]:
        """Not a stuck loop until the block exits (at most ``seconds``)."""
        ...


class BusyStatus(Protocol):
    async def busy(self, what: str) -> None:
        """Show ``what`` (Patroni's state string) while the bootstrap runs."""
        ...


class _Unseen:
    async def busy(self, what: str) -> None:
        return None


class ClusterBootstrap:
    """Carries out ``BootstrapCluster`` (see the module docstring); ``method`` is the custom
    bootstrap method (None: initdb)."""

    def __init__(self, pg: BootstrapPg, store: ClusterStore, lease: LeaseConfirm, *,
                 bootstrap_config: Mapping[str, Any], post_bootstrap: str | None,
                 pg_ctl_timeout: float, dcs_timeout: float,
                 method: BootstrapMethod | None = None) -> None:
        self.pg = pg
        self.store = store
        self.lease = lease
        self.bootstrap_config = bootstrap_config
        self.post_bootstrap = post_bootstrap
        self.pg_ctl_timeout = pg_ctl_timeout
        self.dcs_timeout = dcs_timeout
        self.method = method

    async def run(self, status: BusyStatus | None = None) -> bool:
        """True when bootstrapped, False when another member won ``initialize``; raises
        :class:`BootstrapFailed` after cleaning up when a step failed. ``status`` is told the
        state strings of the steps."""
        pg, store, method = self.pg, self.store, self.method
        shown = status if status is not None else _Unseen()
        async with asyncio.timeout(self.dcs_timeout):
            if not await store.claim_initialize():
                log.info("another member claimed initialize first")
                return False
        log.info("won the initialize race: bootstrapping a new cluster with %s",
                 "initdb" if method is None else "a custom method")
        try:
            budget = self.pg_ctl_timeout * 4 + 60
            if method is not None:
                budget += custom_bootstrap.COMMAND_TIMEOUT + custom_bootstrap.RECOVERY_TIMEOUT
            with self.lease.busy(budget):
                async with asyncio.timeout(budget):
                    if method is None:
                        await shown.busy("initializing new cluster")
                        if not await pg.initdb():
                            raise BootstrapFailed("initdb failed")
                        if not await pg.start("primary", None):
                            raise BootstrapFailed("PostgreSQL did not start after initdb")
                        await pg.create_roles()
                    else:
                        await self._restore(method, shown)
                    if self.post_bootstrap:
                        await self._run_post_bootstrap(self.post_bootstrap)
            async with asyncio.timeout(self.dcs_timeout):
                await store.create_config(self.bootstrap_config)
            if not await self.lease.confirm():
                raise BootstrapFailed("could not open a DCS session")
            async with asyncio.timeout(self.dcs_timeout):
                if not await store.acquire_leader():
                    raise BootstrapFailed("leader lock taken during bootstrap")
            state = await pg.observe()
            if not state.sysid:
                raise BootstrapFailed("no system identifier after the bootstrap")
            async with asyncio.timeout(self.dcs_timeout):
                await store.set_initialize(state.sysid)
        except (BootstrapFailed, DCSError, PgError, OSError, TimeoutError) as exc:
            own = (BootstrapFailed, custom_bootstrap.CustomBootstrapError)
            cause = str(exc) if isinstance(exc, own) else describe(exc)
            log.error("bootstrap failed: %s; cleaning up", cause)
            if method is not None:
                await shown.busy("custom bootstrap failed")
            await self._undo()
            raise BootstrapFailed(f"failed to bootstrap the cluster: {cause}") from None
        log.info("bootstrapped cluster %s", state.sysid)
        return True

    async def _restore(self, method: BootstrapMethod, shown: BusyStatus) -> None:
        """The custom method instead of initdb: the command, recovery and promotion, the
        roles, then the configuration of a primary (restarted when recovery settings that
        only a restart removes are still in effect). Raises on failure."""
        settings = self.pg.settings
        await shown.busy("running custom bootstrap script")
        await custom_bootstrap.run_command(settings, method)
        await shown.busy("starting after custom bootstrap")
        await custom_bootstrap.recover(settings, method)
        await custom_bootstrap.create_roles(settings)
        if stale := await custom_bootstrap.finish(settings):
            log.info("restarting PostgreSQL to leave the recovery settings behind: %s",
                     ", ".join(stale))
            if not await self.pg.stop(StopMode.FAST) or not await self.pg.start("primary",
                                                                                 None):
                raise BootstrapFailed("PostgreSQL did not restart after the custom bootstrap")

    async def _undo(self) -> None:
        try:
            await self.pg.stop(StopMode.IMMEDIATE)
            await self.pg.wipe()
        except (PgError, OSError) as exc:
            log.error("cleanup after failed bootstrap: %s", describe(exc))
        try:
            async with asyncio.timeout(self.dcs_timeout):
                await self.store.release_leader()
                await self.store.cancel_initialize()
        except (DCSError, TimeoutError) as exc:
            log.error("could not release initialize after failed bootstrap: %s", describe(exc))

    async def _run_post_bootstrap(self, command: str) -> None:
        """``command <connection URL>`` (the superuser, as the agent connects), output logged.
        Raises BootstrapFailed on a non-zero exit; on cancellation (the bootstrap's timeout)
        its whole process group is killed before the cancellation goes on."""
        st = self.pg.settings
        url = local_superuser_url(st)  # socket or TCP, the superuser's libpq options
        with client_files(st, st.superuser, "superuser") as extra:
            proc = await asyncio.create_subprocess_shell(
                f"{command} {shlex.quote(url)}",
                env={**os.environ, **extra},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                out, _ = await proc.communicate()
            except BaseException:
                log.error("post_bootstrap did not finish in time: killing it")
                await asyncio.shield(kill_group(proc))
                raise
        for line in out.decode(errors="replace").splitlines():
            log.info("post_bootstrap: %s", line)
        if proc.returncode != 0:
            raise BootstrapFailed(f"post_bootstrap exited with {proc.returncode}")

