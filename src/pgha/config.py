"""Patroni-compatible configuration: YAML file(s), environment overrides, validation.

Layers, lowest first: model defaults < YAML (one file, or every ``*.yml``/``*.yaml`` of a directory
deep-merged in sorted name order) < environment (``PGHA_<KEY>`` over ``PATRONI_<KEY>``; empty values
are ignored). ``PGHA_CONFIGURATION``/``PATRONI_CONFIGURATION`` hold the whole YAML instead: then no
file is read and no other environment override applies (as in Patroni).

Validation reports every problem at once as :class:`ConfigError`, each with its dotted key path
(list items as ``[i]``). Unknown PostgreSQL parameters are dropped with a warning, never an error.
Unknown keys are kept in most sections (``model_extra``); closed sections (authentication,
callbacks) reject them. A declared key given as ``null`` takes its default.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgha.pgparams import filter_pg_parameters as filter_pg_parameters

logger = logging.getLogger("pgha.config")

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
ETCD_DEFAULT_PORT = 2379
DCS_KINDS = ("etcd3", "etcd", "consul", "zookeeper")
_UNSUPPORTED_DCS = ("exhibitor", "kubernetes", "raft")
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::"})
_ROLE_DEFAULTS = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}
_ROLE_KEYS = ("username", "password", "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert",
              "sslcrl", "sslcrldir", "sslnegotiation", "gssencmode", "channel_binding")


class ConfigError(Exception):
    """Invalid configuration. ``errors`` holds every problem as ``(key path, message)``."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(self.errors)  # args stay (errors,) so the exception pickles

    def __str__(self) -> str:
        return "\n".join(f"{path}: {msg}" if path else msg for path, msg in self.errors)


_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s\[\]]+?)):(?P<port>\d{1,5})")


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port``; in ``h1,h2:port`` the host is ``h1,h2``).

    Without a ``:port``, ``default_port`` is used when given. Raises ``ValueError`` otherwise
    ("expected host:port"), or for a port outside 1..65535.
    """
    text = value.strip()
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        if default_port is not None and text and ":" not in text.strip("[]"):
            return text.strip("[]"), default_port
        raise ValueError("expected host:port")
    if not 0 < int(match["port"]) < 65536:
        raise ValueError("port must be between 1 and 65535")
    return match["v6"] or match["host"], int(match["port"])


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`; IPv6 literals get brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_bin_dir(path_env: str | None = None) -> str:
    """Directory of ``pg_ctl`` found on ``path_env`` (default ``$PATH``) with symlinks resolved
    (so it holds ``postgres``, ``initdb``... too), else DEFAULT_BIN_DIR."""
    found = shutil.which("pg_ctl", path=path_env)
    return os.path.dirname(os.path.realpath(found)) if found else DEFAULT_BIN_DIR


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90"``, ``"500ms"``, ``"90s"``, ``"30min"``,
    ``"1h"``, ``"1d"``. Raises ``ValueError`` for anything else or a negative value."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*", str(value))
    if isinstance(value, bool) or match is None:
        raise ValueError("expected a duration such as 30min, 1h, 90s or a number of seconds")
    seconds = float(match[1]) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}[
        match[2] or "s"]
    if seconds < 0:
        raise ValueError("must be >= 0")
    return seconds


def _num_out(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _csv(value: Any) -> Any:
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


Seconds = Annotated[float, PlainSerializer(_num_out)]
"""A float that serializes as an int when integral (``30``, not ``30.0``, in DCS JSON)."""
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(_num_out)]
_Lower = BeforeValidator(_lower)
_Csv = BeforeValidator(_csv)


class _Section(BaseModel):
    """Base of config sections: unknown keys are kept; ``null`` for a declared key = default."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = set(cls.model_fields)
        for info in cls.model_fields.values():
            if isinstance(info.validation_alias, AliasChoices):
                names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        return {k: v for k, v in data.items() if v is not None or k not in names}


class _Closed(_Section):
    """A section with a fixed key set: unknown keys are errors (catches typos)."""

    model_config = ConfigDict(extra="forbid")


class _Endpoint(_Section):
    """``listen`` and ``connect_address`` as ``host:port``; connect defaults to listen."""

    _multi_host: ClassVar[bool] = False
    listen: str
    connect_address: str | None = None

    @field_validator("listen", "connect_address")
    @classmethod
    def _check_host_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "," in split_host_port(value)[0]:
            if not (cls._multi_host and info.field_name == "listen"):
                raise ValueError("expected host:port")
        return value

    @property
    def listen_host(self) -> str:
        """Host part of ``listen`` (for PostgreSQL maybe ``h1,h2``, i.e. listen_addresses)."""
        return split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def connect_host(self) -> str:
        """``connect_address`` host, else the first listen host (wildcard -> ``127.0.0.1``)."""
        if self.connect_address:
            return split_host_port(self.connect_address)[0]
        host = self.listen_host.split(",")[0].strip()
        return "127.0.0.1" if host in _WILDCARDS else host

    @property
    def connect_port(self) -> int:
        return split_host_port(self.connect_address or self.listen)[1]

    @property
    def connect_host_port(self) -> str:
        return join_host_port(self.connect_host, self.connect_port)


class RestApiAuth(_Closed):
    username: str
    password: str


class RestApiConfig(_Endpoint):
    """``restapi`` section; ``allowlist`` also accepts a comma-separated string."""

    listen: str = "127.0.0.1:8008"
    authentication: RestApiAuth | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    cafile: str | None = None
    verify_client: Annotated[Literal["none", "optional", "required"] | None, _Lower] = None
    allowlist: Annotated[list[str], _Csv] = Field(default_factory=list)
    allowlist_include_members: bool = False

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


class DynamicPostgresql(_Section):
    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] | None = None
    recovery_conf: dict[str, Any] | None = None


class DynamicConfig(_Section):
    """Dynamic configuration (``bootstrap.dcs`` and the DCS ``config`` key); extra keys kept.

    ``synchronous_mode`` is True, False or ``"quorum"`` (on/off/true/false accepted).
    ``member_slots_ttl`` is in seconds (``"30min"``-style strings accepted). The rule
    ``loop_wait + 2 * retry_timeout <= ttl`` is not enforced: see :meth:`adjusted`.
    """

    ttl: Seconds = Field(default=30, ge=5)
    loop_wait: Seconds = Field(default=10, ge=1)
    retry_timeout: Seconds = Field(default=10, ge=1)
    maximum_lag_on_failover: int = Field(default=1048576, ge=0)
    maximum_lag_on_syncnode: int = -1
    primary_start_timeout: Seconds = Field(default=300, ge=0, validation_alias=AliasChoices(
        "primary_start_timeout", "master_start_timeout"))
    primary_stop_timeout: Seconds = Field(default=0, ge=0)
    synchronous_mode: bool | Literal["quorum"] = False
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = Field(default=1, ge=1)
    failsafe_mode: bool = False
    check_timeline: bool = False
    max_timelines_history: int = Field(default=0, ge=0)
    pause: bool = False
    slots: dict[str, Any] | None = None
    ignore_slots: list[dict[str, Any]] | None = None
    member_slots_ttl: Duration = 1800
    standby_cluster: dict[str, Any] | None = None
    postgresql: DynamicPostgresql = Field(default_factory=DynamicPostgresql)

    @field_validator("synchronous_mode", mode="before")
    @classmethod
    def _sync_mode(cls, value: Any) -> Any:
        modes = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False,
                 "quorum": "quorum"}
        if not isinstance(value, bool) and str(value).strip().lower() not in modes:
            raise ValueError("expected on, off or quorum")
        return value if isinstance(value, bool) else modes[str(value).strip().lower()]

    def timing_warnings(self) -> list[str]:
        """One message when ``loop_wait + 2 * retry_timeout > ttl``, else empty."""
        total = self.loop_wait + 2 * self.retry_timeout
        if total <= self.ttl:
            return []
        return [f"loop_wait ({self.loop_wait:g}) + 2 * retry_timeout ({self.retry_timeout:g}) = "
                f"{total:g} exceeds ttl ({self.ttl:g}): the leader lock could expire before a "
                "failed update is retried"]

    def adjusted(self) -> DynamicConfig:
        """A copy obeying ``loop_wait + 2 * retry_timeout <= ttl``; ``ttl`` is never changed.

        Unchanged when the rule holds. Otherwise ``retry_timeout = (ttl - loop_wait) / 2``; if
        that is below 1 s, ``loop_wait`` and ``retry_timeout`` both become ``ttl / 3``.
        """
        if not self.timing_warnings():
            return self.model_copy()
        loop_wait, retry = self.loop_wait, (self.ttl - self.loop_wait) / 2
        if retry < 1:
            loop_wait = retry = self.ttl / 3
        return self.model_copy(update={"loop_wait": loop_wait, "retry_timeout": retry})

    def to_dcs(self) -> dict[str, Any]:
        """JSON-ready dict for the DCS ``config`` key (``None`` values left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class UserSpec(_Section):
    password: str | None = None
    options: list[str] = Field(default_factory=list)


class BootstrapConfig(_Section):
    """``bootstrap``; ``initdb`` items are switches (``data-checksums``) or ``{option: value}``;
    ``users`` is the older Patroni style; ``post_init`` is accepted for ``post_bootstrap``."""

    dcs: DynamicConfig = Field(default_factory=DynamicConfig)
    method: str | None = None
    initdb: list[str | dict[str, Any]] = Field(default_factory=list)
    pg_hba: list[str] = Field(default_factory=list)
    users: dict[str, UserSpec] = Field(default_factory=dict)
    post_bootstrap: str | None = Field(
        default=None, validation_alias=AliasChoices("post_bootstrap", "post_init"))

    @field_validator("initdb", mode="before")
    @classmethod
    def _check_initdb(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("expected a list of switches and {option: value} mappings")
        for i, item in enumerate(value):
            if isinstance(item, dict):
                if not item or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                       for k, v in item.items()):
                    raise ValueError(f"item {i}: expected {{option: value}} with a scalar value")
            elif not isinstance(item, str) or not item.strip():
                raise ValueError(f"item {i}: expected a switch name or {{option: value}}")
        return value

    @field_validator("users", mode="before")
    @classmethod
    def _null_users(cls, value: Any) -> Any:
        return {k: v or {} for k, v in value.items()} if isinstance(value, dict) else value

    def initdb_args(self) -> list[str]:
        """``initdb`` as options: ``{encoding: UTF8}`` -> ``--encoding=UTF8``,
        ``data-checksums`` -> ``--data-checksums``."""
        args: list[str] = []
        for item in self.initdb:
            if isinstance(item, str):
                args.append(f"--{item.strip().lstrip('-')}")
            else:
                args.extend(f"--{k.lstrip('-')}={v}" for k, v in item.items())
        return args


class RoleAuth(_Section):
    """One role of ``postgresql.authentication``: username, password and libpq TLS/GSS options
    (sslmode, sslkey, sslcert, sslrootcert, ... kept as extras); other keys are errors."""

    username: str = Field(min_length=1)
    password: str | None = None
    sslmode: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        unknown = [k for k in data if k not in _ROLE_KEYS] if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(map(str, unknown))}")
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


class PostgresqlConfig(_Endpoint):
    """``postgresql`` section; ``listen`` may name several hosts (``h1,h2:5432``).

    After validation ``config_dir`` is never empty (default: ``data_dir``) and, inside a
    :class:`Config`, neither is ``pgpass`` (default ``/tmp/pgpass-<name>``).
    """

    _multi_host: ClassVar[bool] = True
    listen: str = "127.0.0.1:5432"
    data_dir: str = Field(min_length=1)
    bin_dir: str = Field(default_factory=default_bin_dir)
    config_dir: str = ""
    pgpass: str = ""
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] = Field(default_factory=list)
    pg_ident: list[str] = Field(default_factory=list)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    create_replica_methods: list[str] = Field(default_factory=lambda: ["basebackup"])
    basebackup: list[Any] | dict[str, Any] | None = None
    use_pg_rewind: bool = False
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    use_unix_socket: bool = False
    pg_ctl_timeout: Seconds = Field(default=60, gt=0)
    recovery_conf: dict[str, Any] = Field(default_factory=dict)

    @field_validator("basebackup", mode="before")
    @classmethod
    def _check_basebackup(cls, value: Any) -> Any:
        if not isinstance(value, list | dict):
            raise ValueError("expected a list of options or a mapping")
        return value

    @model_validator(mode="after")
    def _default_config_dir(self) -> PostgresqlConfig:
        self.config_dir = self.config_dir or self.data_dir
        return self

    @property
    def conn_url(self) -> str:
        """URL for the member key: ``postgres://<connect host:port>/postgres``."""
        return f"postgres://{self.connect_host_port}/postgres"


class WatchdogConfig(_Section):
    """``watchdog``. Default mode ``off`` (Patroni: automatic) so that no machine watchdog is
    armed unless asked; YAML ``off`` (False) is accepted. ``safety_margin`` -1 means ttl/2."""

    mode: Literal["off", "automatic", "required"] = "off"
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


class LogConfig(_Section):
    level: str = "INFO"
    dir: str | None = None
    format: str | list[Any] | None = None
    type: Annotated[Literal["plain", "json"], _Lower] = "plain"

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if str(value).strip().upper() not in logging.getLevelNamesMapping():
            raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return str(value).strip().upper()


class Config(_Section):
    """The local configuration. After :func:`parse_config` exactly one DCS section is set
    (``etcd3`` and ``etcd`` are both stored as ``etcd``)."""

    scope: str = Field(min_length=1)
    namespace: str = "/service/"
    name: str = Field(min_length=1)
    restapi: RestApiConfig = Field(default_factory=RestApiConfig)
    ctl: dict[str, Any] | None = None
    etcd: EtcdConfig | None = None
    consul: dict[str, Any] | None = None
    zookeeper: dict[str, Any] | None = None
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    postgresql: PostgresqlConfig
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    tags: TagsConfig = Field(default_factory=TagsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _default_pgpass(self) -> Config:
        self.postgresql.pgpass = self.postgresql.pgpass or f"/tmp/pgpass-{self.name}"
        return self

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


def _dcs_count_errors(present: list[str], unsupported: Iterable[str] = ()) -> list[tuple[str, str]]:
    if len(present) > 1:
        return [("", f"several DCS sections: {', '.join(present)} (exactly one is allowed)")]
    if present:
        return []
    errors = [(k, f"DCS {k} is not supported: use one of {', '.join(DCS_KINDS)}")
              for k in unsupported]
    return errors or [("", f"no DCS section: one of {', '.join(DCS_KINDS)} is required")]


# ---------------------------------------------------------------------------- environment

_ENV_PATHS: dict[str, tuple[str, ...]] = {
    "NAME": ("name",), "SCOPE": ("scope",), "NAMESPACE": ("namespace",),
    "LOG_LEVEL": ("log", "level"), "LOG_DIR": ("log", "dir"),
    "RESTAPI_USERNAME": ("restapi", "authentication", "username"),
    "RESTAPI_PASSWORD": ("restapi", "authentication", "password"),
    "ZOOKEEPER_HOSTS": ("zookeeper", "hosts"),
    **{f"RESTAPI_{k.upper()}": ("restapi", k) for k in (
        "listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile",
        "verify_client", "allowlist")},
    **{f"POSTGRESQL_{k.upper()}": ("postgresql", k) for k in (
        "listen", "connect_address", "data_dir", "bin_dir", "config_dir", "pgpass")},
    **{f"{role.upper()}_{k.upper()}": ("postgresql", "authentication", role, k)
       for role in _ROLE_DEFAULTS for k in _ROLE_KEYS},
    **{f"CONSUL_{k.upper()}": ("consul", k) for k in (
        "host", "url", "port", "token", "scheme", "dc", "verify", "cacert", "cert", "key")},
}
_ENV_LISTS = frozenset({"RESTAPI_ALLOWLIST", "ZOOKEEPER_HOSTS", "ETCD_HOSTS", "ETCD3_HOSTS"})
_ETCD_KEYS = ("hosts", "host", "url", "protocol", "username", "password", "cacert", "cert", "key")


def _env_value(env: Mapping[str, str], suffix: str) -> Any:
    """``PGHA_<suffix>`` else ``PATRONI_<suffix>`` (empty = unset); list-valued keys take a
    comma-separated string or a YAML flow list."""
    value = env.get("PGHA_" + suffix) or env.get("PATRONI_" + suffix)
    if value is None or suffix not in _ENV_LISTS:
        return value
    if value.lstrip().startswith("["):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    return _csv(value)


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[path[-1]] = value


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Apply the environment overrides to ``raw`` in place. ``ETCD_*``/``ETCD3_*`` go to the
    existing etcd3/etcd section, else create ``etcd`` (ETCD3_ wins over ETCD_)."""
    for suffix, path in _ENV_PATHS.items():
        if (value := _env_value(env, suffix)) is not None:
            _set_path(raw, path, value)
    section = "etcd3" if "etcd3" in raw else "etcd"
    for api in ("ETCD", "ETCD3"):
        for key in _ETCD_KEYS:
            if (value := _env_value(env, f"{api}_{key.upper()}")) is not None:
                _set_path(raw, (section, key), value)


# ---------------------------------------------------------------------------- validation


def _filter_params_at(raw: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = raw
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    params = node.get(path[-1]) if isinstance(node, dict) else None
    if isinstance(params, dict):
        kept, removed = filter_pg_parameters(params)
        if removed:
            logger.warning("%s: ignoring unknown PostgreSQL parameters: %s",
                           ".".join(path), ", ".join(removed))
            node[path[-1]] = kept


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "field required"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind][0]} {_num_out(ctx[_BOUNDS[kind][1]])}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"]).replace("Input should be ", "expected ", 1)
    return msg + (f" (got {value!r})" if isinstance(value, str | int | float) else "")


def _convert(exc: ValidationError, prefix: str = "",
             rename: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """pydantic errors as ``(dotted path, message)``; list indexes render as ``[i]``."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path = prefix
        for i, part in enumerate(err["loc"]):
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                part = (rename or {}).get(part, part) if i == 0 else part
                path = f"{path}.{part}" if path else part
        out.append((path, _message(err)))
    return out


def _validate(raw: dict[str, Any], env: Mapping[str, str]) -> Config:
    for kind in DCS_KINDS:  # null = absent, as for every other key
        if kind in raw and raw[kind] is None:
            del raw[kind]
    present = [k for k in DCS_KINDS if k in raw]
    errors = _dcs_count_errors(present, [k for k in _UNSUPPORTED_DCS if raw.get(k) is not None])
    rename = {"etcd": "etcd3"} if "etcd3" in raw and "etcd" not in raw else {}
    if "etcd3" in raw:
        raw.setdefault("etcd", raw["etcd3"])
        del raw["etcd3"]
    _filter_params_at(raw, ("postgresql", "parameters"))
    _filter_params_at(raw, ("bootstrap", "dcs", "postgresql", "parameters"))
    pg = raw.get("postgresql")
    if isinstance(pg, dict) and not pg.get("bin_dir"):
        pg["bin_dir"] = default_bin_dir(env.get("PATH", os.environ.get("PATH")))
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(errors + _convert(exc, rename=rename)) from None
    if errors:
        raise ConfigError(errors)
    return config


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Apply env overrides (``env`` defaults to ``os.environ``; ``*_CONFIGURATION`` is not
    consulted) to a loaded mapping, which is not modified, and validate it.

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    raw = copy.deepcopy(dict(data))
    _apply_env(raw, env)
    return _validate(raw, env)


def parse_dynamic_config(data: Mapping[str, Any], prefix: str = "") -> DynamicConfig:
    """Validate a dynamic configuration (e.g. the DCS ``config`` value); unknown PostgreSQL
    parameters are dropped with a warning. ConfigError paths start with ``prefix``."""
    raw = copy.deepcopy(dict(data))
    _filter_params_at(raw, ("postgresql", "parameters"))
    try:
        return DynamicConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_convert(exc, prefix)) from None


# ---------------------------------------------------------------------------- files


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([(source, f"invalid YAML: {' '.join(str(exc).split())}")]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([(source, "expected a mapping at the top level")])
    return data or {}


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file, or all ``*.yml``/``*.yaml`` files of a directory deep-merged in
    sorted name order (later files win). Raises :class:`ConfigError` keyed by file path."""
    target = Path(path)
    try:
        if not target.is_dir():
            return _yaml_mapping(target.read_text(encoding="utf-8"), str(target))
        files = sorted(p for p in target.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise ConfigError([(str(target), "no *.yml or *.yaml files in directory")])
        merged: dict[str, Any] = {}
        for file in files:
            _deep_merge(merged, _yaml_mapping(file.read_text(encoding="utf-8"), str(file)))
        return merged
    except OSError as exc:
        raise ConfigError([(str(exc.filename or target), f"cannot read: {exc.strerror}")]) from None


def load_config(path: str | os.PathLike[str] | None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (file or directory, see :func:`read_yaml`), apply env overrides (``env``
    defaults to ``os.environ``) and validate. Raises :class:`ConfigError` listing every error.

    ``PGHA_CONFIGURATION`` (else ``PATRONI_CONFIGURATION``), when set, is the whole YAML:
    ``path`` is then ignored (it may be ``None``) and no other env override applies.
    """
    env = os.environ if env is None else env
    for var in ("PGHA_CONFIGURATION", "PATRONI_CONFIGURATION"):
        if env.get(var):
            return _validate(_yaml_mapping(env[var], var), env)
    if path is None:
        raise ConfigError([("", "no configuration file given and PGHA_CONFIGURATION is not set")])
    return parse_config(read_yaml(path), env)
