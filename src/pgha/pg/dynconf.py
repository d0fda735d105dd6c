"""Applies the dynamic configuration (DCS ``config``) to the local PostgreSQL.

The agent calls :meth:`DynamicConfigApplier.apply` once per decision-loop cycle with the DCS
``config`` mapping it just read (``ClusterView.config``; None when absent or unreadable), from
the decision loop only (never concurrently with an executor action, which also writes the
configuration files). The applier then:

1. computes the member's :class:`~pgha.pg.settings.PgSettings` from the ``postgresql`` section
   of that mapping and the local :class:`~pgha.config.Config` (precedence: pgha's defaults <
   dynamic < local YAML, see :mod:`pgha.pg.params`; parameters judged against the server's
   :class:`~pgha.config.pg_parameters.ParamCatalogue`: an unknown name or a value PostgreSQL
   would reject is ignored with a warning naming it while the rest is applied, renamed names
   are translated for the server's major) and installs them as ``Postgres.settings``, so that
   every later start, promote or follow writes them too;
2. while PostgreSQL runs, rewrites postgresql.conf / pg_hba.conf / pg_ident.conf only where their
   content changed
   and then reloads PostgreSQL (``pg_reload_conf()``, or ``pg_ctl reload`` when no connection
   can be made);
3. after such a reload, after a (re)start of the postmaster, and on the first call, reads
   ``pg_settings``/``pg_file_settings`` once to report ``pending_restart`` and
   ``pending_restart_reason`` (``{param: {"old_value", "new_value"}}``, Patroni's shape). When
   that inspection is not possible, a changed parameter whose context is ``postmaster`` (from
   the catalogue) is reported as pending a restart.

Cost when nothing changed: one ``postmaster.pid`` read and one ``standby.signal`` stat per call;
no SQL, no file rewrite, no subprocess. The exception is a replica whose cluster-wide
shared-memory values are held up by the primary's (:func:`pgha.pg.params.clamp_to_primary`):
it checks ``pg_controldata`` each call until the primary's values allow the configured ones (run
again only when ``global/pg_control`` changed: :class:`~pgha.pg.controldata.ControlDataCache`).

What the slot plan needs (``slot_parameters``: ``hot_standby_feedback``, ``wal_level``,
``max_replication_slots``, computed by the core) is passed to :meth:`DynamicConfigApplier.apply`
as well and installed as ``PgSettings.slot_parameters`` (:func:`pgha.pg.conf.slot_overrides`
makes it win over the user's values); a change of it is a configuration change like any other
(rewrite and reload; postmaster parameters then show as pending a restart).

Bad input never breaks the server. A DCS ``postgresql`` section that fails validation is logged
and the previous settings are kept. A value PostgreSQL rejects (``pg_file_settings.error`` for a
parameter that is not waiting for a restart) is pinned to the value the server runs with, the
file is rewritten and reloaded again, and the name and rejected value are reported in
:attr:`PgConfigState.rejected`: the server keeps running and can still be restarted. A pg_hba
list PostgreSQL rejects (``pg_hba_file_rules.error``) is replaced by the previous list in the
same way (:attr:`PgConfigState.hba_rejected`), and so is a pg_ident list it rejects
(``pg_ident_file_mappings.error``, PostgreSQL 15 and later: :attr:`PgConfigState.ident_rejected`).
Pins last until the dynamic or local
configuration changes.

Changing the port or ``unix_socket_directories`` takes effect only while PostgreSQL is stopped:
while it runs, the running server's port and socket directory are kept (with a warning), so the
agent can still reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from pydantic import ValidationError

from pgha.config import Config, DynamicPostgresql
from pgha.config.pg_parameters import ParamCatalogue, judge_parameters
from pgha.pg import controldata
from pgha.pg.conf import (
    STANDBY_SIGNAL,
    effective_parameters,
    read_managed_state,
    write_config_if_changed,
)
from pgha.pg.errors import PgError
from pgha.pg.from_config import pg_settings
from pgha.pg.params import CONTROLDATA_NAMES, clamp_to_primary, restart_needed
from pgha.pg.postgres import Postgres
from pgha.pg.probe import Connection, local_connection
from pgha.pg.process import pg_ctl_reload, postmaster_pid
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")

QUERY_TIMEOUT = 5.0
RELOAD_WAIT = 5.0
_POLL = 0.05
_DB_ERRORS = (PgError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

INSPECT_SQL = """
WITH f AS (
  SELECT DISTINCT ON (lower(name)) lower(name) AS name, setting, error, sourcefile
    FROM pg_file_settings WHERE name IS NOT NULL ORDER BY lower(name), seqno DESC)
SELECT s.name, current_setting(s.name) AS current, s.pending_restart, s.boot_val, s.unit,
       f.setting AS file_value, f.error, f.sourcefile
  FROM pg_settings s LEFT JOIN f ON f.name = lower(s.name)
 WHERE s.pending_restart OR f.error IS NOT NULL
 ORDER BY s.name
"""
HBA_ERRORS_SQL = "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
IDENT_ERRORS_SQL = """
SELECT line_number, error FROM pg_ident_file_mappings WHERE error IS NOT NULL
"""
IDENT_VIEW_SQL = "SELECT to_regclass('pg_catalog.pg_ident_file_mappings') IS NOT NULL"


@dataclass(frozen=True)
class PgConfigState:
    """What the running server thinks of its configuration (all empty while it is stopped).

    ``pending_restart_reason`` maps each parameter whose new value needs a restart to
    ``{"old_value": running value, "new_value": configured value}`` (strings, as PostgreSQL
    spells them). ``rejected`` maps each parameter whose configured value PostgreSQL refused to
    that value (the running value is kept). ``hba_rejected`` holds PostgreSQL's error messages
    for a refused pg_hba list (the previous list is kept); ``ident_rejected`` the same for a
    refused pg_ident list.
    """

    pending_restart: bool = False
    pending_restart_reason: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)
    hba_rejected: tuple[str, ...] = ()
    ident_rejected: tuple[str, ...] = ()

    def status_fields(self) -> dict[str, Any]:
        """Fields for the member key and ``GET /patroni``: ``pending_restart`` and
        ``pending_restart_reason`` when a restart is pending, else nothing (Patroni's habit)."""
        if not self.pending_restart:
            return {}
        return {"pending_restart": True,
                "pending_restart_reason": {k: dict(v)
                                           for k, v in self.pending_restart_reason.items()}}


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of one :meth:`DynamicConfigApplier.apply`. ``files`` names the files rewritten;
    ``reloaded`` is True when PostgreSQL was signalled to reload (the agent fires
    ``on_reload`` then); ``state`` is the current :class:`PgConfigState`."""

    files: tuple[str, ...] = ()
    reloaded: bool = False
    state: PgConfigState = field(default_factory=PgConfigState)


def _with_unit(value: str | None, unit: str | None) -> str | None:
    """``boot_val`` with its unit: ``("16384", "8kB")`` -> ``"131072kB"``."""
    if value is None or not unit:
        return value
    digits = "".join(c for c in unit if c.isdigit())
    if digits and value.lstrip("-").isdigit():
        return f"{int(value) * int(digits)}{unit[len(digits):]}"
    return f"{value}{unit}"


def parse_inspection(rows: list[Mapping[str, Any]]) -> tuple[dict[str, dict[str, str]],
                                                               dict[str, tuple[str, str]]]:
    """``(pending, rejected)`` from rows of :data:`INSPECT_SQL`.

    ``pending``: ``{name: {"old_value", "new_value"}}`` for rows with ``pending_restart``; the new
    value is the effective file value, or the built-in default when the parameter was removed.
    ``rejected``: ``{name: (file value, running value)}`` for rows whose file value PostgreSQL
    refused without waiting for a restart.
    """
    pending: dict[str, dict[str, str]] = {}
    rejected: dict[str, tuple[str, str]] = {}
    for row in rows:
        name, current = str(row["name"]), str(row["current"])
        if row["pending_restart"]:
            new = row["file_value"]
            if new is None:
                new = _with_unit(row["boot_val"], row["unit"])
            pending[name] = {"old_value": current, "new_value": str(new)}
        elif row["error"] is not None and row["file_value"] is not None:
            rejected[name] = (str(row["file_value"]), current)
    return pending, rejected


class DynamicConfigApplier:
    """Keeps ``pg.settings``, the configuration files and the running server in line with the
    dynamic and local configuration. One instance per agent; not safe for concurrent calls."""

    def __init__(self, pg: Postgres, config: Config,
                 catalogue: ParamCatalogue | None = None) -> None:
        self.pg = pg
        self._config = config
        self._catalogue = catalogue
        self._generation = 0
        self._key: tuple[Any, ...] | None = None
        self._raw: dict[str, Any] | None = None  # last valid dynamic postgresql section
        self._dyn: DynamicPostgresql | None = None  # ... validated
        self._warned: str | None = None
        self._clamped = False
        self._inspect_due = True
        self._pins: dict[str, str] = {}  # parameter -> running value kept instead of a bad one
        self._hba_pin: tuple[str, ...] | None = None
        self._ident_pin: tuple[str, ...] | None = None
        self._recorded: dict[str, str] | None = None
        self._state = PgConfigState()
        self._slot_parameters: dict[str, Any] = {}
        self._control = controldata.ControlDataCache()

    @property
    def state(self) -> PgConfigState:
        """The last known :class:`PgConfigState` (no IO)."""
        return self._state

    def set_local_config(self, config: Config) -> None:
        """Use a re-read local YAML (SIGHUP); the next :meth:`apply` recomputes everything and
        drops the pins of rejected values."""
        self._config = config
        self._generation += 1

    # ----------------------------------------------------------------- inputs
    def _section(self, dcs_config: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
        """The raw dynamic ``postgresql`` section to use, and its digest. None (no DCS config):
        the last one applied, else the local ``bootstrap.dcs`` (what the cluster is seeded
        with)."""
        if dcs_config is None:
            raw = self._raw if self._raw is not None else \
                self._config.bootstrap.dcs.postgresql.model_dump(mode="json", exclude_none=True)
        else:
            section = dcs_config.get("postgresql", {})
            raw = dict(section) if isinstance(section, Mapping) else {"<invalid>": section}
        text = json.dumps(raw, sort_keys=True, default=str)
        return raw, hashlib.sha256(text.encode()).hexdigest()

    def _parse(self, raw: Mapping[str, Any], digest: str) -> DynamicPostgresql | None:
        """Validated section (unknown parameter names and values PostgreSQL would reject left
        out, names as given); None when invalid. Logs once per distinct input."""
        first = digest != self._warned
        self._warned = digest
        data = dict(raw)
        params = data.get("parameters")
        if isinstance(params, Mapping):
            judged = judge_parameters(params, self._catalogue)
            bad = {**judged.dropped, **judged.invalid}
            data["parameters"] = {k: v for k, v in params.items() if str(k) not in bad}
            if judged.dropped and first:
                log.warning("DCS config postgresql.parameters: ignoring unknown PostgreSQL "
                            "parameters: %s", ", ".join(
                                f"{name} ({why})" for name, why in judged.dropped.items()))
            if judged.invalid and first:
                log.warning("DCS config postgresql.parameters: ignoring invalid values: %s",
                            "; ".join(f"{name} = {params[name]!r} ({why})"
                                      for name, why in judged.invalid.items()))
        try:
            return DynamicPostgresql.model_validate(data)
        except ValidationError as exc:
            if first:
                log.error("DCS config postgresql section is invalid, keeping the current "
                          "PostgreSQL settings: %s", exc)
            return None

    async def _controldata(self, replica: bool) -> dict[str, str] | None:
        """The cluster-wide values the primary recorded (replica only; None on a primary)."""
        if not replica:
            return None
        data = await self._control.read(self.pg.settings)
        return {line: data.get(line, "") for line in CONTROLDATA_NAMES.values()}

    def _settings(self, dyn: DynamicPostgresql, recorded: Mapping[str, str] | None,
                  running: bool) -> PgSettings:
        new = pg_settings(self._config, dyn, self._catalogue)
        params = dict(new.parameters)
        self._clamped = False
        if recorded is not None:
            params, raised = clamp_to_primary(params, recorded)
            if raised:
                self._clamped = True
                log.info("keeping %s at the primary's values until it runs with lower ones",
                         ", ".join(f"{k}={v}" for k, v in sorted(raised.items())))
        params.update(self._pins)
        new = replace(new, parameters=params, slot_parameters=dict(self._slot_parameters))
        if self._hba_pin is not None:
            new = replace(new, pg_hba=self._hba_pin)
        if self._ident_pin is not None:
            new = replace(new, pg_ident=self._ident_pin)
        old = self.pg.settings
        if running and (new.port, new.socket_dir) != (old.port, old.socket_dir):
            log.warning("the PostgreSQL port / socket directory change takes effect after "
                        "PostgreSQL is stopped; keeping %s in %s", old.port, old.socket_dir)
            new = replace(new, port=old.port, socket_dir=old.socket_dir)
        return new

    # ----------------------------------------------------------------- the cycle
    async def apply(self, dcs_config: Mapping[str, Any] | None,
                    slot_parameters: Mapping[str, Any] | None = None) -> ApplyResult:
        """Bring settings, files and server in line with ``dcs_config`` and
        ``slot_parameters`` (None: the ones last given, initially none; see the module doc).

        Never raises for PostgreSQL or file errors (they are logged and retried on the next
        call); cancellation propagates.
        """
        raw, digest = self._section(dcs_config)
        if slot_parameters is not None:
            self._slot_parameters = dict(slot_parameters)
        slots_key = json.dumps(self._slot_parameters, sort_keys=True, default=str)
        data_dir = self.pg.settings.data_dir
        pid = postmaster_pid(data_dir)
        replica = (data_dir / STANDBY_SIGNAL).exists()
        key = (digest, self._generation, replica, pid, slots_key)
        previous, self._key = self._key, key
        if previous is None or previous[3] != pid:
            self._inspect_due = True  # first call, or the postmaster stopped/(re)started
        recorded: dict[str, str] | None = None
        if key == previous and not self._inspect_due:
            if not self._clamped:
                return ApplyResult(state=self._state)
            recorded = await self._controldata(replica)
            if recorded == self._recorded:
                return ApplyResult(state=self._state)
        elif replica:
            recorded = await self._controldata(replica)
        self._recorded = recorded
        if previous is None or key[:2] != previous[:2]:
            self._pins, self._hba_pin, self._ident_pin = {}, None, None
            self._state = replace(self._state, rejected={}, hba_rejected=(), ident_rejected=())
        dyn = self._parse(raw, digest)
        if dyn is None:
            if self._dyn is None:
                return ApplyResult(state=self._state)
            dyn = self._dyn
        else:
            self._raw, self._dyn = raw, dyn
        old = self.pg.settings
        old_lists, old_params = (old.pg_hba, old.pg_ident), effective_parameters(old)
        try:
            settings = self._settings(dyn, recorded, pid is not None)
        except ValueError as exc:
            log.error("computing PostgreSQL settings failed: %s", exc)
            return ApplyResult(state=self._state)
        self.pg.settings = settings
        if pid is None:
            self._state = PgConfigState()
            return ApplyResult(state=self._state)
        return await self._apply_running(settings, old_lists, old_params)

    async def _write(self, settings: PgSettings) -> list[str] | None:
        managed = await asyncio.to_thread(read_managed_state, settings.config_dir)
        if managed is None:
            return []  # not set up by pgha (yet): the next start writes everything
        try:
            return await asyncio.to_thread(write_config_if_changed, settings, *managed)
        except (OSError, ValueError) as exc:
            log.error("rewriting the PostgreSQL configuration failed: %s", exc)
            return None

    async def _apply_running(self, settings: PgSettings, old_lists: tuple[tuple[str, ...], ...],
                             old_params: Mapping[str, Any]) -> ApplyResult:
        files = await self._write(settings)
        if files is None:
            self._inspect_due = True
            return ApplyResult(state=self._state)
        restart: dict[str, dict[str, str]] = {}
        if files:
            log.info("configuration changed (%s): reloading PostgreSQL", ", ".join(files))
            restart = restart_needed(old_params, effective_parameters(settings),
                                     self._catalogue)
            if restart:
                log.info("%s take effect after a restart", ", ".join(restart))
        if not files and not self._inspect_due:
            return ApplyResult(state=self._state)
        signalled = fresh = False
        try:
            async with local_connection(settings) as conn:
                if files:
                    signalled = True
                    fresh = await self._reload(conn)
                await self._inspect(conn, settings, *old_lists)
        except _DB_ERRORS as exc:
            log.warning("could not inspect the PostgreSQL configuration: %s", exc)
            self._inspect_due = True
            if restart:
                reasons = {**self._state.pending_restart_reason, **restart}
                self._state = replace(self._state, pending_restart=True,
                                      pending_restart_reason=reasons)
            if files and not signalled:
                result = await pg_ctl_reload(settings)
                if not result.ok:
                    log.error("reload failed: %s", result.describe())
        else:
            # a reload not seen yet by our session: look again on the next call
            self._inspect_due = bool(files) and not fresh
        return ApplyResult(tuple(files), bool(files), self._state)

    async def _reload(self, conn: Connection) -> bool:
        """``pg_reload_conf()`` and wait (at most :data:`RELOAD_WAIT`) until this session has
        re-read the files, so that ``pg_settings`` shows the outcome; False when it has not."""
        before = await conn.fetchval("SELECT pg_conf_load_time()", timeout=QUERY_TIMEOUT)
        await conn.fetchval("SELECT pg_reload_conf()", timeout=QUERY_TIMEOUT)
        deadline = time.monotonic() + RELOAD_WAIT
        while await conn.fetchval("SELECT pg_conf_load_time()", timeout=QUERY_TIMEOUT) <= before:
            if time.monotonic() > deadline:
                log.warning("PostgreSQL has not re-read its configuration after %gs",
                            RELOAD_WAIT)
                return False
            await asyncio.sleep(_POLL)
        return True

    async def _ident_errors(self, conn: Connection, settings: PgSettings,
                            old_ident: tuple[str, ...]) -> list[str]:
        """PostgreSQL's errors for pg_ident.conf when pgha just changed its lines (none
        before PostgreSQL 15, which has no ``pg_ident_file_mappings``)."""
        if old_ident == settings.pg_ident or "ident_file" in settings.parameters \
                or not await conn.fetchval(IDENT_VIEW_SQL, timeout=QUERY_TIMEOUT):
            return []
        return [f"line {r['line_number']}: {r['error']}"
                for r in await conn.fetch(IDENT_ERRORS_SQL, timeout=QUERY_TIMEOUT)]

    async def _inspect(self, conn: Connection, settings: PgSettings,
                       old_hba: tuple[str, ...], old_ident: tuple[str, ...]) -> None:
        """Read the outcome; pin rejected values / restore a rejected pg_hba or pg_ident list
        (``old_hba``/``old_ident``, when it differs), rewrite and reload once more when needed;
        then set :attr:`state`."""
        rows = await conn.fetch(INSPECT_SQL, timeout=QUERY_TIMEOUT)
        pending, rejected = parse_inspection(rows)
        hba_errors = [f"line {r['line_number']}: {r['error']}"
                      for r in await conn.fetch(HBA_ERRORS_SQL, timeout=QUERY_TIMEOUT)]
        restore_hba = bool(hba_errors) and old_hba != settings.pg_hba \
            and "hba_file" not in settings.parameters
        ident_errors = await self._ident_errors(conn, settings, old_ident)
        new_pins = {k: cur for k, (_bad, cur) in rejected.items() if k not in self._pins}
        if new_pins or restore_hba or ident_errors:
            if new_pins:
                log.error("PostgreSQL rejected %s; keeping the running values %s",
                          ", ".join(f"{k} = {v[0]!r}" for k, v in rejected.items()),
                          ", ".join(f"{k} = {v!r}" for k, v in new_pins.items()))
                self._pins.update(new_pins)
                settings = replace(settings, parameters={**settings.parameters, **new_pins})
            if restore_hba:
                log.error("PostgreSQL rejected the pg_hba list (%s); keeping the previous one",
                          "; ".join(hba_errors))
                self._hba_pin = old_hba
                settings = replace(settings, pg_hba=old_hba)
            if ident_errors:
                log.error("PostgreSQL rejected the pg_ident list (%s); keeping the previous one",
                          "; ".join(ident_errors))
                self._ident_pin = old_ident
                settings = replace(settings, pg_ident=old_ident)
            self.pg.settings = settings
            if await self._write(settings):
                await self._reload(conn)
                pending, _ = parse_inspection(await conn.fetch(INSPECT_SQL,
                                                               timeout=QUERY_TIMEOUT))
        bad = {k: v[0] for k, v in rejected.items()}
        self._state = PgConfigState(
            pending_restart=bool(pending), pending_restart_reason=pending,
            rejected={**self._state.rejected, **bad},
            hba_rejected=tuple(hba_errors) or self._state.hba_rejected,
            ident_rejected=tuple(ident_errors) or self._state.ident_rejected)
        if pending:
            log.info("restart pending for %s", ", ".join(
                f"{k} ({v['old_value']} -> {v['new_value']})" for k, v in pending.items()))
