"""Reading and validating configurations: YAML files/directories, environment, error paths.

Contract: :func:`load_config` (file or directory, or ``PGHA_CONFIGURATION``/
``PATRONI_CONFIGURATION``), :func:`parse_config` (an already loaded mapping) and
:func:`parse_dynamic_config` return validated models or raise :class:`ConfigError` listing every
problem with its dotted key path (list items as ``[i]``). Before validation exactly one DCS
section is required (``etcd3`` is stored as ``etcd``) and an empty ``postgresql.bin_dir`` is
filled in (:func:`pgha.config.binaries.fill_bin_dir`).
PostgreSQL parameters (``postgresql.parameters``, ``bootstrap.dcs.postgresql.parameters``) are
judged against the catalogue ``catalogue(<postgres program>)`` returns (given by the
caller, which may run the server binary; without it, pgha's name list): unknown names are
dropped with a warning on the ``pgha.config`` logger, a value PostgreSQL would reject is an
error at ``...parameters.NAME``; renamed names are kept as given (they are translated for the
server's major when the parameters are merged). Every key is looked up in the registry
(:mod:`pgha.config.keys`): unsupported ones and ``PATRONI_*`` variables pgha does not act on are
logged as warnings, unknown keys, bad values (member name, wildcard ``listen``,
``zookeeper.hosts``), a replica method without a valid ``postgresql.<method>`` section,
missing certificate files, non-UTF-8 files and nesting deeper than
``keys.MAX_DEPTH`` are ConfigErrors. Inputs are never modified.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pgha.config.base import (
    _UNSUPPORTED_DCS,
    DCS_KINDS,
    ConfigError,
    _num_out,
)
from pgha.config.binaries import fill_bin_dir, server_binary
from pgha.config.dynamic import DynamicConfig
from pgha.config.env import _apply_env
from pgha.config.keys import (
    MAX_DEPTH,
    check_dynamic,
    check_env,
    check_local,
    check_values,
    file_keys,
    too_deep,
)
from pgha.config.models import ClusterAccess, Config, PostgresqlConfig, _dcs_count_errors
from pgha.config.pg_parameters import ParamCatalogue, judge_parameters
from pgha.config.replica import ReplicaMethodConfig
from pgha.core.model import HA_MINIMUMS, HaSettings
from pgha.core.slots import config_problems as slot_config_problems
from pgha.core.standby import parse_standby_cluster
from pgha.core.units import parse_duration

logger = logging.getLogger("pgha.config")

CatalogueSource = Callable[[str], ParamCatalogue]
"""``path of the postgres program -> its catalogue`` (:func:`pgha.pg.catalogue.load_catalogue`)."""
M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------- validation


def _filter_params_at(raw: dict[str, Any], path: tuple[str, ...],
                      catalogue: ParamCatalogue | None = None) -> list[tuple[str, str]]:
    """Judge the parameters at ``path``: drop unknown names (warning), return the errors of
    values PostgreSQL would reject (``path.NAME``)."""
    node: Any = raw
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    params = node.get(path[-1]) if isinstance(node, dict) else None
    if not isinstance(params, dict):
        return []
    where = ".".join(path)
    judged = judge_parameters(params, catalogue)
    if judged.dropped:
        logger.warning("%s: ignoring unknown PostgreSQL parameters: %s", where, ", ".join(
            f"{name} ({why})" for name, why in judged.dropped.items()))
        node[path[-1]] = {k: v for k, v in params.items() if str(k) not in judged.dropped}
    for conflict in judged.conflicts:
        logger.warning("%s: %s", where, conflict)
    return [(f"{where}.{name}", why) for name, why in judged.invalid.items()]


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


def _check_keys(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Errors of the key registry (:mod:`pgha.config.keys`), missing files and replica method
    sections; the registry's warnings are logged on ``pgha.config``."""
    errors, warnings = check_local(raw)
    for path, message in warnings:
        logger.warning("%s: %s", path, message)
    errors += check_values(raw)
    errors += _replica_method_errors(raw)
    errors += [(path, f"file not found: {name}") for path, name in file_keys(raw)
               if not os.path.exists(name) and name.isprintable()]  # else refused as malformed
    errors += _custom_conf_errors(raw)
    return errors


def _custom_conf_errors(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An absolute ``postgresql.custom_conf`` must name a file; a relative one is relative to
    the configuration directory, which may not exist yet (checked before each start)."""
    pg = raw.get("postgresql")
    name = pg.get("custom_conf") if isinstance(pg, Mapping) else None
    if not isinstance(name, str) or not name.isprintable():
        return []  # absent, or refused by the model
    path = os.path.expanduser(name)
    if os.path.isabs(path) and not os.path.isfile(path):
        return [("postgresql.custom_conf", f"file not found: {name}")]
    return []


def _replica_method_errors(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every method of ``postgresql.create_replica_methods`` other than ``basebackup`` needs
    its section ``postgresql.<method>`` (:class:`ReplicaMethodConfig`); a name of another
    ``postgresql`` setting is no method."""
    pg = raw.get("postgresql")
    methods = pg.get("create_replica_methods") if isinstance(pg, Mapping) else None
    if not isinstance(pg, Mapping) or not isinstance(methods, list):
        return []  # absent, or refused by the model with its own error
    errors: list[tuple[str, str]] = []
    for i, name in enumerate(methods):
        where = f"postgresql.create_replica_methods[{i}]"
        if not isinstance(name, str) or name == "basebackup":
            continue
        if not name or "." in name or name in PostgresqlConfig.model_fields:
            errors.append((where, f"{name!r} cannot name a replica method"))
        elif not isinstance(section := pg.get(name), Mapping):
            errors.append((where, f"method {name!r} has no section postgresql.{name} "
                                  "(with its command)"))
        else:
            try:
                ReplicaMethodConfig.model_validate(dict(section))
            except ValidationError as exc:
                errors += _convert(exc, f"postgresql.{name}")
    return errors


def _depth_error(data: Any, prefix: str = "") -> ConfigError | None:
    where = too_deep(data)
    if where is None:
        return None
    path = f"{prefix}.{where}" if prefix and where != "<top>" else prefix or where
    return ConfigError([(path[:200], f"nested more than {MAX_DEPTH} levels deep")])


def _validate(raw: dict[str, Any], env: Mapping[str, str],
              catalogue: CatalogueSource | None = None) -> Config:
    key_errors = _check_keys(raw)
    present = _present_dcs(raw)
    errors = _dcs_count_errors(present, [k for k in _UNSUPPORTED_DCS if raw.get(k) is not None])
    errors += key_errors
    rename = _store_etcd3_as_etcd(raw)
    pg = raw.get("postgresql")
    if isinstance(pg, dict):
        fill_bin_dir(pg, env.get("PATH", os.environ.get("PATH")))
    home = env.get("HOME", "")
    if isinstance(pg, dict) and not pg.get("pgpass") and home.strip("/") and \
            isinstance(raw.get("name"), str):
        # never a predictable name in a world-writable directory such as /tmp
        pg["pgpass"] = os.path.join(home, f".pgpass_pgha_{raw['name']}")
    cat = None
    if catalogue is not None:
        cat = catalogue(server_binary(pg, env.get("PATH", os.environ.get("PATH"))))
    errors += _filter_params_at(raw, ("postgresql", "parameters"), cat)
    errors += _filter_params_at(raw, ("bootstrap", "dcs", "postgresql", "parameters"), cat)
    return _validated(Config, raw, errors, rename)


def _present_dcs(raw: dict[str, Any]) -> list[str]:
    """The DCS sections in ``raw`` (a ``null`` one is removed: absent, as for every key)."""
    for kind in DCS_KINDS:
        if kind in raw and raw[kind] is None:
            del raw[kind]
    return [k for k in DCS_KINDS if k in raw]


def _store_etcd3_as_etcd(raw: dict[str, Any]) -> dict[str, str]:
    """Move ``etcd3`` to ``etcd``; the rename for error paths (``etcd`` -> ``etcd3``)."""
    rename = {"etcd": "etcd3"} if "etcd3" in raw and "etcd" not in raw else {}
    if "etcd3" in raw:
        raw.setdefault("etcd", raw["etcd3"])
        del raw["etcd3"]
    return rename


def _validated(model: type[M], raw: dict[str, Any], errors: list[tuple[str, str]],
               rename: Mapping[str, str]) -> M:
    """``model`` from ``raw``; ConfigError with ``errors`` and the model's own errors."""
    try:
        result = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(errors + _convert(exc, rename=rename)) from None
    if errors:
        raise ConfigError(errors)
    return result


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 catalogue: CatalogueSource | None = None) -> Config:
    """Apply env overrides (``env`` defaults to ``os.environ``; ``*_CONFIGURATION`` is not
    consulted) to a loaded mapping, which is not modified, and validate it (PostgreSQL
    parameters against ``catalogue(<postgres program>)``, see the module docstring).

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    if (deep := _depth_error(data)) is not None:
        raise deep
    raw = copy.deepcopy(dict(data))
    _apply_env(raw, env)
    for var, message in check_env(env):
        logger.warning("%s: %s", var, message)
    return _validate(raw, env, catalogue)


def parse_dynamic_config(data: Mapping[str, Any], prefix: str = "") -> DynamicConfig:
    """Validate a dynamic configuration (e.g. the DCS ``config`` value); unknown PostgreSQL
    parameters are dropped with a warning. Keys are looked up in the registry: unsupported
    ones are logged as warnings, unknown ones are errors. ConfigError paths start with
    ``prefix``."""
    if (deep := _depth_error(data, prefix)) is not None:
        raise deep
    errors, warnings = check_dynamic(data, prefix)
    for path, message in warnings:
        logger.warning("%s: %s", path, message)
    raw = copy.deepcopy(dict(data))
    _filter_params_at(raw, ("postgresql", "parameters"))
    try:
        config = DynamicConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(errors + _convert(exc, prefix)) from None
    if errors:
        raise ConfigError(errors)
    return config


def dynamic_config_warnings(data: Mapping[str, Any]) -> list[str]:
    """What a member should log about a dynamic configuration read from the DCS (written by
    someone else): unsupported and unknown keys alike, and timing values the member does not
    use (ill-typed, or below :data:`HA_MINIMUMS`: :meth:`HaSettings.from_config` keeps the
    default), as ``"path: message"``; never raises."""
    if too_deep(data) is not None:
        return [f"config: nested more than {MAX_DEPTH} levels deep"]
    errors, warnings = check_dynamic(data, "config")
    found = [f"{path}: {message}" for path, message in errors + warnings]
    found += [f"config.{problem} (entry not used)" for problem in slot_config_problems(data)]
    if isinstance(problem := parse_standby_cluster(data.get("standby_cluster")), str):
        found.append(f"config.standby_cluster: {problem} (this cluster runs as a primary)")
    used, default = HaSettings.from_config(data), HaSettings()
    for key, minimum in HA_MINIMUMS.items():
        value = data.get(key)
        if value is not None and getattr(used, key) == getattr(default, key) and (
                isinstance(value, bool) or not _same_number(value, getattr(default, key))):
            found.append(f"config.{key}: {value!r} is not usable (a number >= {minimum:g} is "
                         f"needed): using the default {getattr(used, key):g}")
    return found


def _same_number(value: Any, number: float) -> bool:
    try:
        return parse_duration(value) == number
    except (ValueError, OverflowError):
        return False


# ---------------------------------------------------------------------------- files


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([(source, f"invalid YAML: {' '.join(str(exc).split())}")]) from None
    except RecursionError:
        raise ConfigError([(source, f"nested more than {MAX_DEPTH} levels deep")]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([(source, "expected a mapping at the top level")])
    if (deep := _depth_error(data)) is not None:
        raise ConfigError([(source, f"{path}: {msg}") for path, msg in deep.errors]) from None
    return data or {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([(str(path), f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} "
                                       f"at offset {exc.start})")]) from None


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
            return _yaml_mapping(_read_text(target), str(target))
        files = sorted(p for p in target.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise ConfigError([(str(target), "no *.yml or *.yaml files in directory")])
        merged: dict[str, Any] = {}
        for file in files:
            _deep_merge(merged, _yaml_mapping(_read_text(file), str(file)))
        return merged
    except OSError as exc:
        raise ConfigError([(str(exc.filename or target), f"cannot read: {exc.strerror}")]) from None


def load_config(path: str | os.PathLike[str] | None,
                env: Mapping[str, str] | None = None,
                catalogue: CatalogueSource | None = None) -> Config:
    """Read ``path`` (file or directory, see :func:`read_yaml`), apply env overrides (``env``
    defaults to ``os.environ``) and validate (PostgreSQL parameters against
    ``catalogue(<postgres program>)``). Raises :class:`ConfigError` listing every error.

    ``PGHA_CONFIGURATION`` (else ``PATRONI_CONFIGURATION``), when set, is the whole YAML:
    ``path`` is then ignored (it may be ``None``) and no other env override applies.
    """
    env = os.environ if env is None else env
    for var in ("PGHA_CONFIGURATION", "PATRONI_CONFIGURATION"):
        if env.get(var):
            return _validate(_yaml_mapping(env[var], var), env, catalogue)
    if path is None:
        raise ConfigError([("", "no configuration file given and PGHA_CONFIGURATION is not set")])
    return parse_config(read_yaml(path), env, catalogue)


# ---------------------------------------------------------------------------- cluster access


def parse_cluster_access(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                         override: Mapping[str, Any] | None = None) -> ClusterAccess:
    """A :class:`ClusterAccess` (what the operator commands need) from a loaded mapping, which is
    not modified: env overrides (``env`` defaults to ``os.environ``) are applied, then only
    ``scope``, ``namespace``, ``restapi``, ``ctl`` and the DCS section are validated; a full
    agent configuration is accepted as well (its other sections are not looked at). At most one
    DCS section (``etcd3`` stored as ``etcd``); none is accepted here, the caller decides.
    ``override`` (e.g. from patronictl's ``--dcs-url``), applied after the environment, replaces
    every DCS section when it holds one and sets its top-level keys.
    Raises :class:`ConfigError` listing every problem with its key path."""
    env = os.environ if env is None else env
    raw = copy.deepcopy(dict(data))
    _apply_env(raw, env)
    if override:
        if any(k in override for k in (*DCS_KINDS, *_UNSUPPORTED_DCS)):
            for kind in (*DCS_KINDS, *_UNSUPPORTED_DCS):
                raw.pop(kind, None)
        raw.update(copy.deepcopy(dict(override)))
    present = _present_dcs(raw)
    errors = _dcs_count_errors(present) if len(present) > 1 else []
    errors += [(k, f"DCS {k} is not supported: use one of {', '.join(DCS_KINDS)}")
               for k in _UNSUPPORTED_DCS if raw.get(k) is not None and not present]
    return _validated(ClusterAccess, raw, errors, _store_etcd3_as_etcd(raw))


def load_cluster_access(path: str | os.PathLike[str] | None,
                        env: Mapping[str, str] | None = None) -> ClusterAccess:
    """:func:`parse_cluster_access` of the file or directory ``path`` (see :func:`read_yaml`);
    ``None`` means no file (environment only). Raises :class:`ConfigError`."""
    return parse_cluster_access({} if path is None else read_yaml(path), env)
