"""Reading and validating configurations: YAML files/directories, environment, error paths.

Contract: :func:`load_config` (file or directory, or ``PGHA_CONFIGURATION``/
``PATRONI_CONFIGURATION``), :func:`parse_config` (an already loaded mapping) and
:func:`parse_dynamic_config` return validated models or raise :class:`ConfigError` listing every
problem with its dotted key path (list items as ``[i]``). Before validation exactly one DCS
section is required (``etcd3`` is stored as ``etcd``) and an empty ``postgresql.bin_dir`` is
filled in. PostgreSQL parameters (``postgresql.parameters``, ``bootstrap.dcs.postgresql.
parameters``) are judged against the catalogue ``catalogue(bin_dir)`` returns (given by the
caller, which may run the server binary; without it, pgha's name list): unknown names are
dropped with a warning on the ``pgha.config`` logger, a value PostgreSQL would reject is an
error at ``...parameters.NAME``; renamed names are kept as given (they are translated for the
server's major when the parameters are merged). Inputs are never modified.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pgha.config.base import (
    _UNSUPPORTED_DCS,
    DCS_KINDS,
    ConfigError,
    _num_out,
    default_bin_dir,
)
from pgha.config.dynamic import DynamicConfig
from pgha.config.env import _apply_env
from pgha.config.models import Config, _dcs_count_errors
from pgha.config.pg_parameters import ParamCatalogue, judge_parameters

logger = logging.getLogger("pgha.config")

CatalogueSource = Callable[[str], ParamCatalogue]
"""``bin_dir -> catalogue`` of its server binary (:func:`pgha.pg.catalogue.load_catalogue`)."""


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


def _validate(raw: dict[str, Any], env: Mapping[str, str],
              catalogue: CatalogueSource | None = None) -> Config:
    for kind in DCS_KINDS:  # null = absent, as for every other key
        if kind in raw and raw[kind] is None:
            del raw[kind]
    present = [k for k in DCS_KINDS if k in raw]
    errors = _dcs_count_errors(present, [k for k in _UNSUPPORTED_DCS if raw.get(k) is not None])
    rename = {"etcd": "etcd3"} if "etcd3" in raw and "etcd" not in raw else {}
    if "etcd3" in raw:
        raw.setdefault("etcd", raw["etcd3"])
        del raw["etcd3"]
    pg = raw.get("postgresql")
    if isinstance(pg, dict) and not pg.get("bin_dir"):
        pg["bin_dir"] = default_bin_dir(env.get("PATH", os.environ.get("PATH")))
    cat = None
    if catalogue is not None:
        bin_dir = pg.get("bin_dir") if isinstance(pg, dict) else None
        cat = catalogue(str(bin_dir) if isinstance(bin_dir, str) and bin_dir else
                        default_bin_dir(env.get("PATH", os.environ.get("PATH"))))
    errors += _filter_params_at(raw, ("postgresql", "parameters"), cat)
    errors += _filter_params_at(raw, ("bootstrap", "dcs", "postgresql", "parameters"), cat)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(errors + _convert(exc, rename=rename)) from None
    if errors:
        raise ConfigError(errors)
    return config


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 catalogue: CatalogueSource | None = None) -> Config:
    """Apply env overrides (``env`` defaults to ``os.environ``; ``*_CONFIGURATION`` is not
    consulted) to a loaded mapping, which is not modified, and validate it (PostgreSQL
    parameters against ``catalogue(bin_dir)``, see the module docstring).

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    raw = copy.deepcopy(dict(data))
    _apply_env(raw, env)
    return _validate(raw, env, catalogue)


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
                env: Mapping[str, str] | None = None,
                catalogue: CatalogueSource | None = None) -> Config:
    """Read ``path`` (file or directory, see :func:`read_yaml`), apply env overrides (``env``
    defaults to ``os.environ``) and validate (PostgreSQL parameters against
    ``catalogue(bin_dir)``). Raises :class:`ConfigError` listing every error.

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
