"""Turns the validated configuration into the settings objects of the IO layers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pgha.config import Config, DynamicConfig, DynamicPostgresql, RoleAuth
from pgha.config.pg_parameters import ParamCatalogue
from pgha.pg.params import merge_judged
from pgha.pg.settings import PgSettings, PgUser

log = logging.getLogger("pgha.config")


def _user(auth: RoleAuth) -> PgUser:
    return PgUser(auth.username, auth.password)


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
        log.warning("postgresql.parameters: %s must be the same on every member and can only be "
                    "set in the dynamic configuration (DCS config); the local value is ignored",
                    ", ".join(ignored))
    return params


def pg_settings(config: Config, dynamic: DynamicConfig | DynamicPostgresql,
                catalogue: ParamCatalogue | None = None) -> PgSettings:
    """PgSettings for this member. ``pg_hba`` comes from ``postgresql.pg_hba``, else the
    dynamic ``postgresql.pg_hba``, else ``bootstrap.pg_hba`` (empty: pgha's safe default).
    ``dynamic`` is the whole dynamic configuration or just its ``postgresql`` section;
    parameters are judged against ``catalogue`` (see :func:`effective_parameters`)."""
    pgc = config.postgresql
    dyn_pg = dynamic.postgresql if isinstance(dynamic, DynamicConfig) else dynamic
    params = effective_parameters(config, dyn_pg, catalogue)
    socket_dirs = str(params.pop("unix_socket_directories", "") or "/tmp")
    hba = pgc.pg_hba or dyn_pg.pg_hba or config.bootstrap.pg_hba
    return PgSettings(
        name=config.name,
        scope=config.scope,
        data_dir=Path(pgc.data_dir),
        bin_dir=Path(pgc.bin_dir),
        listen_host=pgc.listen_host,
        port=pgc.listen_port,
        connect_host=pgc.connect_host,
        superuser=_user(pgc.authentication.superuser),
        replication=_user(pgc.authentication.replication),
        rewind=_user(pgc.authentication.rewind),
        parameters=params,
        pg_hba=tuple(hba),
        initdb_options=tuple(config.bootstrap.initdb),
        bootstrap_users={
            name: PgUser(name, spec.password, tuple(spec.options))
            for name, spec in config.bootstrap.users.items()
        },
        pgpass=Path(pgc.pgpass),
        socket_dir=Path(socket_dirs.split(",")[0].strip()),
        pg_ctl_timeout=pgc.pg_ctl_timeout,
        use_slots=dyn_pg.use_slots,
        remove_data_directory_on_rewind_failure=pgc.remove_data_directory_on_rewind_failure,
        remove_data_directory_on_diverged_timelines=(
            pgc.remove_data_directory_on_diverged_timelines),
        use_pg_rewind=pgc.use_pg_rewind,
    )
