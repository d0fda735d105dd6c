"""The libpq options of the three roles and how every connection pgha makes or configures uses
them.

``postgresql.authentication.<role>`` may carry libpq options besides username and password
(:data:`LIBPQ_OPTIONS`). Who uses which role:

* replication: ``primary_conninfo`` and ``pg_basebackup`` (a connection string, ``-d``);
* rewind: ``pg_rewind --source-server``;
* superuser: the agent's own asyncpg connections, to its server and to other members (timeline
  history and CHECKPOINT before a rewind, slots, received positions), and ``post_bootstrap``.

Local superuser connections use the unix socket when ``use_unix_socket`` is set, else TCP to
``localhost`` (when PostgreSQL listens on a wildcard or loopback address) or the first listen
address, as Patroni does. libpq never uses TLS over a unix socket; neither do we.

Secrets stay out of connection strings and command lines: programs read passwords from the
pgpass file (``passfile``/``PGPASSFILE``) and ``sslpassword`` from a private service file
(``PGSERVICEFILE``, see :func:`client_files`). ``primary_conninfo`` lives in postgresql.conf
(mode 0600), where libpq needs it. The user's key and certificate files are used in place:
never copied, never chmod-ed; a key file libpq would refuse (group or world access) is
reported naming the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pgha.pg.settings import PgSettings, PgUser

log = logging.getLogger("pgha.pg")

LIBPQ_OPTIONS: tuple[str, ...] = (
    "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl", "sslcrldir",
    "sslnegotiation", "gssencmode", "channel_binding",
)
FILE_OPTIONS = frozenset({"sslkey", "sslcert", "sslrootcert", "sslcrl", "sslcrldir"})
SECRET_OPTIONS = frozenset({"sslpassword"})
# libpq major release that introduced each option (older ones reject the keyword)
MIN_LIBPQ_MAJOR: Mapping[str, int] = {
    "gssencmode": 12, "channel_binding": 13, "sslpassword": 13, "sslcrldir": 14,
    "sslnegotiation": 17,
}
# what asyncpg (the agent's driver) understands; for the others, the value whose behaviour
# asyncpg has anyway (it never does GSS encryption nor channel binding)
_ASYNCPG_OPTIONS = frozenset({"sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert",
                              "sslcrl", "sslnegotiation"})
_ASYNCPG_IMPLIED = {"gssencmode": "disable", "channel_binding": "disable"}
SERVICE = "pgha"
_LOCAL_LISTEN = frozenset({"*", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"})

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


# ---------------------------------------------------------------------------- quoting
def quote_conninfo(value: str) -> str:
    """A libpq connection-string value, quoted when needed."""
    if value and re.fullmatch(r"[A-Za-z0-9_.,:/@+\-\[\]]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(params: Mapping[str, str | int]) -> str:
    """``key=value`` pairs joined by spaces, values quoted for libpq."""
    return " ".join(f"{k}={quote_conninfo(str(v))}" for k, v in params.items())


# ---------------------------------------------------------------- option bookkeeping
@functools.cache
def libpq_major() -> int | None:
    """Major version of the libpq the PostgreSQL programs load (``PQlibVersion``); None when
    it cannot be loaded (then no option is withheld)."""
    name = ctypes.util.find_library("pq")
    if not name:
        return None
    try:
        version = int(ctypes.CDLL(name).PQlibVersion())
    except (OSError, AttributeError, ValueError):
        return None
    return version // 10000 if version >= 100000 else version // 100


def libpq_options(user: PgUser, role: str) -> dict[str, str]:
    """The user's options of ``role`` that the installed libpq knows, in :data:`LIBPQ_OPTIONS`
    order. One too new for it is left out with a warning (libpq would refuse the whole
    connection string)."""
    major = libpq_major()
    out: dict[str, str] = {}
    given = dict(user.libpq)
    for name in LIBPQ_OPTIONS:
        if name not in given:
            continue
        if major is not None and major < MIN_LIBPQ_MAJOR.get(name, 0):
            _warn_once(f"postgresql.authentication.{role}.{name} is ignored: the installed "
                       f"libpq ({major}) does not know it (needs {MIN_LIBPQ_MAJOR[name]} or later)")
            continue
        out[name] = given[name]
    return out


def asyncpg_unsupported(user: PgUser) -> list[str]:
    """``name=value`` of the options asyncpg cannot honour (the agent's own connections then
    behave as if they were absent)."""
    return [f"{name}={value}" for name, value in user.libpq
            if name not in _ASYNCPG_OPTIONS and _ASYNCPG_IMPLIED.get(name) != value]


def key_file_problem(path: str) -> str | None:
    """Why libpq would refuse ``path`` as a private key file, or None. libpq refuses a key that
    is not a regular file, or that has group or world access (a root-owned key may be group
    readable)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"private key file {path!r} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"private key file {path!r} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o640 if st.st_uid == 0 else 0o600
    if mode & ~allowed & 0o077:
        return (f"private key file {path!r} has group or world access (mode {mode:04o}); "
                f"libpq requires 0600 or less (0640 when owned by root)")
    return None


def check_key_file(user: PgUser, role: str) -> str | None:
    """:func:`key_file_problem` of the role's ``sslkey``, prefixed with its key path; logged as
    an error once per distinct problem."""
    key = dict(user.libpq).get("sslkey")
    problem = key_file_problem(key) if key else None
    if problem is None:
        return None
    message = f"postgresql.authentication.{role}.sslkey: {problem}"
    if message not in _warned:
        _warned.add(message)
        log.error("%s", message)
    return message


# ------------------------------------------------------------------ libpq programs
def program_conninfo(settings: PgSettings, user: PgUser, role: str, host: str, port: int,
                     **extra: str) -> str:
    """Connection string for ``pg_basebackup -d`` / ``pg_rewind --source-server``: host, port,
    user, ``extra`` (dbname, application_name), the pgpass file and the role's libpq options;
    ``sslpassword`` is replaced by ``service=pgha`` (run the program with the environment of
    :func:`client_files`)."""
    params: dict[str, str | int] = {"host": host, "port": port, "user": user.username, **extra,
                                    "passfile": str(settings.pgpass)}
    options = libpq_options(user, role)
    if any(name in SECRET_OPTIONS for name in options):
        params["service"] = SERVICE
    params.update({k: v for k, v in options.items() if k not in SECRET_OPTIONS})
    return conninfo(params)


@contextlib.contextmanager
def client_files(settings: PgSettings, user: PgUser, role: str) -> Iterator[dict[str, str]]:
    """Environment additions for a libpq program run as ``user``: ``PGPASSFILE``, and while
    the role has an ``sslpassword``, ``PGSERVICEFILE`` naming a private (0600, in a 0700
    directory) service file that holds it; the file is removed on exit."""
    env = {"PGPASSFILE": str(settings.pgpass)}
    secrets = {k: v for k, v in libpq_options(user, role).items() if k in SECRET_OPTIONS}
    if not secrets:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="pgha-service-") as tmp:
        path = Path(tmp) / "pg_service.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"[{SERVICE}]\n" + "".join(f"{k}={v}\n" for k, v in secrets.items()))
        yield {**env, "PGSERVICEFILE": str(path)}


def primary_conninfo_params(settings: PgSettings, host: str, port: int) -> dict[str, str | int]:
    """Parameters of ``primary_conninfo`` for an upstream at ``host:port``: the replication
    user, the pgpass file, ``application_name`` = our member name, ``sslmode`` (``prefer``
    unless set) and the replication role's other libpq options."""
    options = libpq_options(settings.replication, "replication")
    params: dict[str, str | int] = {
        "host": host, "port": port, "user": settings.replication.username,
        "passfile": str(settings.pgpass), "application_name": settings.name,
        "sslmode": options.pop("sslmode", "prefer"),
    }
    params.update(options)
    return params


# --------------------------------------------------------------- the agent's own (asyncpg)
def local_host(settings: PgSettings) -> str:
    """Where the agent reaches its own server: the socket directory with ``use_unix_socket``,
    else ``localhost`` when PostgreSQL listens on a wildcard or loopback address, else the
    first listen address."""
    if settings.use_unix_socket:
        return str(settings.socket_dir)
    hosts = [h.strip() for h in settings.listen_host.split(",") if h.strip()]
    if not hosts or any(h.lower() in _LOCAL_LISTEN for h in hosts):
        return "localhost"
    return hosts[0]


def asyncpg_params(user: PgUser, host: str, port: int) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` as ``user`` to ``host:port`` (a host starting
    with ``/`` is a socket directory: no TLS, as libpq). The libpq options asyncpg supports go
    in a ``dsn`` query; the rest are left out (see :func:`asyncpg_unsupported`, warned about
    by :func:`pgha.pg.from_config.pg_settings`)."""
    out: dict[str, Any] = {"host": host, "port": port, "user": user.username,
                           "password": user.password}
    if host.startswith("/"):
        out["ssl"] = False
        return out
    query = {k: v for k, v in user.libpq if k in _ASYNCPG_OPTIONS}
    if query:
        out["dsn"] = "postgresql:///postgres?" + urlencode(query)
    return out


def local_superuser_url(settings: PgSettings) -> str:
    """``postgresql://`` URL of the local server as superuser (no password: use the pgpass
    file and the environment of :func:`client_files` for the superuser), for
    ``post_bootstrap``."""
    host = local_host(settings)
    su = settings.superuser
    query: dict[str, str | int] = {"host": host, "port": settings.port}
    if not host.startswith("/"):
        options = libpq_options(su, "superuser")
        if any(name in SECRET_OPTIONS for name in options):
            query["service"] = SERVICE
        query.update({k: v for k, v in options.items() if k not in SECRET_OPTIONS})
    return f"postgresql://{quote(su.username, safe='')}@/postgres?" + urlencode(query)
