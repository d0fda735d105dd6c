"""Turns the validated configuration into the settings objects of the IO layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgha.config import Config, DynamicConfig, RoleAuth
from pgha.pg.settings import PgSettings, PgUser


def _user(auth: RoleAuth) -> PgUser:
    return PgUser(auth.username, auth.password)


def effective_parameters(config: Config, dynamic: DynamicConfig) -> dict[str, Any]:
    """PostgreSQL parameters: the dynamic configuration's, overridden by the local YAML's."""
    params: dict[str, Any] = dict(dynamic.postgresql.parameters)
    params.update(config.postgresql.parameters)
    return params


def pg_settings(config: Config, dynamic: DynamicConfig) -> PgSettings:
    """PgSettings for this member. ``pg_hba`` comes from ``postgresql.pg_hba``, else the
    dynamic ``postgresql.pg_hba``, else ``bootstrap.pg_hba`` (empty: pgha's safe default)."""
    pgc = config.postgresql
    params = effective_parameters(config, dynamic)
    socket_dirs = str(params.pop("unix_socket_directories", "") or "/tmp")
    hba = pgc.pg_hba or dynamic.postgresql.pg_hba or config.bootstrap.pg_hba
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
        use_slots=dynamic.postgresql.use_slots,
        remove_data_directory_on_rewind_failure=pgc.remove_data_directory_on_rewind_failure,
    )
