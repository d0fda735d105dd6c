"""The agent's PostgreSQL configuration side, as a mixin of :class:`pgha.agent.Agent`: the
dynamic configuration applied each cycle, the local YAML re-read on SIGHUP / ``POST /reload``,
and the user's callbacks fired for what changed in PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pgha.config import Config, ConfigError, load_config
from pgha.core.model import ClusterView, HaSettings, PgState, Tags
from pgha.pg.callbacks import CallbackRunner, lifecycle_callbacks
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.postgres import Postgres
from pgha.status import AgentStatus

log = logging.getLogger("pgha.agent")


class PgConfiguring:
    """Configuration and callbacks. The attributes below are the agent's."""

    config: Config
    config_path: Path | None
    reload_requested: bool
    settings: HaSettings
    tags: Tags
    pg: Postgres
    status: AgentStatus
    view: ClusterView | None
    dynconf: DynamicConfigApplier
    callbacks: CallbackRunner
    _pg_seen: tuple[bool, str | None]
    _last_role: str | None

    async def _reload_config(self) -> None:
        """Apply a re-read YAML: tags and PostgreSQL settings; PostgreSQL is reloaded when it
        runs. A file that fails validation is logged and changes nothing. The member name,
        scope and DCS section cannot change without a restart."""
        self.reload_requested = False
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except (ConfigError, OSError) as exc:
            log.error("reload: configuration rejected, keeping the running one: %s", exc)
            return
        if (config.name, config.scope, config.namespace) != (
                self.config.name, self.config.scope, self.config.namespace):
            log.error("reload: name, scope and namespace need a restart; keeping the running "
                      "configuration")
            return
        self.config = config
        self.tags = Tags.from_json(config.tags.model_dump(exclude_none=True))
        self.callbacks.update(self._callback_commands(config))
        self.dynconf.set_local_config(config)
        result = await self.dynconf.apply(self.view.config if self.view else None)
        if self.pg.is_running() and not result.reloaded and not await self.pg.reload():
            log.error("reload: PostgreSQL reload failed")
            return
        log.info("reload: configuration applied")
        if self.pg.is_running():
            self.callbacks.fire("on_reload", self.status.role)

    @staticmethod
    def _callback_commands(config: Config) -> dict[str, str | None]:
        return dict(config.postgresql.callbacks.model_dump())

    async def _apply_dynamic_config(self, view: ClusterView | None) -> None:
        """Bring PostgreSQL's configuration in line with the DCS ``config`` (reload-only
        parameters at once, restart-only ones reported as pending_restart)."""
        try:
            async with asyncio.timeout(self.settings.retry_timeout + 5):
                result = await self.dynconf.apply(view.config if view is not None else None)
        except TimeoutError:
            log.warning("applying the dynamic configuration timed out; retrying next cycle")
            return
        if result.reloaded:
            log.info("dynamic configuration applied to PostgreSQL (%s)",
                     ", ".join(result.files) or "reloaded")
            self.callbacks.fire("on_reload", self.status.role)

    def _fire_callbacks(self, pg_state: PgState, restarted: bool) -> None:
        """Run the user's callbacks for what changed in PostgreSQL this cycle."""
        role = pg_state.role.value if pg_state.running and pg_state.role else None
        now = (pg_state.running, role)
        for action, cb_role in lifecycle_callbacks(self._pg_seen, now, self._last_role,
                                                   restarted):
            self.callbacks.fire(action, cb_role)
        self._pg_seen = now
        if role is not None:
            self._last_role = role
