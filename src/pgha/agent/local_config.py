"""The local YAML in force, and its re-reading on SIGHUP / ``POST /reload``.

:class:`LocalConfig` owns the validated :class:`~pgha.config.Config`, its ``tags`` and the
reload request. A file that fails validation, or one that changes the member name, scope or
namespace (which need a restart), is logged and changes nothing. Applying a re-read file to the
running components is :class:`pgha.agent.reload.Reloader`'s job.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pgha.config import Config, ConfigError, load_config
from pgha.core.model import Tags
from pgha.errors import describe
from pgha.pg.catalogue import load_catalogue

log = logging.getLogger("pgha.agent")


def tags_of(config: Config) -> Tags:
    """The member's tags as configured: the keys the YAML sets are published even when they
    hold a default value (``failover_priority: 1`` next to ``nofailover: true``)."""
    return Tags.from_json(config.tags.model_dump(exclude_unset=True))


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

    async def read(self) -> Config | None:
        """Re-read and validate the file (clearing the request); None, after one error line
        naming the key, when it was rejected (or there is no file). Nothing is applied:
        see :meth:`accept`."""
        self.reload_requested = False
        if self.path is None:
            return None
        try:
            config = await asyncio.to_thread(load_config, self.path, None, load_catalogue)
        except ConfigError as exc:
            problems = "; ".join(f"{key or '<top>'}: {msg}" for key, msg in exc.errors)
            log.error("reload: %s; keeping the running configuration", problems)
            return None
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, ...
            log.error("reload: cannot read %s, keeping the running configuration: %s",
                      self.path, describe(exc))
            return None
        changed = [key for key in ("name", "scope", "namespace")
                   if getattr(config, key) != getattr(self.config, key)]
        if changed:
            log.error("reload: %s cannot change without a restart; keeping the running "
                      "configuration", ", ".join(changed))
            return None
        return config

    def accept(self, config: Config) -> None:
        """Make ``config`` (from :meth:`read`) the configuration in force."""
        self.config = config
        self.tags = tags_of(config)
