"""PostgreSQL's configuration side of one member: the dynamic configuration applied each cycle,
a re-read local YAML applied on SIGHUP / ``POST /reload``, and the user's callbacks fired for
what changed in PostgreSQL.

:class:`PgConfigurator` owns the :class:`~pgha.pg.dynconf.DynamicConfigApplier`, the
:class:`~pgha.pg.callbacks.CallbackRunner` and what it last saw of PostgreSQL (for callbacks).
It is an async context manager (the callback runner's background task lives while entered).
Failure behaviour: nothing here raises into the caller except CancelledError; a configuration
that cannot be applied is logged and retried on the next call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from pgha.config import Config
from pgha.config.pg_parameters import ParamCatalogue
from pgha.core.model import PgState
from pgha.pg.callbacks import CallbackRunner, lifecycle_callbacks
from pgha.pg.dynconf import DynamicConfigApplier, PgConfigState
from pgha.pg.postgres import Postgres

log = logging.getLogger("pgha.agent")


def callback_commands(config: Config) -> dict[str, str | None]:
    """``postgresql.callbacks`` as ``{action: command or None}``."""
    return dict(config.postgresql.callbacks.model_dump())


class PgConfigurator:
    """See the module docstring."""

    def __init__(self, pg: Postgres, config: Config,
                 catalogue: ParamCatalogue | None = None) -> None:
        self.pg = pg
        self.dynconf = DynamicConfigApplier(pg, config, catalogue)
        self.callbacks = CallbackRunner(callback_commands(config), config.scope)
        self._pg_seen: tuple[bool, str | None] = (False, None)  # (running, role)
        self._last_role: str | None = None

    async def __aenter__(self) -> Self:
        await self.callbacks.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.callbacks.__aexit__(exc_type, exc, tb)

    @property
    def state(self) -> PgConfigState:
        """pending_restart and its reasons, as last applied."""
        return self.dynconf.state

    async def apply_local_config(self, config: Config, dcs_config: Mapping[str, Any] | None,
                                 role: str) -> bool:
        """Apply a re-read (already validated) YAML: callbacks and PostgreSQL settings;
        PostgreSQL is reloaded when it runs and ``on_reload`` fired with ``role``. False when
        the reload of PostgreSQL failed."""
        self.callbacks.update(callback_commands(config))
        self.dynconf.set_local_config(config)
        result = await self.dynconf.apply(dcs_config)
        if self.pg.is_running() and not result.reloaded and not await self.pg.reload():
            log.error("reload: PostgreSQL reload failed")
            return False
        if self.pg.is_running():
            self.callbacks.fire("on_reload", role)
        return True

    async def apply_dynamic_config(self, dcs_config: Mapping[str, Any] | None, role: str,
                                   timeout: float,
                                   slot_parameters: Mapping[str, Any] | None = None) -> None:
        """Bring PostgreSQL's configuration in line with the DCS ``config`` and what the slot
        plan needs (``slot_parameters``; None: as last given), reload-only parameters at once,
        restart-only ones reported as pending_restart, within ``timeout`` seconds (else
        logged, retried next time)."""
        try:
            async with asyncio.timeout(timeout):
                result = await self.dynconf.apply(dcs_config, slot_parameters=slot_parameters)
        except TimeoutError:
            log.warning("applying the dynamic configuration timed out; retrying next cycle")
            return
        if result.reloaded:
            log.info("dynamic configuration applied to PostgreSQL (%s)",
                     ", ".join(result.files) or "reloaded")
            self.callbacks.fire("on_reload", role)

    def fire_lifecycle_callbacks(self, pg_state: PgState, restarted: bool,
                                 standby_leader: bool = False) -> None:
        """Run the user's callbacks for what changed in PostgreSQL since the last call. A
        running replica that is the ``standby_leader`` reports that role (Patroni's
        ``on_role_change standby_leader`` when a replica takes the lock of a standby
        cluster)."""
        role = pg_state.role.value if pg_state.running and pg_state.role else None
        if role == "replica" and standby_leader:
            role = "standby_leader"
        now = (pg_state.running, role)
        for action, cb_role in lifecycle_callbacks(self._pg_seen, now, self._last_role,
                                                   restarted):
            self.callbacks.fire(action, cb_role)
        self._pg_seen = now
        if role is not None:
            self._last_role = role
