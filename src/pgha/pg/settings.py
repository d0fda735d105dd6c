"""Static settings of the local PostgreSQL instance, built by the agent from its configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pgha.config.binaries import binary_path


@dataclass(frozen=True)
class PgUser:
    """A database role. ``options`` are role attributes such as ``"createrole"``, ``"createdb"``.
    ``libpq`` holds the connection options set for the role (``("sslmode", "verify-ca")``,
    ``("sslcert", path)``, ...; see :mod:`pgha.pg.connparams` for who uses them)."""

    username: str
    password: str | None = None
    options: tuple[str, ...] = ()
    libpq: tuple[tuple[str, str], ...] = ()


BASEBACKUP = "basebackup"
"""The built-in replica method (pg_basebackup)."""


@dataclass(frozen=True)
class ReplicaMethod:
    """One entry of ``postgresql.create_replica_methods`` (see :mod:`pgha.pg.replica_methods`).
    The built-in ``basebackup`` has only its name; a custom method has its ``command`` and
    section: ``no_params``, ``keep_data``, ``no_leader`` (also set by ``no_master``) and the
    extra keys ``params``, in the order given."""

    name: str
    command: str = ""
    no_params: bool = False
    keep_data: bool = False
    no_leader: bool = False
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def builtin(self) -> bool:
        return self.name == BASEBACKUP


@dataclass(frozen=True)
class PgSettings:
    """Everything the PostgreSQL layer needs to run one instance.

    ``parameters`` are the user's GUCs (local merged over dynamic by the caller); the managed
    ones (listen/port/socket/cluster_name/replication minimums/recovery) always win, see
    :mod:`pgha.pg.conf`. ``pg_hba`` lines replace the generated default when non-empty.
    Paths of the configuration files: :attr:`config_dir` and :attr:`base_conf`.
    The agent's own superuser connections use the unix socket in ``socket_dir`` when
    ``use_unix_socket`` is set, else TCP (:func:`pgha.pg.connparams.local_host`).
    """

    name: str
    scope: str
    data_dir: Path
    bin_dir: Path
    listen_host: str
    port: int
    connect_host: str
    superuser: PgUser
    replication: PgUser
    rewind: PgUser
    parameters: Mapping[str, Any]
    pg_hba: tuple[str, ...]
    initdb_options: tuple[str | Mapping[str, Any], ...]
    bootstrap_users: Mapping[str, PgUser]
    pgpass: Path
    socket_dir: Path
    pg_ctl_timeout: float = 60
    use_slots: bool = True
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    use_pg_rewind: bool | None = None
    """The local YAML's ``postgresql.use_pg_rewind``; overrides the dynamic one when set."""
    use_unix_socket: bool = True
    connect_port: int | None = None
    """The port of ``connect_address`` (what peers dial: a proxy or NAT may put it in front of
    ``port``); None: ``port``."""
    synchronous_standby_names: str | None = None
    """Set by synchronous replication (:meth:`pgha.pg.postgres.Postgres.set_sync_standby_names`):
    written instead of any configured value; None leaves the user's parameter alone."""
    nostream: bool = False
    """The local ``tags.nostream``: as a replica, never stream (no ``primary_conninfo``, no
    slot); WAL comes from the archive through ``restore_command`` only."""
    recovery_conf: Mapping[str, Any] = field(default_factory=dict)
    """Extra recovery settings (the local ``postgresql.recovery_conf`` merged over the
    dynamic one), written on replicas only; see :func:`pgha.pg.conf.recovery_parameters`."""
    slot_parameters: Mapping[str, Any] = field(default_factory=dict)
    """What the slot plan needs (``hot_standby_feedback``, ``wal_level``,
    ``max_replication_slots``); they win over ``parameters``, see
    :func:`pgha.pg.conf.slot_overrides`."""
    replica_methods: tuple[ReplicaMethod, ...] = (ReplicaMethod(BASEBACKUP),)
    """``postgresql.create_replica_methods`` in order, with their sections."""
    method_sections: Mapping[str, ReplicaMethod] = field(default_factory=dict)
    """Every custom method section of ``postgresql`` by name (a standby cluster's
    ``create_replica_methods`` may name methods the member's own list does not)."""
    basebackup_options: tuple[tuple[str, str | None], ...] = ()
    """``postgresql.basebackup`` as validated ``(option, value)`` pairs (None: a switch)."""
    pg_ident: tuple[str, ...] = ()
    """Lines of pg_ident.conf (empty: pgha writes no mapping; see
    :func:`pgha.pg.conffiles.render_pg_ident`)."""
    custom_conf: str | None = None
    """``postgresql.custom_conf``: the user's base configuration file, included by the
    generated postgresql.conf instead of postgresql.base.conf; never written by pgha."""
    conf_dir: Path | None = None
    """``postgresql.config_dir`` when it is not the data directory (absolute); see
    :attr:`config_dir`."""
    rewind_options: tuple[tuple[str, str | None], ...] = ()
    """``postgresql.rewind``: extra pg_rewind options, validated like ``basebackup_options``."""
    bin_names: Mapping[str, str] = field(default_factory=dict)
    """``postgresql.bin_name``: program -> its file name (or absolute path)."""

    @property
    def replica_without_leader(self) -> bool:
        """A replica method may create this replica while no leader runs (``no_leader``)."""
        return any(m.no_leader and not m.builtin for m in self.replica_methods)

    def binary(self, name: str) -> str:
        """Path of the PostgreSQL program ``name``: its ``bin_names`` entry (else ``name``) in
        ``bin_dir`` (:func:`pgha.config.binaries.binary_path`)."""
        return binary_path(self.bin_dir, self.bin_names, name)

    @property
    def config_dir(self) -> Path:
        """Where postgresql.conf, pg_hba.conf and pg_ident.conf live: ``conf_dir``, else the
        data directory."""
        return self.conf_dir or self.data_dir

    @property
    def config_file_options(self) -> tuple[str, ...]:
        """The ``postgres`` options that make it read postgresql.conf from ``conf_dir``
        (none when the files are in the data directory)."""
        if self.conf_dir is None:
            return ()
        return (f"--config-file={self.conf_dir / 'postgresql.conf'}",)

    @property
    def base_conf(self) -> Path | None:
        """Absolute path of ``custom_conf`` (a relative one is relative to
        :attr:`config_dir`, as PostgreSQL reads an ``include``); None when not set."""
        if self.custom_conf is None:
            return None
        return Path(os.path.abspath(self.config_dir / Path(self.custom_conf).expanduser()))

    @property
    def log_file(self) -> Path:
        """Server log written by ``pg_ctl -l``; outside the data directory so clones stay clean."""
        return self.data_dir.parent / f"{self.name}-postgresql.log"


def format_conn_url(host: str, port: int) -> str:
    """``postgres://host:port/postgres``; an IPv6 literal gets brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"postgres://{host}:{port}/postgres"


def parse_conn_url(conn_url: str) -> tuple[str, int]:
    """``(host, port)`` of a member's ``conn_url``; raises ValueError when it has no host.

    The port defaults to 5432. IPv6 brackets are removed.
    """
    parts = urlsplit(conn_url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError(f"not a postgres:// URL with a host: {conn_url!r}")
    return parts.hostname, parts.port or 5432
