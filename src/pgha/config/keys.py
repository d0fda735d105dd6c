"""Nothing is accepted silently: every configuration key is looked up in the registry.

Contract (pure functions over raw, not yet validated mappings; no IO):

- :func:`check_local` (the local YAML, ``bootstrap.dcs`` included) and :func:`check_dynamic`
  (the DCS ``config`` key, ``PATCH``/``PUT /config`` bodies) return ``(errors, warnings)``,
  each a list of ``(key path, message)``. A key of Patroni's documented configuration that
  pgha does not implement is a warning naming it and why (none when its value changes nothing,
  e.g. ``synchronous_mode: off``); a key unknown to both is an error with a "did you mean"
  hint. Free-form places are not looked into: custom tags, ``postgresql.parameters``, pg_hba
  lists, ``bootstrap.users``, ``slots``, ``ignore_slots``, the sections of custom bootstrap
  and replica methods (named by ``bootstrap.method``/``create_replica_methods``).
- :func:`check_env`: warnings for ``PATRONI_*`` variables pgha does not act on.
- :func:`check_values`: errors for values pgha refuses before validation (member names with
  ``/``, ``..`` or NUL, a wildcard ``listen`` without ``connect_address``, bad
  ``zookeeper.hosts``, ``auth_data``, ``set_acls``, ``key_password``, ``use_ssl``,
  ``verify``); :func:`file_keys` lists the certificate/key files named.
- :func:`too_deep`: the path of a mapping/list nested deeper than :data:`MAX_DEPTH`.
- :func:`reference_markdown`: docs/configuration.md, generated from the registry.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pgha.config.env import _ENV_PATHS, _ETCD_KEYS
from pgha.config.keys_table import DYNAMIC, IGNORED, LOCAL, NEVER, OK, PLANNED, Key
from pgha.config.zookeeper import check as zookeeper_check

Findings = list[tuple[str, str]]
MAX_DEPTH = 64
_WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::"})
PLACEHOLDER_NAME = "__patroni_strict_sync_replica_placeholder__"


def _index(keys: Iterable[Key]) -> dict[str, dict[str, Key]]:
    out: dict[str, dict[str, Key]] = {}
    for key in keys:
        out.setdefault(key.parent, {})[key.name] = key
    return out


_LOCAL, _DYNAMIC = _index(LOCAL), _index(DYNAMIC)


def normalise(value: Any) -> str:
    """A value as compared with :attr:`Key.inert`: booleans ``true``/``false``, lists joined
    with commas, text stripped and lower-cased."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(normalise(v) for v in value)
    return str(value).strip().lower()


def _inert(key: Key, value: Any) -> bool:
    if value is None or (isinstance(value, dict | list) and not value) or value == "":
        return True
    if callable(key.inert):
        return bool(key.inert(value))
    return normalise(value) in key.inert


def explain(key: Key) -> str:
    """Why ``key`` is not in effect, as one sentence part."""
    issue = f" (planned in issue {key.issue})" if key.issue else ""
    if key.status == PLANNED:
        return f"not supported yet{issue}, ignored: {key.note}"
    if key.status == NEVER:
        return f"not supported by pgha, ignored: {key.note}"
    return f"has no effect in pgha: {key.note}"


def _hint(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, [c for c in candidates if c != "*"], n=3,
                                      cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


class _Walk:
    def __init__(self, custom: set[tuple[str, str]]) -> None:
        self.errors: Findings = []
        self.warnings: Findings = []
        self.custom = custom

    def mapping(self, data: Mapping[Any, Any], index: dict[str, dict[str, Key]], parent: str,
                shown: str, local_root: bool = False) -> None:
        known = index.get(parent, {})
        for raw_name, value in data.items():
            name = str(raw_name)
            path = f"{shown}.{name}" if shown else name
            key = known.get(name) or known.get("*")
            if key is None:
                if (parent, name) in self.custom:
                    continue
                if local_root and name in _DYNAMIC[""]:
                    self.warnings.append((path, "a dynamic setting has no effect in the local "
                                          "configuration: put it under bootstrap.dcs or change "
                                          "it with pgha edit-config"))
                    continue
                self.errors.append((path, "unknown key" + _hint(name, known)))
                continue
            if isinstance(value, Mapping) and key.dynamic_section:
                self.mapping(value, _DYNAMIC, "", path)
            elif isinstance(value, Mapping) and not key.free and key.path in index:
                sub = _Walk(self.custom)  # a section warns once, when a key in it would
                sub.mapping(value, index, key.path, path)
                self.errors += sub.errors
                if key.status == OK:
                    self.warnings += sub.warnings
                elif sub.warnings:
                    self.warnings.append((path, explain(key)))
            elif key.status != OK and not _inert(key, value):
                self.warnings.append((path, explain(key)))


def _methods(data: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(parent, name) of the custom method sections named in ``data`` (free-form)."""
    out: set[tuple[str, str]] = set()
    boot = data.get("bootstrap")
    if isinstance(boot, Mapping) and isinstance(boot.get("method"), str):
        out.add(("bootstrap", boot["method"]))
    lists = [(data.get("postgresql") or {}, "create_replica_methods")]
    for dyn in (boot.get("dcs") if isinstance(boot, Mapping) else None, data):
        if isinstance(dyn, Mapping) and isinstance(dyn.get("standby_cluster"), Mapping):
            lists.append((dyn["standby_cluster"], "create_replica_methods"))
    for holder, name in lists:
        methods = holder.get(name) if isinstance(holder, Mapping) else None
        for method in methods if isinstance(methods, list) else []:
            if isinstance(method, str) and method != "basebackup":
                out.add(("postgresql", method))
    return out


def _unused_methods(data: Mapping[str, Any], parent: str,
                    named: set[tuple[str, str]]) -> list[str]:
    """Sections of ``parent`` (``bootstrap`` or ``postgresql``) that look like a custom
    method (a mapping with a ``command``) but that no method setting in ``data`` names:
    Patroni ignores them (and a standby cluster's ``create_replica_methods``, set later in the
    DCS, may name a ``postgresql`` one)."""
    section = data.get(parent)
    if not isinstance(section, Mapping):
        return []
    return [str(name) for name, value in section.items()
            if isinstance(value, Mapping) and "command" in value
            and (parent, str(name)) not in named and str(name) not in _LOCAL[parent]]


def check_local(data: Mapping[str, Any]) -> tuple[Findings, Findings]:
    """``(errors, warnings)`` for the keys of a local YAML mapping (see the module doc); a
    custom method section that no method setting names is a warning."""
    named = _methods(data)
    boot_unused = _unused_methods(data, "bootstrap", named)
    pg_unused = _unused_methods(data, "postgresql", named)
    walk = _Walk(named | {("bootstrap", n) for n in boot_unused}
                 | {("postgresql", n) for n in pg_unused})
    walk.warnings += [(f"bootstrap.{name}", "not used: bootstrap.method does not name this "
                       "custom method") for name in boot_unused]
    walk.warnings += [(f"postgresql.{name}", "not used unless a create_replica_methods list "
                       "names this custom method") for name in pg_unused]
    walk.mapping(data, _LOCAL, "", "", local_root=True)
    bootstrap = data.get("bootstrap")
    dcs = bootstrap.get("dcs") if isinstance(bootstrap, Mapping) else None
    if isinstance(dcs, Mapping) and _sync_mode_on(dcs):
        walk.warnings += _managed_sync_names(data.get("postgresql"), "postgresql")
    return walk.errors, walk.warnings


def check_dynamic(data: Mapping[str, Any], prefix: str = "") -> tuple[Findings, Findings]:
    """``(errors, warnings)`` for a dynamic configuration; paths start with ``prefix``."""
    walk = _Walk(set())
    walk.mapping(data, _DYNAMIC, "", prefix)
    if _sync_mode_on(data):
        walk.warnings += _managed_sync_names(data.get("postgresql"),
                                             f"{prefix}.postgresql" if prefix else "postgresql")
    return walk.errors, walk.warnings


def _sync_mode_on(dynamic: Mapping[str, Any]) -> bool:
    mode = dynamic.get("synchronous_mode", False)
    return mode is True or (isinstance(mode, str) and mode.strip().lower() in (
        "on", "true", "yes", "quorum"))


def _managed_sync_names(section: Any, path: str) -> Findings:
    """A ``synchronous_standby_names`` parameter while synchronous mode is on: pgha writes
    its own value (named in a warning, never silently dropped)."""
    params = section.get("parameters") if isinstance(section, Mapping) else None
    if not isinstance(params, Mapping):
        return []
    return [(f"{path}.parameters.{name}", "ignored while synchronous_mode is on: pgha sets "
             "it from the synchronous standbys it chooses")
            for name in params if str(name).lower() == "synchronous_standby_names"]


# ------------------------------------------------------------------------- environment

def env_name(key: Key) -> str | None:
    """The ``PATRONI_*`` variable Patroni reads for ``key``, or None."""
    if not key.env:
        return None
    parts = key.path.split(".")
    if parts[:2] == ["postgresql", "authentication"]:
        parts = parts[2:]
    elif parts[1:2] == ["authentication"]:
        parts = [parts[0], *parts[2:]]
    return "PATRONI_" + "_".join(parts).upper()


def env_table() -> list[tuple[str, Key | None]]:
    """Every documented ``PATRONI_*`` variable and its key (None: not a single key)."""
    rows: list[tuple[str, Key | None]] = [("PATRONI_CONFIGURATION", None)]
    rows += [(f"PATRONI_POSTGRESQL_BIN_{b.upper()}", k) for k in LOCAL
             if k.parent == "postgresql.bin_name" for b in [k.name]]
    rows += [(name, k) for k in LOCAL if (name := env_name(k))]
    rows += [(f"PATRONI_{s.upper()}_{k.upper()}", _LOCAL[""][s]) for s, keys in (
        ("exhibitor", ("hosts", "port")), ("citus", ("group", "database")),
        ("raft", ("self_addr", "bind_addr", "partner_addrs", "data_dir", "password")),
        ("kubernetes", ("bypass_api_service", "namespace", "labels", "scope_label",
                        "role_label", "leader_label_value", "follower_label_value",
                        "standby_leader_label_value", "tmp_role_label", "use_endpoints",
                        "pod_ip", "ports", "cacert", "retriable_http_codes",
                        "bootstrap_labels"))) for k in keys]
    return rows


def env_read_by_pgha(var: str) -> bool:
    """Whether pgha's environment overrides (:mod:`pgha.config.env`) read ``var``."""
    suffix = var.removeprefix("PATRONI_")
    etcd = {f"{api}_{k.upper()}" for api in ("ETCD", "ETCD3") for k in _ETCD_KEYS}
    return suffix in _ENV_PATHS or suffix in etcd or suffix == "CONFIGURATION"


def check_env(env: Mapping[str, str]) -> Findings:
    """Warnings for set ``PATRONI_*`` variables that pgha does not act on (``PGHA_*`` ones
    are pgha's own namespace and not checked)."""
    table = dict(env_table())
    out: Findings = []
    for var in sorted(v for v in env if v.startswith("PATRONI_") and env[v]):
        if var not in table:
            out.append((var, "unknown variable, ignored" + _hint(var, table)))
        elif (key := table[var]) is not None and key.status != OK:
            out.append((var, explain(key)))
        elif not env_read_by_pgha(var):
            out.append((var, "not read from the environment by pgha, ignored: set "
                             f"{key.path if key else 'it'} in the YAML"))
    return out


# ------------------------------------------------------------------------- values

def _host_ports(text: str) -> str | None:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), "2181"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{text!r} is not host[:port]"
    return None


def check_values(data: Mapping[str, Any]) -> Findings:
    """Errors for values refused before model validation (see the module doc)."""
    out: Findings = []
    name = data.get("name")
    if isinstance(name, str):
        if "/" in name or "\x00" in name or ".." in name:
            out.append(("name", "must not contain '/', '..' or a NUL character"))
        elif name == PLACEHOLDER_NAME:
            out.append(("name", f"{PLACEHOLDER_NAME} is reserved"))
    for section in ("restapi", "postgresql"):
        sec = data.get(section)
        if not isinstance(sec, Mapping):
            continue
        listen = sec.get("listen")
        if isinstance(listen, str) and not sec.get("connect_address"):
            host = listen.strip().rpartition(":")[0].split(",")[0].strip().strip("[]")
            if ":" in listen and host in _WILDCARD_HOSTS:
                out.append((f"{section}.listen", f"{listen!r} listens on every address: "
                            f"{section}.connect_address must say where others connect"))
    zk = data.get("zookeeper")
    if isinstance(zk, Mapping):
        out += zookeeper_check(zk)
    if isinstance(zk, Mapping) and "hosts" in zk:
        hosts = zk["hosts"]
        items = hosts.split(",") if isinstance(hosts, str) else hosts
        if not isinstance(items, list) or not [i for i in items if str(i).strip()]:
            out.append(("zookeeper.hosts", "expected a list or a comma-separated string of "
                        "host[:port]"))
        else:
            out += [(f"zookeeper.hosts[{i}]", err) for i, item in enumerate(items)
                    if (err := _host_ports(str(item)))]
    return out


_FILES = ("restapi.certfile", "restapi.keyfile", "restapi.cafile", "ctl.cacert",
          "ctl.certfile", "ctl.keyfile", "etcd.cacert", "etcd.cert", "etcd.key",
          "etcd3.cacert", "etcd3.cert", "etcd3.key", "consul.cacert", "consul.cert",
          "consul.key", "zookeeper.cacert", "zookeeper.cert", "zookeeper.key",
          *(f"postgresql.authentication.{r}.{o}" for r in ("superuser", "replication", "rewind")
            for o in ("sslcert", "sslkey", "sslrootcert", "sslcrl")))


def file_keys(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, file name)`` of every certificate/key file the configuration names
    (``sslrootcert: system`` excepted)."""
    out = []
    for path in _FILES:
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, str) and node and node != "system":
            out.append((path, node))
    return out


def too_deep(data: Any, limit: int = MAX_DEPTH) -> str | None:
    """The dotted path where ``data`` nests mappings/lists deeper than ``limit``, else None.
    Iterative, so any depth can be checked; a node shared through YAML aliases is looked into
    again only when reached deeper (no blow-up on "billion laughs"; a cycle is too deep)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    seen: dict[int, int] = {}  # id of a container -> the deepest level it was looked into at
    while stack:
        node, path, depth = stack.pop()
        if depth > limit:
            return path or "<top>"
        if isinstance(node, Mapping | list):
            if seen.get(id(node), -1) >= depth:
                continue
            seen[id(node)] = depth
        if isinstance(node, Mapping):
            stack += [(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
    return None


# ------------------------------------------------------------------------- reference

_STATUS = {OK: "implemented", PLANNED: "not supported yet", NEVER: "not supported",
           IGNORED: "no effect"}


def status_text(key: Key) -> str:
    """The status column of the reference: ``implemented``, ``not supported yet (issue N)``..."""
    text = _STATUS[key.status] + (f" (issue {key.issue})" if key.issue else "")
    return f"{text}: {key.note}" if key.note else text


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def _table(keys: Iterable[Key], dynamic: bool) -> list[str]:
    lines = ["| Key | Default | Dynamic | Environment | Status in pgha |",
             "|---|---|---|---|---|"]
    for key in keys:
        env = "" if dynamic else (env_name(key) or "")
        if env and not env_read_by_pgha(env) and key.status == OK:
            env += " (not read by pgha)"
        default = f"`{_cell(key.default)}`" if key.default else ""
        lines.append(f"| `{key.path}` | {default} | {'yes' if dynamic else 'no'} | "
                     f"{_cell(env)} | {_cell(status_text(key))} |")
    return lines


def reference_markdown() -> str:
    """The text of docs/configuration.md (regenerate with ``scripts/config-reference``)."""
    env_rows = ["| Variable | Status in pgha |", "|---|---|"]
    for var, key in env_table():
        if key is None:
            text = "implemented: the whole YAML (PGHA_CONFIGURATION too)"
        elif key.status != OK:
            text = status_text(key)
        elif env_read_by_pgha(var):
            text = f"implemented: sets `{key.path}`"
        else:
            text = f"not read from the environment by pgha: set `{key.path}` in the YAML"
        env_rows.append(f"| `{var}` | {_cell(text)} |")
    parts = [
        "# Configuration reference",
        "",
        "<!-- Generated from src/pgha/config/keys_table.py by scripts/config-reference; "
        "do not edit by hand. -->",
        "",
        "Every key of Patroni's documented configuration and what pgha does with it.",
        "`pgha validate-config` and `pgha run` look up every key of the local YAML and of",
        "`bootstrap.dcs`, and every member looks up the keys of the dynamic configuration",
        "(DCS `config`, `PATCH /config`):",
        "",
        "- **implemented**: pgha acts on it;",
        "- **not supported yet (issue N)** / **not supported** / **no effect**: accepted and",
        "  ignored, with a warning naming the key and why (exit status 0). No warning is",
        "  given when the value changes nothing (for example `synchronous_mode: off`);",
        "- a key that is neither Patroni's nor pgha's is an error with a \"did you mean\"",
        "  hint (`validate-config` and `run` exit with status 2; `PATCH /config` answers 400;",
        "  in the DCS `config`, written by someone else, it is only a warning).",
        "",
        "Free-form places are not checked: custom tags, `postgresql.parameters` (PostgreSQL",
        "parameters are checked by name on their own), pg_hba lists, `bootstrap.users`,",
        "`slots`, `ignore_slots` and the sections of custom bootstrap and replica methods.",
        "`PGHA_<KEY>` variables are read like the `PATRONI_<KEY>` ones and win over them.",
        "",
        "## Local configuration (YAML)",
        "",
        *_table(LOCAL, False),
        "",
        "## Dynamic configuration (`bootstrap.dcs`, DCS `config`, `pgha edit-config`)",
        "",
        *_table(DYNAMIC, True),
        "",
        "## Environment variables",
        "",
        *env_rows,
        "",
    ]
    return "\n".join(parts)
