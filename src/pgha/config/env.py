"""Environment overrides: ``PGHA_<KEY>`` over ``PATRONI_<KEY>`` (empty values are ignored).

Contract: :func:`_apply_env` writes the overrides into a raw (not yet validated) configuration
mapping in place; it validates nothing. List-valued keys take a comma-separated string or a
YAML flow list. ``*_CONFIGURATION`` (the whole YAML in one variable) is handled by ``loader``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from pgha.config.base import _ROLE_DEFAULTS, _ROLE_KEYS, _csv
from pgha.config.binaries import BINARIES

_ENV_PATHS: dict[str, tuple[str, ...]] = {
    "NAME": ("name",), "SCOPE": ("scope",), "NAMESPACE": ("namespace",),
    **{f"LOG_{k.upper()}": ("log", k) for k in (
        "type", "level", "traceback_level", "format", "dateformat", "static_fields",
        "max_queue_size", "dir", "mode", "file_size", "file_num", "loggers",
        "deduplicate_heartbeat_logs")},
    "RESTAPI_USERNAME": ("restapi", "authentication", "username"),
    "RESTAPI_PASSWORD": ("restapi", "authentication", "password"),
    **{f"ZOOKEEPER_{k.upper()}": ("zookeeper", k) for k in (
        "hosts", "use_ssl", "cacert", "cert", "key", "key_password", "verify", "set_acls",
        "auth_data")},
    **{f"RESTAPI_{k.upper()}": ("restapi", k) for k in (
        "listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile",
        "verify_client", "allowlist", "allowlist_include_members", "ciphers",
        "http_extra_headers", "https_extra_headers", "request_queue_size", "server_tokens")},
    **{f"POSTGRESQL_{k.upper()}": ("postgresql", k) for k in (
        "listen", "connect_address", "data_dir", "bin_dir", "config_dir", "pgpass")},
    **{f"POSTGRESQL_BIN_{b.upper()}": ("postgresql", "bin_name", b) for b in BINARIES},
    **{f"{role.upper()}_{k.upper()}": ("postgresql", "authentication", role, k)
       for role in _ROLE_DEFAULTS for k in _ROLE_KEYS},
    **{f"CONSUL_{k.upper()}": ("consul", k) for k in (
        "host", "url", "port", "token", "scheme", "dc", "verify", "cacert", "cert", "key")},
}
_ENV_LISTS = frozenset({"RESTAPI_ALLOWLIST", "ZOOKEEPER_HOSTS", "ETCD_HOSTS", "ETCD3_HOSTS"})
#: mappings: a YAML flow mapping, braces optional (``PATRONI_LOG_LOGGERS="aiohttp: ERROR"``)
_ENV_DICTS = frozenset({"LOG_STATIC_FIELDS", "LOG_LOGGERS", "RESTAPI_HTTP_EXTRA_HEADERS",
                        "RESTAPI_HTTPS_EXTRA_HEADERS", "ZOOKEEPER_SET_ACLS",
                        "ZOOKEEPER_AUTH_DATA"})
_FORMAT_FIELD = re.compile(r"%\(\w+\)")
_ETCD_KEYS = ("hosts", "host", "url", "protocol", "username", "password", "cacert", "cert", "key")


def _env_value(env: Mapping[str, str], suffix: str) -> Any:
    """``PGHA_<suffix>`` else ``PATRONI_<suffix>`` (empty = unset); list-valued keys take a
    comma-separated string or a YAML flow list; mappings a YAML flow mapping; ``LOG_FORMAT``
    is a list (of JSON fields) when it names no ``%(field)``. Text that does not parse is
    passed on as is, for validation to refuse it naming the key."""
    value = env.get("PGHA_" + suffix) or env.get("PATRONI_" + suffix) or None
    if value is None:
        return None
    if suffix in _ENV_DICTS:
        text = value.strip()
        return _yaml(text if text.startswith("{") else "{" + text + "}", value)
    if suffix == "LOG_FORMAT" and not _FORMAT_FIELD.search(value):
        text = value.strip()
        return _yaml(text if text.startswith(("[", "-")) else "[" + text + "]", value)
    if suffix not in _ENV_LISTS:
        return value
    if value.lstrip().startswith("["):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    return _csv(value)


def _yaml(text: str, fallback: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return fallback


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
