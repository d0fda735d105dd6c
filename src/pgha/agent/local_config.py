"""The local YAML in force, and its re-reading on SIGHUP / ``POST /reload``.

:class:`LocalConfig` owns the validated :class:`~pgha.config.Config`, its ``tags`` and the
reload request. A file that fails validation, or one that changes the member name, scope or
namespace (which need a restart), is logged and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pgha.config import Config, ConfigError, load_config
from pgha.core.model import Tags
from pgha.pg.catalogue import load_catalogue

log = logging.getLogger("pgha.agent")


def tags_of(config: Config) -> Tags:
    return Tags.from_json(config.tags.model_dump(exclude_none=True))


class LocalConfig:
    """See the module docstring. ``path`` None: nothing to re-read (tests)."""

    def __init__(self, config: Config, path: Path | None) -> None:
        self.config = config
        self.path = path
        self.tags = tags_of(config)
        self.reload_requested = False

    def request_reload(self) -> None:
        """Re-read the YAML at the start of the next cycle."""
        log.info("reload requested")
        self.reload_requested = True

    async def reload(self) -> Config | None:
        """Re-read the file; the new configuration once it is in force, None when it was
        rejected (or there is no file)."""
        self.reload_requested = False
        if self.path is None:
            return None
        try:
            config = await asyncio.to_thread(load_config, self.path, None, load_catalogue)
        except (ConfigError, OSError) as exc:
            log.error("reload: configuration rejected, keeping the running one: %s", exc)
            return None
        if (config.name, config.scope, config.namespace) != (
                self.config.name, self.config.scope, self.config.namespace):
            log.error("reload: name, scope and namespace need a restart; keeping the running "
                      "configuration")
            return None
        self.config = config
        self.tags = tags_of(config)
        return config
