"""Applying a re-read local YAML (SIGHUP, ``POST /reload``) to the running agent.

:meth:`Reloader.reload` runs at the start of a decision cycle:

1. :meth:`LocalConfig.read` re-reads and validates the file (a bad file: one error line naming
   the key, nothing changed);
2. everything that can still fail is checked before anything is applied: the peer client's
   TLS files (:meth:`PeerClient.prepare`), then the REST API's (:meth:`ApiServer.reconfigure`:
   access control, TLS files, listen address; it changes everything or nothing). A failure
   is one error line naming the key, and the running configuration stays;
3. then the new configuration is put in force, except the keys that need a restart, which keep
   their running values (:func:`keep_running_values`): the peer HTTP session is renewed when its TLS
   settings or credentials changed, the member key's ``api_url`` follows
   ``restapi.connect_address``, the ``log`` section is applied (destinations opened in
   step 2 by :meth:`AgentLogging.prepare`, a ``log.dir`` that cannot be written refuses the
   reload), tags are published from the next cycle, PostgreSQL's settings and callbacks
   are re-applied (PostgreSQL is reloaded), and the ``pre_promote``/``before_stop`` hooks
   run their new commands from their next run;
4. one line says what changed and was applied, one what changed but needs a restart of the
   agent to take effect (:func:`classify`), one what is only read at bootstrap.

Decisions: ``restapi.listen`` is re-bound in place, as Patroni does: the new address is bound
before the old one is closed (or, for the same port, the old one is re-opened if the new one
fails), so a bad address never leaves the agent without its API. The DCS sections, PostgreSQL's
location and binaries and the watchdog are only read at start: changing them is reported as
needing a restart. Without installed logging (:func:`pgha.agent.logsetup.active` is None: an
agent inside tests) only ``log.level`` is applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from pgha.agent import logsetup
from pgha.agent.local_config import LocalConfig
from pgha.agent.peers import PeerClient
from pgha.agent.publish import Publisher
from pgha.api.server import ApiReload
from pgha.api.tls_files import SettingError
from pgha.config import Config
from pgha.config.models import RestApiConfig
from pgha.pg.configurator import PgConfigurator

log = logging.getLogger("pgha.agent")

Effect = Literal["applied", "restart", "bootstrap"]

#: Keys (and everything under them) that a reload applies to the running agent.
LIVE_KEYS: tuple[str, ...] = (
    "restapi", "ctl", "tags", "log",
    "postgresql.parameters", "postgresql.pg_hba", "postgresql.pg_ident", "postgresql.custom_conf",
    "postgresql.callbacks", "postgresql.authentication", "postgresql.pgpass",
    "postgresql.remove_data_directory_on_rewind_failure",
    "postgresql.pre_promote", "postgresql.before_stop",
)
#: Keys only read when the cluster is bootstrapped (Patroni ignores their changes too).
BOOTSTRAP_KEYS: tuple[str, ...] = ("bootstrap",)

_MISSING = object()


class RestApi(Protocol):
    """What the reload needs of :class:`pgha.api.server.ApiServer`."""

    async def reconfigure(self, restapi: RestApiConfig) -> ApiReload: ...


def changed_keys(old: Config, new: Config, depth: int = 2) -> list[str]:
    """Dotted paths (at most ``depth`` levels: ``restapi.authentication``, never the values)
    whose value differs between ``old`` and ``new``, sorted."""
    return sorted(_diff(old.model_dump(mode="json"), new.model_dump(mode="json"), "", depth))


def _diff(a: Any, b: Any, prefix: str, depth: int) -> list[str]:
    if a == b:
        return []
    if depth == 0 or not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return [prefix]
    out: list[str] = []
    for key in sorted({*a, *b}, key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        out += _diff(a.get(key, _MISSING), b.get(key, _MISSING), path, depth - 1)
    return out


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def classify(key: str) -> Effect:
    """What a change of ``key`` does on reload: applied, needs a restart, or bootstrap-only."""
    if _under(key, BOOTSTRAP_KEYS):
        return "bootstrap"
    return "applied" if _under(key, LIVE_KEYS) else "restart"


def keep_running_values(old: Config, new: Config, keys: list[str]) -> Config:
    """``new`` with the values at ``keys`` (dotted paths of :func:`changed_keys`) taken from
    ``old``: what needs a restart keeps its running value until the agent restarts, so that
    nothing reads half of a change (a new ``data_dir`` next to the running postmaster)."""
    top: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for key in keys:
        head, _, rest = key.partition(".")
        if head not in Config.model_fields:
            continue  # an unknown top-level key: nothing reads it
        section = getattr(new, head)
        if rest and isinstance(section, BaseModel) and rest in type(section).model_fields \
                and getattr(old, head) is not None:
            fields.setdefault(head, {})[rest] = getattr(getattr(old, head), rest)
        elif rest and isinstance(section, BaseModel):
            continue  # an unknown key inside a section: nothing reads it
        else:
            top[head] = getattr(old, head)
    for head, update in fields.items():
        if head not in top:
            top[head] = getattr(new, head).model_copy(update=update)
    return new.model_copy(update=top)


class Reloader:
    """See the module docstring."""

    def __init__(self, local_config: LocalConfig, configurator: PgConfigurator,
                 publisher: Publisher, peers: PeerClient, api: RestApi) -> None:
        self.local_config = local_config
        self.configurator = configurator
        self.publisher = publisher
        self.peers = peers
        self.api = api

    async def reload(self, dcs_config: Mapping[str, Any] | None, role: str) -> bool:
        """Re-read the YAML and apply it (see the module docstring); False when it was
        rejected and the running configuration stays, or PostgreSQL's reload failed."""
        new = await self.local_config.read()
        if new is None:
            return False
        old = self.local_config.config
        logs = logsetup.active()
        prepared_logs: logsetup.Prepared | None = None
        try:
            if logs is not None and new.log != old.log:
                prepared_logs = await asyncio.to_thread(logs.prepare, new.log)
            peer_tls = self.peers.prepare(new)
            api = await self.api.reconfigure(new.restapi)
        except (SettingError, logsetup.LogSettingError) as exc:
            if prepared_logs is not None:
                prepared_logs.discard()
            log.error("reload: %s: %s; keeping the running configuration", exc.key,
                      exc.message)
            return False
        keys = changed_keys(old, new)
        new = keep_running_values(old, new, [k for k in keys if classify(k) == "restart"])
        self.local_config.accept(new)
        peers_renewed = await self.peers.commit(new, peer_tls)
        self.publisher.set_api_url(new.restapi.api_url)
        if logs is not None and prepared_logs is not None:
            logs.apply(prepared_logs)
        elif logs is None and new.log.level != old.log.level:
            logging.getLogger().setLevel(new.log.level)
        self._log_changes(keys, api, peers_renewed)
        if not await self.configurator.apply_local_config(new, dcs_config, role):
            return False
        log.info("reload: configuration applied")
        return True

    @staticmethod
    def _log_changes(keys: list[str], api: ApiReload, peers_renewed: bool) -> None:
        effects: dict[Effect, list[str]] = {"applied": [], "restart": [], "bootstrap": []}
        for key in keys:
            effects[classify(key)].append(key)
        applied = effects["applied"]
        if api.tls and not any(k.startswith("restapi.") for k in applied):
            applied.append("restapi TLS files (rotated on disk)")
        if peers_renewed and not any(k.startswith(("restapi.", "ctl")) for k in applied):
            applied.append("peer TLS files (rotated on disk)")
        notes = [what for what, done in (("server TLS for new connections", api.tls),
                                         ("REST API re-bound", api.rebound),
                                         ("REST API listen backlog changed", api.backlog),
                                         ("peer HTTP session renewed", peers_renewed)) if done]
        if applied:
            log.info("reload: applied: %s%s", ", ".join(applied),
                     f" ({'; '.join(notes)})" if notes else "")
        if effects["restart"]:
            log.warning("reload: changed but needs a restart of the agent to take effect: %s",
                        ", ".join(effects["restart"]))
        if effects["bootstrap"]:
            log.info("reload: only used when a new cluster is bootstrapped: %s",
                     ", ".join(effects["bootstrap"]))
        if not any(effects.values()):
            log.info("reload: no change in the configuration")
