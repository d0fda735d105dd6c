"""Creating a replica's data directory: ``postgresql.create_replica_methods``, tried in order.

Contract of :func:`create_replica`:

* The methods run in the configured order until one succeeds: its program exits 0 AND the
  data directory then holds a PostgreSQL cluster (``PG_VERSION`` and ``global/pg_control``).
  Each failure is logged (ERROR, naming the method and its cause) and the next method is
  tried. Without a ``source`` (no running leader) only the custom methods marked
  ``no_leader`` run; ``basebackup_only`` (an operator's re-initialisation from the leader)
  runs ``basebackup`` alone.
* ``basebackup`` (built in, :func:`basebackup`): pg_basebackup from ``source`` as the
  replication user (its libpq options, the pgpass file; see :mod:`pgha.pg.connparams`),
  WAL streamed, a fast checkpoint unless the ``checkpoint`` option is set, then the
  ``postgresql.basebackup`` options.
* A custom method runs its ``command`` with the arguments of :func:`pgha.pg.methods.
  method_argv` (``--scope --datadir --role=replica --connstring=<libpq conninfo of the source
  as the replication user>``, empty without a source, then the extra keys), without a shell,
  in an environment without the agent's ``PG*`` variables plus ``PGPASSFILE`` (the pgpass
  file, written first; ``PGSERVICEFILE`` too while the replication role has an
  ``sslpassword``). The data directory exists (mode 0700) when it starts.
* The data directory is emptied before every method except a ``keep_data`` one, which may
  reuse what is there. When every method failed, or the work is cancelled, it is emptied
  (a partial copy is never left to be started); cancellation is re-raised.
* There is no fixed time limit (a multi-terabyte copy takes hours): a method is stopped when
  the data directory has not grown for ``stall_timeout`` (not a ``keep_data`` method, which
  may work on existing files for long), else after ``timeout``. The copied size is logged
  every minute.
* Writes no configuration and starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from pathlib import Path

from pgha.config.replica import as_arguments
from pgha.core.actions import Upstream
from pgha.pg.bootstrap import wipe_data_dir
from pgha.pg.cmd import CmdResult, Progress, clean_env, run, tree_size
from pgha.pg.conf import source_conninfo, write_pgpass
from pgha.pg.connparams import client_files, program_conninfo
from pgha.pg.methods import method_argv
from pgha.pg.settings import BASEBACKUP, PgSettings, ReplicaMethod, parse_conn_url

log = logging.getLogger("pgha.pg")

CLONE_TIMEOUT = 30 * 24 * 3600.0  # no practical cut-off: a stalled clone is stopped instead
CLONE_STALL_TIMEOUT = 600.0
"""A method that copies nothing new for this long is stopped (and the next one tried)."""


def methods_to_run(settings: PgSettings, source: Upstream | None,
                   basebackup_only: bool = False) -> list[ReplicaMethod]:
    """The methods :func:`create_replica` tries, in order (see the module docstring)."""
    if basebackup_only:
        return [ReplicaMethod(BASEBACKUP)]
    methods = list(settings.replica_methods) or [ReplicaMethod(BASEBACKUP)]
    if source is not None and source.methods:  # a standby cluster's own list for its remote
        methods = []
        for name in source.methods:
            found = ReplicaMethod(BASEBACKUP) if name == BASEBACKUP \
                else settings.method_sections.get(name)
            if found is None:
                log.error("standby_cluster.create_replica_methods: %s has no section "
                          "postgresql.%s on this member; skipped", name, name)
            else:
                methods.append(found)
    if source is None:
        return [m for m in methods if m.no_leader and not m.builtin]
    return methods


async def create_replica(settings: PgSettings, source: Upstream | None, *,
                         basebackup_only: bool = False, timeout: float = CLONE_TIMEOUT,
                         stall_timeout: float = CLONE_STALL_TIMEOUT) -> bool:
    """Fill the data directory with a replica's data; True on success. See the module
    docstring for the order, the cleaning of the directory and the limits."""
    methods = methods_to_run(settings, source, basebackup_only)
    if not methods:
        log.error("cannot create a replica: no running leader and no replica method allows "
                  "it (no_leader)")
        return False
    try:
        for i, method in enumerate(methods):
            if not method.keep_data:
                await asyncio.to_thread(wipe_data_dir, settings.data_dir)
            what = f"from {source.name}" if source is not None else "without a leader"
            log.info("creating replica %s with method %s", what, method.name)
            if method.builtin:
                assert source is not None  # methods_to_run keeps basebackup only with one
                ok = await basebackup(settings, source, timeout=timeout,
                                      stall_timeout=stall_timeout)
            else:
                ok = await _custom(settings, method, source, timeout, stall_timeout)
            if ok and not _is_cluster(settings.data_dir):
                log.error("replica method %s exited successfully but %s holds no PostgreSQL "
                          "data directory (PG_VERSION, global/pg_control)", method.name,
                          settings.data_dir)
                ok = False
            if ok:
                os.chmod(settings.data_dir, 0o700)
                log.info("replica created %s with method %s", what, method.name)
                return True
            # the cause was logged as an ERROR (what the retry gate reports); this is the plan
            log.warning("replica method %s failed; %s", method.name,
                        f"trying {methods[i + 1].name} next" if i + 1 < len(methods)
                        else "no method left to try")
    except BaseException:
        await asyncio.shield(asyncio.to_thread(wipe_data_dir, settings.data_dir))
        raise
    await asyncio.to_thread(wipe_data_dir, settings.data_dir)
    return False


def _is_cluster(data_dir: Path) -> bool:
    return (data_dir / "PG_VERSION").is_file() and (data_dir / "global" / "pg_control").is_file()


def _progress(settings: PgSettings, what: str, stall_timeout: float | None) -> Progress:
    """Logs the copied size every minute; stops the program after ``stall_timeout`` without
    growth (None: never)."""
    logged = [0.0]
    loop = asyncio.get_running_loop()

    def report(size: int) -> None:
        if loop.time() - logged[0] >= 60:
            logged[0] = loop.time()
            log.info("%s: %.1f MiB copied so far", what, size / 2**20)

    stall = stall_timeout if stall_timeout is not None else float("inf")
    return Progress(lambda: tree_size(settings.data_dir), stall_timeout=stall,
                    interval=min(10.0, stall / 3), report=report)


def basebackup_argv(settings: PgSettings, dsn: str) -> list[str]:
    """pg_basebackup's command line: data directory, streamed WAL, a fast checkpoint (unless
    the options set ``checkpoint``), no password prompt, the connection, then the
    ``postgresql.basebackup`` options (long names as ``--name[=value]``, one-letter ones as
    ``-n [value]``)."""
    argv = [settings.binary("pg_basebackup"), "-D", str(settings.data_dir), "-X", "stream"]
    names = {name for name, _ in settings.basebackup_options}
    if not names & {"checkpoint", "c"}:
        argv += ["-c", "fast"]
    return [*argv, "-w", "-d", dsn, *as_arguments(settings.basebackup_options)]


async def basebackup(settings: PgSettings, source: Upstream, timeout: float = CLONE_TIMEOUT,
                     stall_timeout: float = CLONE_STALL_TIMEOUT) -> bool:
    """pg_basebackup from ``source`` into the (empty) data directory (see the module
    docstring); True when it exited 0. Leaves a partial copy for the caller to wipe."""
    dsn = await source_conninfo(settings, settings.replication, "replication", source, "clone",
                                application_name=settings.name)
    if dsn is None:
        return False
    argv = basebackup_argv(settings, dsn)
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("cloning from %s: %s", source.name, shlex.join(argv))
    with client_files(settings, settings.replication, "replication") as extra:
        result = await run(argv, timeout=timeout, env=clean_env(extra),
                           progress=_progress(settings, f"cloning from {source.name}",
                                              stall_timeout))
    if not result.ok:
        log.error("pg_basebackup from %s failed: %s", source.name, result.describe())
        return False
    return True


def connstring(settings: PgSettings, source: Upstream | None) -> str:
    """The ``--connstring`` of a custom method: libpq conninfo of ``source`` as the
    replication user (with the pgpass file and the role's libpq options); "" without a
    source. Raises ValueError for an unusable ``conn_url``."""
    if source is None:
        return ""
    host, port = parse_conn_url(source.conn_url)
    return program_conninfo(settings, settings.replication, "replication", host, port,
                            dbname="postgres")


async def _custom(settings: PgSettings, method: ReplicaMethod, source: Upstream | None,
                  timeout: float, stall_timeout: float) -> bool:
    """Run a custom method's command (see the module docstring); True when it exited 0."""
    try:
        argv = method_argv(method.command, scope=settings.scope,
                           data_dir=str(settings.data_dir), extra=dict(method.params),
                           no_params=method.no_params, role="replica",
                           connstring=connstring(settings, source))
    except ValueError as exc:
        log.error("replica method %s cannot run: %s", method.name, exc)
        return False
    await asyncio.to_thread(write_pgpass, settings)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log.info("running replica method %s: %s", method.name, argv[0])
    with client_files(settings, settings.replication, "replication") as extra:
        result: CmdResult = await run(
            argv, timeout=timeout, env=clean_env(extra),
            progress=_progress(settings, f"replica method {method.name}",
                               None if method.keep_data else stall_timeout))
    if not result.ok:
        log.error("replica method %s failed: %s", method.name, result.describe())
        return False
    return True
