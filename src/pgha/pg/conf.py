"""Configuration files pgha owns: postgresql.conf, pg_hba.conf, recovery settings, pgpass.

All functions here are synchronous file IO on small files; async callers run them in a thread
(``asyncio.to_thread``). Every file is replaced atomically (temporary file, fsync, rename).

postgresql.conf is generated: a header, ``include 'postgresql.base.conf'`` (initdb's original
file, renamed once) or of the user's ``custom_conf``, the managed settings, the user's
parameters, then the recovery settings. It, the base file, pg_hba.conf and pg_ident.conf live in
``PgSettings.config_dir`` (the data directory unless ``config_dir`` says otherwise; see
:mod:`pgha.pg.conffiles`); the signal files always in the data directory.
Precedence stays PostgreSQL's: base < postgresql.conf < postgresql.auto.conf < command line.
The header also records the role and upstream the file was written for, so a restarted agent
that adopts a running postmaster knows them again (:func:`read_managed_state`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pgha.core.actions import Upstream, slot_name
from pgha.core.standby import REMOTE
from pgha.pg.conffiles import BASE_CONF as BASE_CONF  # re-exported
from pgha.pg.conffiles import CONF as CONF
from pgha.pg.conffiles import (
    HBA,
    IDENT,
    prepare_base_conf,
    read_text,
    render_pg_hba,
    render_pg_ident,
)
from pgha.pg.conffiles import HEADER as HEADER
from pgha.pg.conffiles import atomic_write as atomic_write
from pgha.pg.conffiles import check_custom_conf as check_custom_conf
from pgha.pg.connparams import check_key_file, conninfo, primary_conninfo_params, program_conninfo
from pgha.pg.connparams import quote_conninfo as quote_conninfo  # re-exported
from pgha.pg.settings import PgSettings, PgUser, parse_conn_url

log = logging.getLogger("pgha.pg")

STANDBY_SIGNAL = "standby.signal"
RECOVERY_SIGNAL = "recovery.signal"

_ROLE_TAG = "# pgha-role: "
_UPSTREAM_TAG = "# pgha-upstream: "
_SYNC_TAG = "# pgha-synchronous-standby-names: "

_GUC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

# Owned by pgha; a user value for these is ignored (logged).
_FORCED = frozenset({
    "listen_addresses", "port", "unix_socket_directories", "cluster_name", "hot_standby",
    "wal_log_hints", "primary_conninfo", "primary_slot_name", "recovery_target_timeline",
    "config_file", "data_directory",
})
# (minimum, default): a value under the minimum is not used, the default is (Patroni's rule;
# pgha.config.pg_parameters.AGENT_MINIMUMS judges and reports it before it gets here)
_FLOORED = {"max_wal_senders": (3, 10), "max_replication_slots": (4, 10)}
_SLOT_RAISED = frozenset({"wal_level", "max_replication_slots"})  # managed, raised for slots


def quote_guc(value: Any) -> str:
    """A value in postgresql.conf syntax: on/off for bools, bare numbers, quoted strings."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if "\n" in text or "\0" in text:
        raise ValueError("configuration values cannot contain newlines or NUL")
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def primary_conninfo(settings: PgSettings, upstream: Upstream) -> str:
    """Connection string a replica uses to stream from ``upstream`` (replication user and its
    libpq options, password from the pgpass file, application_name = our member name; see
    :func:`pgha.pg.connparams.primary_conninfo_params`)."""
    host, port = parse_conn_url(upstream.conn_url)
    check_key_file(settings.replication, "replication")
    return conninfo(primary_conninfo_params(settings, host, port))


def _normal(value: Any) -> str:
    """Comparable spelling of a GUC value (booleans as on/off)."""
    text = str(value).strip().lower()
    if value is True or text in ("true", "yes", "1"):
        return "on"
    if value is False or text in ("false", "no", "0"):
        return "off"
    return text


def _user_wal_level(value: Any) -> str:
    return "logical" if str(value).lower() == "logical" else "replica"


def _floor(name: str, value: Any) -> int:
    """``value`` as an int; the default when it is unset (None), not an integer or under the
    minimum (:data:`_FLOORED`)."""
    minimum, default = _FLOORED[name]
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        log.warning("ignoring non-integer %s = %r", name, value)
        return default
    return number if number >= minimum else default


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


_said: set[str] = set()


def _once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time it is seen (these functions run on every rewrite)."""
    if message not in _said:
        _said.add(message)
        log.log(level, "%s", message)

# Recovery settings pgha writes itself: never taken from ``recovery_conf``.
RECOVERY_MANAGED = frozenset({"primary_conninfo", "primary_slot_name",
                              "recovery_target_timeline", "standby_mode"})


def slot_overrides(params: Mapping[str, Any],
                   slot_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The values ``slot_parameters`` (what the slot plan needs) change in the user's
    ``params``: ``hot_standby_feedback`` turned on, ``wal_level`` raised to ``logical``,
    ``max_replication_slots`` raised to at least the number given (never lowered below the
    user's value or pgha's floor); any other name is set as given. Empty when the user's
    values already suffice. Pure (no logging)."""
    out: dict[str, Any] = {}
    for name, wanted in slot_parameters.items():
        key = str(name).lower()
        current = params.get(key)
        if key == "hot_standby_feedback":
            if _normal(wanted) == "on" and (current is None or _normal(current) != "on"):
                out[key] = True
        elif key == "wal_level":
            if _user_wal_level(wanted) == "logical" \
                    and _user_wal_level(current or "replica") != "logical":
                out[key] = "logical"
        elif key == "max_replication_slots":
            need = _as_int(wanted)
            have = _floor("max_replication_slots", _as_int(current))
            if need is not None and need > have:
                out[key] = need
        elif wanted is not None and (current is None or _normal(current) != _normal(wanted)):
            out[key] = wanted
    return out


def effective_parameters(settings: PgSettings) -> dict[str, Any]:
    """The user's parameters with :func:`slot_overrides` applied (what decides whether a
    change needs a restart)."""
    params = dict(settings.parameters)
    params.update(slot_overrides(params, settings.slot_parameters))
    return params


def recovery_parameters(settings: PgSettings, reserved: Collection[str] = ()) -> dict[str, Any]:
    """``settings.recovery_conf`` as written on a replica (names lower-cased). Left out, with a
    warning once: the settings pgha manages (:data:`RECOVERY_MANAGED`, ``reserved``), invalid
    names, and values that are None or contain a newline."""
    out: dict[str, Any] = {}
    for name, value in settings.recovery_conf.items():
        key = str(name).lower()
        where = f"postgresql.recovery_conf.{name}"
        if key in RECOVERY_MANAGED or key in reserved or key in _FORCED:
            _once(f"{where} is managed by pgha; the configured value is ignored")
        elif not _GUC_NAME.match(key) or value is None:
            _once(f"{where}: not a parameter name or no value; ignored")
        elif isinstance(value, str) and any(c in value for c in "\n\r\0"):
            _once(f"{where}: the value contains a newline; ignored")
        else:
            out[key] = value
    return out


def managed_parameters(settings: PgSettings, role: str,
                       upstream: Upstream | None) -> dict[str, Any]:
    """All GUCs pgha writes into postgresql.conf, in file order (managed, user, recovery).

    What the slot plan needs (``settings.slot_parameters``, :func:`slot_overrides`) wins over
    the user's values (each change logged once). A replica gets ``recovery_conf``; a
    ``nostream`` replica gets no ``primary_conninfo`` nor ``primary_slot_name`` whatever its
    upstream."""
    user = dict(settings.parameters)
    out: dict[str, Any] = {
        "listen_addresses": settings.listen_host,
        "port": settings.port,
        "unix_socket_directories": str(settings.socket_dir),
        "cluster_name": settings.scope,
        "hot_standby": True,
        "wal_level": _user_wal_level(user.get("wal_level", "replica")),
        "max_wal_senders": _floor("max_wal_senders", user.get("max_wal_senders")),
        "max_replication_slots": _floor("max_replication_slots",
                                        user.get("max_replication_slots")),
        "wal_log_hints": True,
    }
    if "hba_file" not in user:
        out["hba_file"] = str(settings.config_dir / HBA)
    if "ident_file" not in user:
        out["ident_file"] = str(settings.config_dir / IDENT)
    if settings.conf_dir is not None:  # wins over a data_directory of the base configuration
        out["data_directory"] = os.path.abspath(settings.data_dir)
    reserved = frozenset(out)
    for name, value in user.items():
        if name in out or name in _FORCED:
            if name in _FORCED and _normal(value) != _normal(out.get(name)):
                log.warning("parameter %s is managed by pgha; the configured value is ignored",
                            name)
            continue
        if name == "synchronous_standby_names" and settings.synchronous_standby_names is not None:
            continue  # synchronous replication owns it (written below)
        if not _GUC_NAME.match(name) or value is None:
            log.warning("ignoring invalid parameter %r", name)
            continue
        if isinstance(value, str) and any(c in value for c in "\n\r\0"):
            log.warning("ignoring parameter %s: its value contains a newline", name)
            continue
        out[name] = value
    for name, value in slot_overrides(user, settings.slot_parameters).items():
        if name in _FORCED or (name in reserved and name not in _SLOT_RAISED):
            continue
        _once(f"{name} = {quote_guc(value)}: needed by the replication slots (configured: "
              f"{user.get(name, 'default')})", logging.INFO)
        out[name] = value
    if settings.synchronous_standby_names is not None:
        out["synchronous_standby_names"] = settings.synchronous_standby_names
    if role == "replica":
        out.update(recovery_parameters(settings, reserved))
        if upstream is not None:  # a standby cluster's remote: its own recovery settings
            out.update(upstream.recovery)
        stream = upstream is not None and bool(upstream.conn_url) and not settings.nostream
        if settings.nostream and "restore_command" not in out:
            _once("tags.nostream is set but no restore_command is configured: this replica "
                  "receives no WAL")
        out["primary_conninfo"] = primary_conninfo(settings, upstream) \
            if stream and upstream is not None else ""
        if stream and upstream is not None and upstream.slot:
            out["primary_slot_name"] = upstream.slot  # a standby cluster's primary_slot_name
        elif stream and settings.use_slots and upstream is not None \
                and upstream.name != REMOTE:
            out["primary_slot_name"] = slot_name(settings.name)
        else:
            out["primary_slot_name"] = ""
        out["recovery_target_timeline"] = "latest"
    else:
        out["primary_conninfo"] = ""
        out["primary_slot_name"] = ""
        # PostgreSQL's default, written for both roles: dropping it from the file on
        # promotion would make the server report a pending restart for an unchanged value
        out["recovery_target_timeline"] = "latest"
    return out


def effective_wal_level(settings: PgSettings) -> str:
    """The ``wal_level`` :func:`managed_parameters` writes (no logging)."""
    params = effective_parameters(settings)
    return _user_wal_level(params.get("wal_level", "replica"))


def render_postgresql_conf(settings: PgSettings, role: str, upstream: Upstream | None) -> str:
    lines = [HEADER, f"{_ROLE_TAG}{role}\n"]
    if upstream is not None:
        blob = json.dumps({"name": upstream.name, "conn_url": upstream.conn_url,
                           "slot": upstream.slot, "recovery": list(upstream.recovery)})
        lines.append(f"{_UPSTREAM_TAG}{blob}\n")
    if settings.synchronous_standby_names is not None:
        lines.append(f"{_SYNC_TAG}{json.dumps(settings.synchronous_standby_names)}\n")
    base = settings.base_conf
    lines.append(f"\ninclude {quote_guc(str(base) if base else BASE_CONF)}\n\n")
    for name, value in managed_parameters(settings, role, upstream).items():
        lines.append(f"{name} = {quote_guc(value)}\n")
    return "".join(lines)


def read_managed_sync_names(config_dir: Path) -> str | None:
    """The ``synchronous_standby_names`` synchronous replication last wrote into our
    postgresql.conf (None: not ours, or the user's value), so that a restarted agent keeps
    making PostgreSQL wait for the standbys the ``sync`` key names."""
    try:
        text = (config_dir / CONF).read_text(errors="replace")
    except OSError:
        return None
    if not text.startswith(HEADER):
        return None
    for line in text.splitlines():
        if line.startswith(_SYNC_TAG):
            try:
                value = json.loads(line[len(_SYNC_TAG):])
            except ValueError:
                return None
            return value if isinstance(value, str) else None
        if not line.startswith("#"):
            break
    return None


def read_managed_state(config_dir: Path) -> tuple[str, Upstream | None] | None:
    """``(role, upstream)`` recorded in our generated postgresql.conf (in ``config_dir``);
    None if not ours."""
    try:
        text = (config_dir / CONF).read_text(errors="replace")
    except OSError:
        return None
    if not text.startswith(HEADER):
        return None
    role: str | None = None
    upstream: Upstream | None = None
    for line in text.splitlines():
        if line.startswith(_ROLE_TAG):
            role = line[len(_ROLE_TAG):].strip()
        elif line.startswith(_UPSTREAM_TAG):
            try:
                blob = json.loads(line[len(_UPSTREAM_TAG):])
                slot = blob.get("slot")
                recovery = tuple((str(k), str(v)) for k, v in blob.get("recovery") or ())
                upstream = Upstream(str(blob["name"]), str(blob["conn_url"]),
                                    str(slot) if slot else None, recovery)
            except (ValueError, KeyError, TypeError):
                upstream = None
        elif not line.startswith("#"):
            break
    return (role, upstream) if role in ("primary", "replica") else None


def _pgpass_field(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def render_pgpass(settings: PgSettings) -> str:
    """``*:*:*:user:password`` for each of replication, superuser and rewind users that has a
    password (first entry for a user name wins, as in libpq)."""
    seen: set[str] = set()
    out: list[str] = []
    for user in (settings.replication, settings.superuser, settings.rewind):
        if user.password is None or user.username in seen:
            continue
        seen.add(user.username)
        out.append(f"*:*:*:{_pgpass_field(user.username)}:{_pgpass_field(user.password)}\n")
    return "".join(out)


def write_pgpass(settings: PgSettings) -> None:
    atomic_write(settings.pgpass, render_pgpass(settings), 0o600)


async def source_conninfo(settings: PgSettings, user: PgUser, role: str, source: Upstream,
                          what: str, **extra: str) -> str | None:
    """The connection string a program (pg_basebackup, pg_rewind) reaches ``source`` with as
    ``user`` (:func:`pgha.pg.connparams.program_conninfo`), after the pgpass file it reads is
    written; None (logged, naming ``what``) when ``source`` has no address or the role's key
    file would be refused."""
    try:
        host, port = parse_conn_url(source.conn_url)
    except ValueError as exc:
        log.error("cannot %s from %s: %s", what, source.name, exc)
        return None
    if check_key_file(user, role):
        return None
    await asyncio.to_thread(write_pgpass, settings)
    return program_conninfo(settings, user, role, host, port, **extra)


def write_config(settings: PgSettings, role: str, upstream: Upstream | None) -> None:
    """Write every managed file for ``role`` ("primary" | "replica"), ready to start.

    Order: pgpass, base conf, pg_hba/pg_ident, postgresql.conf, then the signal files
    (replica: standby.signal present; primary: standby.signal and recovery.signal removed).
    Raises OSError/ValueError on failure; files already written stay written.
    """
    if role not in ("primary", "replica"):
        raise ValueError(f"unknown role {role!r}")
    data = settings.data_dir
    write_pgpass(settings)
    if not settings.socket_dir.exists():
        settings.socket_dir.mkdir(mode=0o700, parents=True)
    prepare_base_conf(settings)
    for name, text in _auth_files(settings):
        atomic_write(settings.config_dir / name, text)
    atomic_write(settings.config_dir / CONF, render_postgresql_conf(settings, role, upstream))
    if role == "replica":
        if not (data / STANDBY_SIGNAL).exists():
            atomic_write(data / STANDBY_SIGNAL, "")
    else:
        for name in (STANDBY_SIGNAL, RECOVERY_SIGNAL):
            try:
                (data / name).unlink()
            except FileNotFoundError:
                pass


def _auth_files(settings: PgSettings) -> list[tuple[str, str]]:
    """``(file name, text)`` of pg_hba.conf and pg_ident.conf where pgha writes them
    (:mod:`pgha.pg.conffiles`)."""
    out: list[tuple[str, str]] = []
    if "hba_file" not in settings.parameters:
        out.append((HBA, render_pg_hba(settings)))
    ident = render_pg_ident(settings, read_text(settings.config_dir / IDENT))
    if ident is not None:
        out.append((IDENT, ident))
    return out


def write_config_if_changed(settings: PgSettings, role: str,
                            upstream: Upstream | None) -> list[str]:
    """Rewrite postgresql.conf, pg_hba.conf and pg_ident.conf (those pgha writes, see
    :mod:`pgha.pg.conffiles`) for ``role`` ("primary" | "replica") and ``upstream`` where their
    content differs from the files on disk.

    Returns the names of the files rewritten (empty: everything was current). pgpass, the base
    configuration and the signal files are not touched: this is for a server already set up by
    :func:`write_config`, except that a missing ``custom_conf`` raises ValueError
    (:func:`check_custom_conf`) before anything is written. Raises OSError/ValueError (a file
    already rewritten stays rewritten).
    """
    if role not in ("primary", "replica"):
        raise ValueError(f"unknown role {role!r}")
    check_custom_conf(settings)
    wanted = _auth_files(settings)
    wanted.append((CONF, render_postgresql_conf(settings, role, upstream)))
    changed: list[str] = []
    for name, text in wanted:
        if read_text(settings.config_dir / name) != text:
            atomic_write(settings.config_dir / name, text)
            changed.append(name)
    return changed
