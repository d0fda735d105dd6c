"""Creating data: initdb, the cluster's roles, wiping a data directory (replicas are created by
:mod:`pgha.pg.replica_methods`)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgha.pg.cmd import clean_env, run
from pgha.pg.errors import PgError
from pgha.pg.probe import Connection, local_connection
from pgha.pg.settings import PgSettings, PgUser

log = logging.getLogger("pgha.pg")

INITDB_TIMEOUT = 300.0
ROLES_TIMEOUT = 30.0

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_RESERVED_INITDB = frozenset({"pgdata", "D", "username", "U", "pwfile", "pwprompt", "W"})
_AUTH_OPTIONS = frozenset({"auth", "A", "auth-local", "auth-host"})
_ROLE_OPTION = re.compile(r"^(?:[A-Za-z]+|connection limit -?[0-9]+)$", re.IGNORECASE)

REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


def initdb_options(options: tuple[str | Mapping[str, Any], ...]) -> list[str]:
    """Patroni-style initdb options -> argv: ``"data-checksums"`` -> ``--data-checksums``,
    ``{"encoding": "UTF8"}`` -> ``--encoding=UTF8``. Raises ValueError for malformed or
    reserved options (data directory, user and password are pgha's)."""
    out: list[str] = []
    pairs: list[tuple[str, Any]] = []
    for option in options:
        if isinstance(option, str):
            pairs.append((option.lstrip("-"), None))
        else:
            pairs.extend((str(k).lstrip("-"), v) for k, v in option.items())
    for name, value in pairs:
        if not _OPTION_NAME.match(name) or name in _RESERVED_INITDB:
            raise ValueError(f"initdb option not allowed: {name!r}")
        out.append(f"--{name}" if value is None else f"--{name}={value}")
    return out


def _has_auth(options: list[str]) -> bool:
    return any(opt[2:].split("=", 1)[0] in _AUTH_OPTIONS for opt in options)


async def initdb(settings: PgSettings) -> bool:
    """Run initdb into the (missing or empty) data directory. True on success.

    Without an auth option: ``scram-sha-256`` when the superuser has a password, else ``peer``
    on the local socket and ``reject`` for TCP (never ``trust``); pg_hba.conf is regenerated at
    start anyway.
    initdb removes its partial output itself on failure.
    """
    try:
        argv = [settings.binary("initdb"), "-D", str(settings.data_dir),
                "-U", settings.superuser.username, *initdb_options(settings.initdb_options)]
    except ValueError as exc:
        log.error("initdb not run: %s", exc)
        return False
    password = settings.superuser.password
    if not _has_auth(argv):
        argv += ["--auth-local=" + ("scram-sha-256" if password else "peer"),
                 "--auth-host=" + ("scram-sha-256" if password else "reject")]
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pgha-initdb-") as tmp:
        if password:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(password + "\n")
            os.chmod(pwfile, 0o600)
            argv.append(f"--pwfile={pwfile}")
        log.info("running initdb in %s", settings.data_dir)
        result = await run(argv, timeout=INITDB_TIMEOUT, env=clean_env())
    if not result.ok:
        log.error("initdb failed: %s", result.describe())
        return False
    return True


def _validate_role_options(user: PgUser) -> list[str]:
    for option in user.options:
        if not _ROLE_OPTION.match(option.strip()):
            raise PgError(f"role option not allowed for {user.username}: {option!r}")
    return [option.strip().upper() for option in user.options]


async def _ensure_role(conn: Connection, user: PgUser, attributes: list[str]) -> None:
    """CREATE the role, or ALTER it when it exists; the password only when one is set."""
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user.username,
                                 timeout=ROLES_TIMEOUT)
    ident = await conn.fetchval("SELECT quote_ident($1)", user.username, timeout=ROLES_TIMEOUT)
    parts = [("ALTER" if exists else "CREATE") + f" ROLE {ident}"]
    if attributes:
        parts.append("WITH " + " ".join(attributes))
    if user.password is not None:
        literal = await conn.fetchval("SELECT quote_literal($1)", user.password,
                                      timeout=ROLES_TIMEOUT)
        parts.append(("" if attributes else "WITH ") + f"PASSWORD {literal}")
    if len(parts) > 1 or not exists:
        await conn.execute(" ".join(parts), timeout=ROLES_TIMEOUT)


async def create_roles(settings: PgSettings) -> None:
    """Set the superuser's password and create (or update) the replication, rewind and
    bootstrap roles, in one transaction on the local primary. Idempotent. Raises PgError.

    Statements carrying passwords are kept out of the server log (log_statement = none).
    """
    users = [settings.superuser, settings.replication, settings.rewind,
             *settings.bootstrap_users.values()]
    try:
        for user in users:
            _validate_role_options(user)
        async with local_connection(settings) as conn, conn.transaction():
            for guc, value in (("log_statement", "none"), ("log_min_duration_statement", "-1"),
                               ("log_min_error_statement", "panic")):
                await conn.execute(f"SET LOCAL {guc} = '{value}'", timeout=ROLES_TIMEOUT)
            su = settings.superuser.username
            if settings.superuser.password is not None:
                await _ensure_role(conn, settings.superuser, [])
            if settings.replication.username != su:
                await _ensure_role(conn, settings.replication, ["LOGIN", "REPLICATION"])
            if settings.rewind.username != su:
                await _ensure_role(conn, settings.rewind, ["LOGIN"])
                ident = await conn.fetchval("SELECT quote_ident($1)", settings.rewind.username,
                                            timeout=ROLES_TIMEOUT)
                for function in REWIND_FUNCTIONS:
                    await conn.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {ident}",
                                       timeout=ROLES_TIMEOUT)
            for user in settings.bootstrap_users.values():
                await _ensure_role(conn, user, ["LOGIN", *_validate_role_options(user)])
    except PgError:
        raise
    except Exception as exc:
        raise PgError(f"creating roles failed: {exc}") from exc
    log.info("roles created: %s", ", ".join(sorted({u.username for u in users})))


def wipe_data_dir(data_dir: Path) -> None:
    """Remove everything inside ``data_dir`` (the directory itself stays: it may be a mount
    point). The directories that a symlinked ``pg_wal`` and the tablespace links in
    ``pg_tblspc`` point to are emptied too (they keep existing, as mount points may), so the
    clone that follows finds them empty, as pg_basebackup requires; the links are removed."""
    if not data_dir.exists():
        return
    targets = [data_dir / "pg_wal"]
    tblspc = data_dir / "pg_tblspc"
    if tblspc.is_dir() and not tblspc.is_symlink():
        targets.extend(tblspc.iterdir())
    for link in targets:
        if link.is_symlink() and link.resolve().is_dir():
            _empty_dir(link.resolve())
    _empty_dir(data_dir)


def _empty_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
