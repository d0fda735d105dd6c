"""Turns the validated configuration into the settings objects of the IO layers."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pgha.config import Config, DynamicConfig, DynamicPostgresql, RoleAuth
from pgha.config.pg_parameters import ParamCatalogue, judge_parameters
from pgha.config.replica import ReplicaMethodConfig
from pgha.pg.conf import RECOVERY_MANAGED
from pgha.pg.connparams import FILE_OPTIONS, LIBPQ_OPTIONS, asyncpg_unsupported
from pgha.pg.params import merge_judged
from pgha.pg.settings import PgSettings, PgUser, ReplicaMethod

log = logging.getLogger("pgha.config")
_warned: set[str] = set()


def pg_user(auth: RoleAuth) -> PgUser:
    """The role with its libpq options. File options given as relative paths are made
    absolute (the agent's working directory), so that the WAL receiver, which runs in the data
    directory, finds the same files; ``sslrootcert=system`` stays as it is."""
    extra = auth.model_dump()
    libpq: list[tuple[str, str]] = []
    for name in LIBPQ_OPTIONS:
        value = extra.get(name)
        if value is None:
            continue
        text = str(value)
        if name in FILE_OPTIONS and text and not (name == "sslrootcert" and text == "system"):
            text = os.path.abspath(os.path.expanduser(text))
        libpq.append((name, text))
    return PgUser(auth.username, auth.password, libpq=tuple(libpq))


def _warn_superuser(user: PgUser, use_unix_socket: bool) -> None:
    """Warn (once per distinct message) about superuser options the agent's own connections
    (asyncpg) cannot honour, and about a TCP connection to its own server that has nothing to
    authenticate with."""
    if not use_unix_socket and user.password is None and "sslcert" not in dict(user.libpq):
        _warn_once(f"postgresql.use_unix_socket is false: the agent connects to its PostgreSQL "
                   f"over TCP as {user.username}, who has neither a password nor a client "
                   f"certificate configured; unless pg_hba.conf admits it without one, set "
                   f"postgresql.use_unix_socket: true")
    unsupported = asyncpg_unsupported(user)
    if not unsupported:
        return
    one = len(unsupported) == 1
    message = (f"postgresql.authentication.superuser: {', '.join(unsupported)} "
               f"{'is' if one else 'are'} not supported by the agent's own connections "
               f"(asyncpg); they connect without {'it' if one else 'them'}")
    if use_unix_socket:
        message += " (only to other members: the local server is reached over the unix socket)"
    _warn_once(message)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _socket_dir(value: str, data_dir: str) -> Path:
    """First entry of ``unix_socket_directories`` (default /tmp). PostgreSQL resolves a
    relative one against its data directory; so does this (made absolute)."""
    first = value.split(",")[0].strip() or "/tmp"
    if os.path.isabs(first):
        return Path(first)
    return Path(os.path.abspath(os.path.join(data_dir, first)))


def _conf_dir(config_dir: str, data_dir: str) -> Path | None:
    """``config_dir`` made absolute; None when it is the data directory."""
    conf = os.path.abspath(os.path.expanduser(config_dir))
    return None if conf == os.path.abspath(data_dir) else Path(conf)


def effective_parameters(config: Config, dynamic: DynamicConfig | DynamicPostgresql,
                         catalogue: ParamCatalogue | None = None) -> dict[str, Any]:
    """PostgreSQL parameters: pgha's defaults < the dynamic configuration's < the local YAML's
    (see :mod:`pgha.pg.params`; a local value of a cluster-wide shared-memory parameter is
    ignored with a warning), judged against ``catalogue`` (renames translated for its major;
    what PostgreSQL would reject left out with a warning). Names are lower-cased."""
    dyn_pg = dynamic.postgresql if isinstance(dynamic, DynamicConfig) else dynamic
    merged = merge_judged(dyn_pg.parameters, config.postgresql.parameters, catalogue)
    for message in merged.warnings:
        log.warning("%s", message)
    for message in merged.notes:
        log.info("%s", message)
    params, ignored = merged.parameters, merged.ignored
    if ignored:
        log.warning("postgresql.parameters: %s can only be set in the dynamic configuration "
                    "(DCS config), as in Patroni; the local value is ignored", ", ".join(ignored))
    return params


def recovery_conf(config: Config, dynamic: DynamicConfig | DynamicPostgresql,
                  catalogue: ParamCatalogue | None = None) -> dict[str, Any]:
    """The local ``postgresql.recovery_conf`` merged over the dynamic one (names lower-cased),
    judged against ``catalogue`` like the parameters: unknown names and values PostgreSQL
    would reject are left out with a warning (once) naming the key. The recovery settings
    pgha manages (:data:`pgha.pg.conf.RECOVERY_MANAGED`) are passed on unjudged:
    :func:`pgha.pg.conf.recovery_parameters` ignores them with a warning."""
    dyn_pg = dynamic.postgresql if isinstance(dynamic, DynamicConfig) else dynamic
    merged: dict[str, Any] = {}
    for layer in (dyn_pg.recovery_conf or {}, config.postgresql.recovery_conf):
        for name, value in layer.items():
            merged[str(name).lower()] = value
    managed = {k: v for k, v in merged.items() if k in RECOVERY_MANAGED}
    judged = judge_parameters({k: v for k, v in merged.items() if k not in managed}, catalogue)
    for name, why in {**judged.dropped, **judged.invalid}.items():
        _warn_once(f"postgresql.recovery_conf.{name}: {why}; ignored")
    return {**judged.kept, **managed}


def _method(name: str, section: ReplicaMethodConfig | None) -> ReplicaMethod:
    if section is None:
        return ReplicaMethod(name)
    return ReplicaMethod(name, section.command, no_params=section.no_params,
                         keep_data=section.keep_data, no_leader=section.without_leader,
                         params=tuple(section.params.items()))


def replica_methods(config: Config) -> tuple[ReplicaMethod, ...]:
    """``postgresql.create_replica_methods`` with their sections (validated by
    :func:`pgha.config.parse_config`)."""
    return tuple(_method(name, section) for name, section in config.postgresql.replica_methods())


def method_sections(config: Config) -> dict[str, ReplicaMethod]:
    """Every custom replica method section of ``postgresql`` (a mapping with a ``command``),
    listed in ``create_replica_methods`` or not: a standby cluster's
    ``create_replica_methods`` may name others. One that is not valid is left out (logged)."""
    out: dict[str, ReplicaMethod] = {}
    for name, section in (config.postgresql.model_extra or {}).items():
        if not isinstance(section, dict) or "command" not in section:
            continue
        try:
            out[name] = _method(name, ReplicaMethodConfig.model_validate(section))
        except ValueError as exc:
            log.warning("postgresql.%s: not a usable replica method: %s", name, exc)
    return out


def pg_settings(config: Config, dynamic: DynamicConfig | DynamicPostgresql,
                catalogue: ParamCatalogue | None = None) -> PgSettings:
    """PgSettings for this member. ``pg_hba`` comes from ``postgresql.pg_hba``, else the
    dynamic ``postgresql.pg_hba``, else ``bootstrap.pg_hba`` (empty: pgha's safe default);
    ``pg_ident`` from ``postgresql.pg_ident``, else the dynamic ``postgresql.pg_ident``.
    ``dynamic`` is the whole dynamic configuration or just its ``postgresql`` section;
    parameters are judged against ``catalogue`` (see :func:`effective_parameters`)."""
    pgc = config.postgresql
    dyn_pg = dynamic.postgresql if isinstance(dynamic, DynamicConfig) else dynamic
    params = effective_parameters(config, dyn_pg, catalogue)
    socket_dirs = str(params.pop("unix_socket_directories", "") or "/tmp")
    hba = pgc.pg_hba or dyn_pg.pg_hba or config.bootstrap.pg_hba
    superuser = pg_user(pgc.authentication.superuser)
    _warn_superuser(superuser, pgc.use_unix_socket)
    return PgSettings(
        name=config.name,
        scope=config.scope,
        data_dir=Path(pgc.data_dir),
        bin_dir=Path(pgc.bin_dir),
        listen_host=pgc.listen_host,
        port=pgc.listen_port,
        connect_host=pgc.connect_host,
        connect_port=pgc.connect_port,
        superuser=superuser,
        replication=pg_user(pgc.authentication.replication),
        rewind=pg_user(pgc.authentication.rewind),
        parameters=params,
        pg_hba=tuple(hba),
        initdb_options=tuple(config.bootstrap.initdb),
        bootstrap_users={
            name: PgUser(name, spec.password, tuple(spec.options))
            for name, spec in config.bootstrap.users.items()
        },
        pgpass=Path(os.path.abspath(pgc.pgpass)),
        socket_dir=_socket_dir(socket_dirs, pgc.data_dir),
        pg_ctl_timeout=pgc.pg_ctl_timeout,
        use_slots=dyn_pg.use_slots,
        remove_data_directory_on_rewind_failure=pgc.remove_data_directory_on_rewind_failure,
        remove_data_directory_on_diverged_timelines=(
            pgc.remove_data_directory_on_diverged_timelines),
        use_pg_rewind=pgc.use_pg_rewind,
        use_unix_socket=pgc.use_unix_socket,
        nostream=config.tags.nostream,
        recovery_conf=recovery_conf(config, dyn_pg, catalogue),
        replica_methods=replica_methods(config),
        method_sections=method_sections(config),
        basebackup_options=tuple(pgc.basebackup_options()),
        pg_ident=tuple(pgc.pg_ident or dyn_pg.pg_ident or ()),
        custom_conf=pgc.custom_conf,
        conf_dir=_conf_dir(pgc.config_dir, pgc.data_dir),
        rewind_options=tuple(pgc.rewind_options()),
        bin_names=pgc.bin_names(),
    )
