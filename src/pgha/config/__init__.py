"""Patroni-compatible configuration: YAML file(s), environment overrides, validation.

Layers, lowest first: model defaults < YAML (one file, or every ``*.yml``/``*.yaml`` of a directory
deep-merged in sorted name order) < environment (``PGHA_<KEY>`` over ``PATRONI_<KEY>``; empty values
are ignored). ``PGHA_CONFIGURATION``/``PATRONI_CONFIGURATION`` hold the whole YAML instead: then no
file is read and no other environment override applies (as in Patroni).

Validation reports every problem at once as :class:`ConfigError`, each with its dotted key path
(list items as ``[i]``). PostgreSQL parameters are judged against the server binary's catalogue
(:mod:`pgha.config.pg_parameters`; the caller passes it): unknown names are dropped with a
warning, a value PostgreSQL would reject is an error. Every key is looked up in the registry of
Patroni's documented keys (:mod:`pgha.config.keys`, docs/configuration.md): one pgha does not
implement is a warning, one unknown to both an error with a "did you mean" hint. A declared key
given as ``null`` takes its default.

This package is the public API: import from ``pgha.config``, not from its modules, which are
layered without cycles (each imports only those listed before it):

- ``base``: ConfigError, constants, scalar parsers, field types, section base classes;
- ``dynamic``: DynamicConfig and the bootstrap section;
- ``replica``: pg_basebackup options and the sections of custom replica methods;
- ``models``: the local sections and Config;
- ``env``: the ``PGHA_``/``PATRONI_`` environment overrides;
- ``keys_table``/``keys``: the key registry and the checks over raw mappings;
- ``loader``: reading YAML, parse_config, load_config, error key paths and the filtering of
  unknown PostgreSQL parameters (:mod:`pgha.config.pg_parameters`).

Every module logs on the ``pgha.config`` logger.
"""

from __future__ import annotations

import logging

from pgha.config.base import (
    DCS_KINDS,
    DEFAULT_BIN_DIR,
    ETCD_DEFAULT_PORT,
    ConfigError,
    Duration,
    Seconds,
    default_bin_dir,
    join_host_port,
    split_host_port,
)
from pgha.config.dynamic import (
    RECOVERY_TARGETS,
    BootstrapConfig,
    BootstrapMethod,
    DynamicConfig,
    DynamicPostgresql,
    UserSpec,
)
from pgha.config.loader import (
    dynamic_config_warnings,
    load_cluster_access,
    load_config,
    parse_cluster_access,
    parse_config,
    parse_dynamic_config,
    read_yaml,
)
from pgha.config.log import LogConfig
from pgha.config.models import (
    AuthenticationConfig,
    CallbacksConfig,
    ClusterAccess,
    Config,
    EtcdConfig,
    PostgresqlConfig,
    RestApiAuth,
    RestApiConfig,
    RoleAuth,
    TagsConfig,
    WatchdogConfig,
)
from pgha.config.pg_parameters import filter_pg_parameters
from pgha.core.units import parse_duration

logger = logging.getLogger("pgha.config")

__all__ = [
    "DCS_KINDS",
    "DEFAULT_BIN_DIR",
    "ETCD_DEFAULT_PORT",
    "RECOVERY_TARGETS",
    "AuthenticationConfig",
    "BootstrapConfig",
    "BootstrapMethod",
    "CallbacksConfig",
    "ClusterAccess",
    "Config",
    "ConfigError",
    "Duration",
    "DynamicConfig",
    "DynamicPostgresql",
    "EtcdConfig",
    "LogConfig",
    "PostgresqlConfig",
    "RestApiAuth",
    "RestApiConfig",
    "RoleAuth",
    "Seconds",
    "TagsConfig",
    "UserSpec",
    "WatchdogConfig",
    "default_bin_dir",
    "dynamic_config_warnings",
    "filter_pg_parameters",
    "join_host_port",
    "load_cluster_access",
    "load_config",
    "logger",
    "parse_cluster_access",
    "parse_config",
    "parse_duration",
    "parse_dynamic_config",
    "read_yaml",
    "split_host_port",
]
