"""Custom bootstrap methods (``bootstrap.method``): the command that restores a cluster into the
empty data directory, and bringing the restored data up as the new cluster's primary.

Contract, in the order :mod:`pgha.agent.bootstrap` calls it (every failure raises
:class:`CustomBootstrapError` with a one-line cause; cleaning up is the caller's job):

1. :func:`run_command` runs the method's ``command`` with Patroni's arguments
   (:func:`pgha.pg.methods.method_argv`), the agent's environment plus ``PGPASSFILE`` (as
   ``post_bootstrap`` gets it), under :data:`COMMAND_TIMEOUT`; its output is logged when it
   ends; on timeout or cancellation its whole process group is killed. It must exit 0 and
   leave a PostgreSQL data directory with no postmaster running in it.
2. :func:`recover` writes the managed configuration (:func:`write_restore_config`), starts
   PostgreSQL and returns once it runs as a primary: it promoted itself (its
   ``recovery_target_action: promote``, the end of an archive recovery without target, or no
   archive recovery at all), or recovery paused (at its target) and pgha promoted it. The
   postmaster stopping on the way fails with the server log's last line.
3. :func:`create_roles`: the roles as after initdb (passwords set to the configured ones).
4. :func:`finish`: the configuration of a primary (pg_hba as configured, the bootstrap's
   recovery settings gone, recovery settings the command left in ``postgresql.auto.conf``
   removed), reloaded; returns the settings still in effect that only a restart removes.

Until :func:`finish`, the local socket admits the agent's OS user as the superuser of the same
name by ``peer`` authentication (never ``trust``), and the agent's own connections (recovery
and promotion, :func:`create_roles`) use that socket whatever ``use_unix_socket`` says: the
restored roles carry the source cluster's passwords until the roles are set to the configured
ones. When the OS user has another name, the configured pg_hba and connections are used as they
are (the source's superuser password must then be the configured one); a connection refused
for its authentication fails at once, naming why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
from dataclasses import replace
from pathlib import Path

import asyncpg

from pgha.config import RECOVERY_TARGETS, BootstrapMethod
from pgha.pg import bootstrap
from pgha.pg.cmd import run, tail_file
from pgha.pg.conf import (
    CONF,
    RECOVERY_SIGNAL,
    STANDBY_SIGNAL,
    atomic_write,
    quote_guc,
    render_postgresql_conf,
    write_config,
)
from pgha.pg.conffiles import HBA, render_pg_hba
from pgha.pg.connparams import client_files
from pgha.pg.controldata import format_lsn
from pgha.pg.errors import PgError
from pgha.pg.methods import method_argv
from pgha.pg.probe import QUERY_TIMEOUT, Snapshot, local_connection, snapshot
from pgha.pg.process import pg_ctl_reload, pg_ctl_start, postmaster_pid, remove_stale_lock_files
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")

COMMAND_TIMEOUT = 7 * 24 * 3600.0
"""No practical cut-off for a restore (terabytes from a backup repository take hours); the
operator stops the agent to stop it."""
RECOVERY_TIMEOUT = 7 * 24 * 3600.0
"""How long the restored cluster may stay in recovery (days of archived WAL may be replayed)."""
PROMOTE_WAIT = 60
_POLL = 0.5
_PROGRESS_LOG = 60.0
_PROMOTE_ATTEMPTS = 3

AUTO_CONF = "postgresql.auto.conf"
RECOVERY_SETTINGS = RECOVERY_TARGETS | frozenset({
    "recovery_target_action", "recovery_target_inclusive", "recovery_target_timeline",
    "restore_command", "archive_cleanup_command", "recovery_end_command",
    "recovery_min_apply_delay", "primary_conninfo", "primary_slot_name", "promote_trigger_file",
})
"""What a restore tool may leave in ``postgresql.auto.conf`` for the recovery it prepared."""

_SETTING_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=|\s)")


class CustomBootstrapError(PgError):
    """The custom bootstrap failed; ``str()`` is the one-line cause."""


# ------------------------------------------------------------------ files (blocking)
def strip_recovery_settings(path: Path) -> list[str]:
    """Remove the lines setting one of :data:`RECOVERY_SETTINGS` from ``path`` (a
    ``postgresql.auto.conf``), keeping everything else; the names removed (none: the file is
    left untouched, also when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    kept: list[str] = []
    removed: list[str] = []
    for line in text.splitlines(keepends=True):
        match = _SETTING_LINE.match(line)
        if match and match.group(1).lower() in RECOVERY_SETTINGS:
            removed.append(match.group(1).lower())
        else:
            kept.append(line)
    if removed:
        atomic_write(path, "".join(kept), 0o600)
    return removed


def _os_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def _peer_applies(settings: PgSettings) -> bool:
    """The agent's OS user has the superuser's name and pgha writes pg_hba.conf."""
    user = settings.superuser.username
    return (_os_user() == user and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", user) is not None
            and "hba_file" not in settings.parameters)


def bootstrap_settings(settings: PgSettings) -> PgSettings:
    """The settings of the agent's own connections until the roles are set: over the local
    socket when :func:`bootstrap_pg_hba` lets the agent in there by ``peer``."""
    return replace(settings, use_unix_socket=True) if _peer_applies(settings) else settings


def bootstrap_pg_hba(settings: PgSettings) -> str:
    """pg_hba.conf while the restored cluster's roles are not set yet: the configured lines,
    preceded by ``peer`` for the superuser on the local socket when the agent's OS user has its
    name (only that OS user, who owns the data directory anyway, gets in without password)."""
    text = render_pg_hba(settings)
    if not _peer_applies(settings):
        return text
    head, _, rest = text.partition("\n")
    return (f"{head}\n# until the custom bootstrap has set the roles' passwords:\n"
            f"local all {settings.superuser.username} peer\n{rest}")


def recovery_block(method: BootstrapMethod) -> str:
    """The ``recovery_conf`` settings as postgresql.conf lines (after pgha's own, so that they
    win, ``recovery_target_timeline`` included); empty without any."""
    if not method.recovery_conf:
        return ""
    lines = ["\n# recovery settings of the custom bootstrap method, until the promotion\n"]
    lines += [f"{name} = {quote_guc(value)}\n" for name, value in method.recovery_conf.items()]
    return "".join(lines)


def write_restore_config(settings: PgSettings, method: BootstrapMethod) -> None:
    """The managed files for the first start of the restored data (see the module docstring):
    pgpass, base conf, pg_hba (:func:`bootstrap_pg_hba`), postgresql.conf with
    :func:`recovery_block`, and the signal files: ``recovery.signal`` when ``recovery_conf``
    names a target or a ``restore_command``; with ``keep_existing_recovery_conf`` also the
    signal files the command left, which are otherwise removed together with the recovery
    settings it left in ``postgresql.auto.conf``. Raises OSError/ValueError."""
    data = settings.data_dir
    left = {name for name in (STANDBY_SIGNAL, RECOVERY_SIGNAL) if (data / name).exists()}
    keep = method.keep_existing_recovery_conf
    if not keep:
        removed = strip_recovery_settings(data / AUTO_CONF)
        if removed or left:
            log.info("removed what the bootstrap command left for recovery: %s",
                     ", ".join(sorted(left) + removed))
    plain = replace(settings, recovery_conf={})
    write_config(plain, "primary", None)  # also removes both signal files
    if "hba_file" not in settings.parameters:
        atomic_write(settings.config_dir / HBA, bootstrap_pg_hba(settings))
    atomic_write(settings.config_dir / CONF, render_postgresql_conf(plain, "primary", None)
                 + recovery_block(method))
    wanted = (left if keep else set()) | ({RECOVERY_SIGNAL} if method.needs_recovery_signal
                                          else set())
    for name in sorted(wanted):
        atomic_write(data / name, "")
    if STANDBY_SIGNAL in wanted:
        log.warning("standby.signal kept: the restored cluster stays in standby mode until "
                    "its recovery pauses at a target (pgha promotes it then) or it is promoted")
    log.info("restored cluster configured%s", f" with {', '.join(sorted(wanted))}"
             if wanted else " without recovery signal files")


# ------------------------------------------------------------------ the command
async def run_command(settings: PgSettings, method: BootstrapMethod,
                      timeout: float = COMMAND_TIMEOUT) -> None:
    """Run the method's command (see the module docstring); raises CustomBootstrapError."""
    try:
        argv = method_argv(method.command, scope=settings.scope,
                           data_dir=str(settings.data_dir), extra=method.extra,
                           no_params=method.no_params)
    except ValueError as exc:
        raise CustomBootstrapError(f"custom bootstrap command not run: {exc}") from None
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("running custom bootstrap script: %s", method.command)
    with client_files(settings, settings.superuser, "superuser") as extra:
        result = await run(argv, timeout=timeout, env={**os.environ, **extra})
    for text in (result.stdout, result.stderr):
        for line in text.splitlines():
            log.info("custom bootstrap script: %s", line)
    if not result.ok:
        raise CustomBootstrapError(f"custom bootstrap script failed: {result.describe()}")
    data = settings.data_dir
    if not (data / "PG_VERSION").is_file() or not (data / "global" / "pg_control").is_file():
        raise CustomBootstrapError(f"the custom bootstrap script exited 0 but left no "
                                   f"PostgreSQL data directory in {data}")
    if (pid := postmaster_pid(data)) is not None:
        raise CustomBootstrapError(f"the custom bootstrap script left a postmaster running "
                                   f"in {data} (pid {pid})")
    os.chmod(data, 0o700)


# ------------------------------------------------------------------ recovery and promotion
def _lsn(value: int | None) -> str:
    return "?" if value is None else format_lsn(value)


def _refused(exc: BaseException) -> bool:
    """The server answered and refused the connection's authentication (SQLSTATE 28...)."""
    cause = exc.__cause__ if isinstance(exc, PgError) else exc
    return isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError)


async def _snapshot(settings: PgSettings) -> Snapshot | None:
    """The server's status, None while it does not accept connections; raises
    CustomBootstrapError when it refuses our authentication (waiting would not help)."""
    try:
        async with local_connection(bootstrap_settings(settings)) as conn:
            return await snapshot(conn)
    except PgError as exc:
        if _refused(exc):
            raise CustomBootstrapError(
                f"the restored cluster refuses the agent's connection as "
                f"{settings.superuser.username}: {exc.__cause__}") from None
        return None


async def _promote(settings: PgSettings) -> bool:
    try:
        async with local_connection(bootstrap_settings(settings)) as conn:
            done = await conn.fetchval(f"SELECT pg_promote(true, {PROMOTE_WAIT})",
                                       timeout=PROMOTE_WAIT + QUERY_TIMEOUT)
    except Exception as exc:  # asyncpg errors of every kind, timeouts
        log.warning("promoting the restored cluster failed: %s", exc)
        return False
    return bool(done)


async def _stopped(settings: PgSettings, what: str) -> CustomBootstrapError:
    tail = (await asyncio.to_thread(tail_file, settings.log_file, 5)).splitlines()
    last = tail[-1].strip() if tail else ""
    return CustomBootstrapError(f"PostgreSQL {what}" + (f": {last}" if last else "")
                               + f" (server log {settings.log_file})")


async def wait_promoted(settings: PgSettings, timeout: float = RECOVERY_TIMEOUT) -> None:
    """Return once the server runs out of recovery, promoting it when its recovery paused;
    raises CustomBootstrapError when the postmaster stops, promoting keeps failing, or it is
    still in recovery after ``timeout`` seconds. Progress is logged every minute."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    logged = loop.time()
    failed_promotions = 0
    while True:
        if postmaster_pid(settings.data_dir) is None:
            raise await _stopped(settings, "stopped during the recovery of the restored cluster")
        snap = await _snapshot(settings)
        if snap is not None and not snap.in_recovery:
            log.info("the restored cluster runs as a primary on timeline %s", snap.timeline)
            return
        if snap is not None and snap.paused:
            log.info("recovery of the restored cluster paused at %s: promoting",
                     _lsn(snap.replay_lsn))
            if not await _promote(settings):
                failed_promotions += 1
                if failed_promotions >= _PROMOTE_ATTEMPTS:
                    raise CustomBootstrapError("the restored cluster could not be promoted")
                await asyncio.sleep(_POLL)
            continue
        if loop.time() >= deadline:
            raise CustomBootstrapError(f"the restored cluster is still in recovery after "
                                       f"{timeout:g}s")
        if loop.time() - logged >= _PROGRESS_LOG:
            logged = loop.time()
            log.info("the restored cluster is recovering (%s)",
                     f"replayed up to {_lsn(snap.replay_lsn)}" if snap else "not accepting yet")
        await asyncio.sleep(_POLL)


async def recover(settings: PgSettings, method: BootstrapMethod,
                  timeout: float = RECOVERY_TIMEOUT) -> None:
    """Configure and start the restored data, and wait until it runs as a primary (see the
    module docstring); raises CustomBootstrapError."""
    try:
        await asyncio.to_thread(remove_stale_lock_files, settings)
        await asyncio.to_thread(write_restore_config, settings, method)
    except (OSError, ValueError) as exc:
        raise CustomBootstrapError(f"configuring the restored cluster failed: {exc}") from None
    log.info("starting the restored cluster")
    result = await pg_ctl_start(settings, settings.pg_ctl_timeout)
    if not result.ok:
        if postmaster_pid(settings.data_dir) is None:
            raise await _stopped(settings, f"did not start after the custom bootstrap "
                                           f"({result.describe()})")
        log.info("the restored cluster is still starting: %s", result.describe())
    await wait_promoted(settings, timeout)


async def create_roles(settings: PgSettings) -> None:
    """The roles of :func:`pgha.pg.bootstrap.create_roles`, set over the connection the
    restored cluster admits before they are (see the module docstring). Raises PgError."""
    await bootstrap.create_roles(bootstrap_settings(settings))


async def finish(settings: PgSettings) -> list[str]:
    """Configure the promoted cluster as a primary and reload it (see the module docstring).
    Returns the recovery settings in effect that only a restart removes (read first, over the
    bootstrap's connection). Raises CustomBootstrapError."""
    try:
        async with local_connection(bootstrap_settings(settings)) as conn:
            rows = await conn.fetch(
                "SELECT name FROM pg_settings WHERE context = 'postmaster' "
                "AND name = ANY($1::text[]) AND setting IS DISTINCT FROM boot_val ORDER BY name",
                sorted(RECOVERY_SETTINGS), timeout=QUERY_TIMEOUT)
    except Exception as exc:  # asyncpg errors of every kind, PgError
        raise CustomBootstrapError(f"reading the new primary's settings failed: {exc}") from exc
    try:
        removed = await asyncio.to_thread(strip_recovery_settings,
                                          settings.data_dir / AUTO_CONF)
        await asyncio.to_thread(write_config, settings, "primary", None)
    except (OSError, ValueError) as exc:
        raise CustomBootstrapError(f"configuring the new primary failed: {exc}") from None
    if removed:
        log.info("removed recovery settings from %s: %s", AUTO_CONF, ", ".join(removed))
    result = await pg_ctl_reload(settings)
    if not result.ok:
        raise CustomBootstrapError(f"reloading the new primary failed: {result.describe()}")
    return [str(row["name"]) for row in rows]
