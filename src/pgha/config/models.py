"""Local (per-node) configuration models and the top-level :class:`Config`.

Contract: one pydantic model per section of the local YAML (``restapi``, ``etcd``,
``postgresql`` with its ``authentication``/``callbacks``, ``watchdog``, ``tags``, ``log``) and
:class:`Config`, which combines them with :class:`~pgha.config.dynamic.BootstrapConfig`. Pure
models: no I/O and no environment; :func:`pgha.config.parse_config` is the way to build a
:class:`Config` (it picks the DCS section and drops unknown PostgreSQL parameters first).
Warnings are logged on the ``pgha.config`` logger.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pgha.config.base import (
    _ROLE_DEFAULTS,
    _ROLE_KEYS,
    DCS_KINDS,
    ETCD_DEFAULT_PORT,
    ConfigError,
    Seconds,
    _Closed,
    _Csv,
    _Endpoint,
    _Lower,
    _OneLine,
    _Section,
    check_command,
    default_bin_dir,
    split_host_port,
)
from pgha.config.binaries import BINARIES, binary_path, check_bin_name
from pgha.config.dynamic import BootstrapConfig
from pgha.config.log import LogConfig
from pgha.config.replica import Option, ReplicaMethodConfig
from pgha.config.replica import basebackup_options as _basebackup_options
from pgha.config.replica import rewind_options as _rewind_options

logger = logging.getLogger("pgha.config")


def check_ciphers(ciphers: str) -> None:
    """ValueError (one line) unless ``ciphers`` selects at least one TLS 1.2-or-older cipher
    in this Python's OpenSSL (:meth:`ssl.SSLContext.set_ciphers`)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError(f"{ciphers!r} selects no cipher this OpenSSL "
                         f"({ssl.OPENSSL_VERSION}) knows") from None


class RestApiAuth(_Closed):
    username: str
    password: str


#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class RestApiConfig(_Endpoint):
    """``restapi`` section; ``allowlist`` also accepts a comma-separated string.

    ``ciphers`` must select at least one cipher (OpenSSL's cipher-list syntax); the extra
    headers must be valid header names and single-line values; ``server_tokens`` is
    ``original``, ``minimal`` or ``productonly`` in any case (see :mod:`pgha.api.headers`)."""

    listen: str = "127.0.0.1:8008"
    authentication: RestApiAuth | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    cafile: str | None = None
    ciphers: str | None = None
    verify_client: Annotated[Literal["none", "optional", "required"] | None, _Lower] = None
    allowlist: Annotated[list[str], _Csv] = Field(default_factory=list)
    allowlist_include_members: bool = False
    http_extra_headers: dict[str, str] = Field(default_factory=dict)
    https_extra_headers: dict[str, str] = Field(default_factory=dict)
    #: listen backlog; Patroni's default is 5, pgha keeps aiohttp's 128 (see keys_table)
    request_queue_size: Annotated[int, Field(ge=0, le=65535)] = 128
    server_tokens: Annotated[Literal["original", "minimal", "productonly"], _Lower] = "original"

    @field_validator("ciphers")
    @classmethod
    def _check_ciphers(cls, value: str | None) -> str | None:
        if value is not None:
            check_ciphers(value)
        return value

    @field_validator("http_extra_headers", "https_extra_headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if any(c in text for c in "\r\n\x00"):
                raise ValueError(f"the value of {name} must be one line")
        return value

    @property
    def api_url(self) -> str:
        """URL for the member key: ``http(s)://<connect host:port>/patroni``."""
        return f"{'https' if self.certfile else 'http'}://{self.connect_host_port}/patroni"


def _etcd_endpoint(item: str) -> tuple[str, int]:
    if "://" not in item:
        return split_host_port(item, ETCD_DEFAULT_PORT)
    parts = urlsplit(item)
    if not parts.hostname:
        raise ValueError("expected a URL")
    return parts.hostname, parts.port or ETCD_DEFAULT_PORT


class EtcdConfig(_Section):
    """``etcd``/``etcd3`` section; ``hosts`` is a list or a comma-separated string."""

    host: str | None = None
    hosts: Annotated[list[str] | None, _Csv] = None
    url: str | None = None
    protocol: Annotated[Literal["http", "https"], _Lower] = "http"
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @field_validator("host", "hosts", "url")
    @classmethod
    def _check_hosts(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            try:
                _etcd_endpoint(item)
            except ValueError:
                raise ValueError(f"{item!r}: expected host:port or a URL") from None
        return value

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) from ``hosts``, else ``host``, else ``url``; port defaults to 2379;
        ``[("127.0.0.1", 2379)]`` when none is set."""
        items = self.hosts or ([self.host] if self.host else [self.url] if self.url else [])
        return [_etcd_endpoint(i) for i in items] or [("127.0.0.1", ETCD_DEFAULT_PORT)]


class RoleAuth(_Section):
    """One role of ``postgresql.authentication``: username, password and libpq TLS/GSS options
    (sslmode, sslkey, sslcert, sslrootcert, ... kept as extras); other keys are errors."""

    username: str = Field(min_length=1)
    password: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca",
                     "verify-full"] | None = None
    sslnegotiation: Literal["postgres", "direct"] | None = None
    gssencmode: Literal["disable", "prefer", "require"] | None = None
    channel_binding: Literal["disable", "prefer", "require"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        unknown = [k for k in data if k not in _ROLE_KEYS] if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(map(str, unknown))}")
        # the values end up in connection strings, pgpass and service files: one line each
        broken = [k for k, v in data.items() if isinstance(v, str) and
                  any(c in v for c in "\n\r\0")] if isinstance(data, dict) else []
        if broken:
            raise ValueError(f"{', '.join(broken)}: must not contain a line break or NUL")
        return data

    def libpq_params(self) -> dict[str, str]:
        """libpq connection keywords that are set (``user``, ``password``, ``sslmode``, ...)."""
        data = {k: str(v) for k, v in self.model_dump().items() if v is not None}
        data["user"] = data.pop("username")
        return data


class AuthenticationConfig(_Closed):
    """Usernames default to postgres / replicator / rewind_user; passwords may be absent."""

    superuser: RoleAuth = Field(default_factory=lambda: RoleAuth(username="postgres"))
    replication: RoleAuth = Field(default_factory=lambda: RoleAuth(username="replicator"))
    rewind: RoleAuth = Field(default_factory=lambda: RoleAuth(username="rewind_user"))

    @model_validator(mode="before")
    @classmethod
    def _default_usernames(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for role, user in _ROLE_DEFAULTS.items():
                entry = data.get(role)
                if entry is None or (isinstance(entry, dict) and entry.get("username") is None):
                    data[role] = {**(entry or {}), "username": user}
        return data


class CallbacksConfig(_Closed):
    on_start: str | None = None
    on_stop: str | None = None
    on_restart: str | None = None
    on_reload: str | None = None
    on_role_change: str | None = None


class BinNameConfig(_Section):
    """``postgresql.bin_name``: the file name of each PostgreSQL program pgha runs (see
    :mod:`pgha.config.binaries`); None: the program's own name."""

    pg_ctl: str | None = None
    initdb: str | None = None
    pg_controldata: str | None = None
    pg_basebackup: str | None = None
    postgres: str | None = None
    pg_isready: str | None = None
    pg_rewind: str | None = None

    @field_validator(*BINARIES, mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return value if value is None else check_bin_name(value)


class PostgresqlConfig(_Endpoint):
    """``postgresql`` section; ``listen`` may name several hosts (``h1,h2:5432``).

    After validation ``config_dir`` is never empty (default: ``data_dir``) and, inside a
    :class:`Config`, neither is ``pgpass`` (default ``~/.pgpass_pgha_<name>``, see
    :func:`pgha.config.loader.parse_config`; else beside the data directory).
    """

    _multi_host: ClassVar[bool] = True
    listen: str = "127.0.0.1:5432"
    data_dir: str = Field(min_length=1)
    bin_dir: str = Field(default_factory=default_bin_dir)
    bin_name: BinNameConfig = Field(default_factory=BinNameConfig)
    config_dir: str = ""
    pgpass: str = ""
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] = Field(default_factory=list)
    pg_ident: list[Annotated[str, _OneLine]] = Field(default_factory=list)
    custom_conf: str | None = None
    """A base configuration file the generated postgresql.conf includes (relative: to
    ``config_dir``); never written by pgha."""
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    create_replica_methods: list[str] = Field(default_factory=lambda: ["basebackup"])
    basebackup: list[Any] | dict[str, Any] | None = None
    use_pg_rewind: bool | None = None
    """Local override of the dynamic ``postgresql.use_pg_rewind`` (None: use the dynamic one)."""
    rewind: list[Any] | dict[str, Any] | None = None
    """Extra pg_rewind options (:func:`pgha.config.replica.rewind_options`)."""
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    use_unix_socket: bool = False
    # Patroni: replication-protocol connections to the local server over the socket. pgha makes
    # none (it reads timelines over SQL), so the switch is accepted and changes nothing.
    use_unix_socket_repl: bool = False
    pg_ctl_timeout: Seconds = Field(default=60, gt=0)
    recovery_conf: dict[str, Any] = Field(default_factory=dict)
    # the synchronous hooks (pgha.pg.hooks); blank: none
    pre_promote: str | None = Field(default=None, strict=True)
    before_stop: str | None = Field(default=None, strict=True)

    @field_validator("pre_promote", "before_stop")
    @classmethod
    def _hook_command(cls, value: str | None) -> str | None:
        return check_command(value) if value is not None and value.strip() else None

    @field_validator("basebackup", mode="before")
    @classmethod
    def _check_basebackup(cls, value: Any) -> Any:
        _basebackup_options(value)  # raises ValueError naming the option
        return value

    @field_validator("custom_conf")
    @classmethod
    def _check_custom_conf(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "\n\r\0")):
            raise ValueError("expected the path of a file (one line, not empty)")
        return value

    @field_validator("rewind", mode="before")
    @classmethod
    def _check_rewind(cls, value: Any) -> Any:
        _rewind_options(value)  # raises ValueError naming the option
        return value

    @field_validator("create_replica_methods", mode="before")
    @classmethod
    def _default_methods(cls, value: Any) -> Any:
        return value or ["basebackup"]

    def basebackup_options(self) -> list[Option]:
        """``basebackup`` as ``(option, value)`` pairs; see
        :func:`pgha.config.replica.basebackup_options`."""
        return _basebackup_options(self.basebackup)

    def rewind_options(self) -> list[Option]:
        """``rewind`` as ``(option, value)`` pairs; see
        :func:`pgha.config.replica.rewind_options`."""
        return _rewind_options(self.rewind)

    def bin_names(self) -> dict[str, str]:
        """The configured ``bin_name`` entries (program -> file name)."""
        return {k: v for k, v in self.bin_name.model_dump().items()
                if k in BINARIES and isinstance(v, str)}

    def binary(self, program: str) -> str:
        """Path of ``program`` (:func:`pgha.config.binaries.binary_path`)."""
        return binary_path(self.bin_dir, self.bin_names(), program)

    def replica_methods(self) -> list[tuple[str, ReplicaMethodConfig | None]]:
        """``create_replica_methods`` in order, each with its section (None for the built-in
        ``basebackup``). Raises ValueError (pydantic's ValidationError) for a method whose
        section is missing or invalid: :func:`pgha.config.parse_config` reports those as
        ConfigError with their key paths first."""
        out: list[tuple[str, ReplicaMethodConfig | None]] = []
        for name in self.create_replica_methods:
            if name == "basebackup":
                out.append((name, None))
                continue
            section = (self.model_extra or {}).get(name)
            if not isinstance(section, dict):
                raise ValueError(f"replica method {name!r} has no section postgresql.{name}")
            out.append((name, ReplicaMethodConfig.model_validate(section)))
        return out

    @model_validator(mode="after")
    def _default_config_dir(self) -> PostgresqlConfig:
        self.config_dir = self.config_dir or self.data_dir
        return self

    @property
    def conn_url(self) -> str:
        """URL for the member key: ``postgres://<connect host:port>/postgres``."""
        return f"postgres://{self.connect_host_port}/postgres"


class WatchdogConfig(_Section):
    """``watchdog``. Default mode ``automatic``, as in Patroni: a leader arms the device when
    it can open it and warns when it cannot; YAML ``off`` (False) is accepted. ``safety_margin``
    -1 means ttl/2."""

    mode: Literal["off", "automatic", "required"] = "automatic"
    device: str = "/dev/watchdog"
    safety_margin: Seconds = 5

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        text = "off" if value is False else str(value).strip().lower()
        return {"disable": "off", "disabled": "off", "auto": "automatic",
                "require": "required"}.get(text, text)

    @field_validator("safety_margin")
    @classmethod
    def _margin(cls, value: float) -> float:
        if value != -1 and value < 0:
            raise ValueError("must be >= 0, or -1 for ttl/2")
        return value


class TagsConfig(_Section):
    """``tags``; any other key is a custom tag (:attr:`custom`). A conflicting explicit
    ``failover_priority``/``sync_priority`` next to ``nofailover``/``nosync`` logs a warning."""

    nofailover: bool = False
    failover_priority: int = Field(default=1, ge=0)
    noloadbalance: bool = False
    clonefrom: bool = False
    replicatefrom: str | None = None
    nosync: bool = False
    sync_priority: int = Field(default=1, ge=0)
    nostream: bool = False

    @model_validator(mode="after")
    def _warn_conflicts(self) -> TagsConfig:
        for flag, prio in (("nofailover", "failover_priority"), ("nosync", "sync_priority")):
            if getattr(self, flag) and prio in self.model_fields_set and getattr(self, prio) > 0:
                logger.warning("tags: %s is true and %s is %s; %s wins", flag, prio,
                               getattr(self, prio), flag)
        return self

    @property
    def custom(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def can_failover(self) -> bool:
        """False when ``nofailover`` is set or ``failover_priority`` is 0."""
        return not self.nofailover and self.failover_priority > 0


class ClusterAccess(_Section):
    """What reaching a cluster takes (patronictl's view of a configuration file): ``scope``
    (``""`` when not set), ``namespace``, ``restapi`` (credentials and TLS files for REST calls),
    ``ctl`` and at most one DCS section (``etcd3`` and ``etcd`` are both stored as ``etcd``).
    Every other key (``name``, ``postgresql``, ...) is kept unvalidated in ``model_extra``.
    Built by :func:`pgha.config.parse_cluster_access`; the operator commands use only this."""

    scope: str = ""
    namespace: str = "/service/"
    restapi: RestApiConfig = Field(default_factory=RestApiConfig)
    ctl: dict[str, Any] | None = None
    etcd: EtcdConfig | None = None
    consul: dict[str, Any] | None = None
    zookeeper: dict[str, Any] | None = None

    def dcs_kind(self) -> str:
        """``"etcd"``, ``"consul"`` or ``"zookeeper"``; ConfigError unless exactly one is set."""
        kinds = [k for k in ("etcd", "consul", "zookeeper") if getattr(self, k) is not None]
        if errors := _dcs_count_errors(kinds):
            raise ConfigError(errors)
        return kinds[0]

    def etcd_endpoints(self) -> list[tuple[str, int]]:
        """See :meth:`EtcdConfig.endpoints`; ConfigError when there is no etcd section."""
        if self.etcd is None:
            raise ConfigError([("etcd", "no etcd section")])
        return self.etcd.endpoints()


class Config(ClusterAccess):
    """The local configuration: :class:`ClusterAccess` plus the member's own sections. After
    :func:`parse_config` ``scope`` is not empty and exactly one DCS section is set."""

    scope: str = Field(min_length=1)
    name: str = Field(min_length=1)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    postgresql: PostgresqlConfig
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    tags: TagsConfig = Field(default_factory=TagsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _default_pgpass(self) -> Config:
        if not self.postgresql.pgpass:
            parent = self.postgresql.data_dir.rstrip("/").rpartition("/")[0] or "/"
            self.postgresql.pgpass = f"{parent.rstrip('/')}/.pgpass_pgha_{self.name}"
        return self


def _dcs_count_errors(present: list[str], unsupported: Iterable[str] = ()) -> list[tuple[str, str]]:
    if len(present) > 1:
        return [("", f"several DCS sections: {', '.join(present)} (exactly one is allowed)")]
    if present:
        return []
    errors = [(k, f"DCS {k} is not supported: use one of {', '.join(DCS_KINDS)}")
              for k in unsupported]
    return errors or [("", f"no DCS section: one of {', '.join(DCS_KINDS)} is required")]
