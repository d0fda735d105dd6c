"""Bringing former primaries back: single-user crash recovery, the leader's timeline history,
the post-promotion checkpoint on the source, and pg_rewind."""

from __future__ import annotations

import asyncio
import logging

from pgha.config.replica import as_arguments
from pgha.core.actions import Upstream
from pgha.core.model import ControlState
from pgha.pg.cmd import clean_env, run
from pgha.pg.conf import source_conninfo, write_config
from pgha.pg.connparams import client_files
from pgha.pg.controldata import control_state, parse_lsn, read_controldata
from pgha.pg.errors import PgError
from pgha.pg.probe import remote_connection, snapshot
from pgha.pg.process import postmaster_pid, remove_stale_lock_files
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")

CRASH_RECOVERY_TIMEOUT = 900.0
REWIND_TIMEOUT = 6 * 3600.0
CHECKPOINT_TIMEOUT = 300.0
HISTORY_TIMEOUT = 10.0

# States a primary leaves behind when it did not shut down cleanly.
UNCLEAN_PRIMARY = frozenset({ControlState.IN_PRODUCTION, ControlState.IN_CRASH_RECOVERY,
                             ControlState.SHUTTING_DOWN, ControlState.STARTING_UP})


async def crash_recover(settings: PgSettings) -> bool | None:
    """Bring an uncleanly stopped former primary to the clean ``shut down`` state by running
    ``postgres --single`` (crash recovery, then a shutdown checkpoint) with our configuration
    written for the primary role (signal files removed).

    True when the data is clean now, or needs no crash recovery (not in an unclean primary
    state, or a ``backup_label`` exists: a fresh base backup or a rewound directory needs
    archive recovery, not this). False when crash recovery ran, exited with an error and left
    the cluster unclean. None when it could not tell or did not finish: pg_controldata is
    unreadable, a postmaster is running, or recovery was still going when its timeout expired
    (a slow recovery is not a failed one: the caller tries again later and never wipes).
    """
    data = await read_controldata(settings)
    state = control_state(data)
    if not data:
        log.error("crash recovery: pg_controldata unreadable")
        return None
    if state not in UNCLEAN_PRIMARY:
        return True
    if (settings.data_dir / "backup_label").exists():
        log.info("crash recovery skipped: backup_label present (state %s)", state)
        return True
    if postmaster_pid(settings.data_dir) is not None:
        log.error("crash recovery refused: a postmaster is running")
        return None
    log.info("cluster state is %r: running single-user crash recovery", str(state))
    await asyncio.to_thread(remove_stale_lock_files, settings)
    await asyncio.to_thread(write_config, settings, "primary", None)
    argv = [settings.binary("postgres"), "--single", "-D", str(settings.data_dir),
            *settings.config_file_options, "-c", "archive_mode=off", "postgres"]
    result = await run(argv, timeout=max(settings.pg_ctl_timeout, CRASH_RECOVERY_TIMEOUT),
                       env=clean_env(), stdin_data=b"")
    after = control_state(await read_controldata(settings))
    if result.timed_out:
        log.error("single-user crash recovery did not finish in time (state now %r); "
                  "will try again", str(after))
        return None
    if not result.ok or after != ControlState.SHUT_DOWN:
        log.error("single-user crash recovery failed (state now %r): %s", str(after),
                  result.describe())
        return False
    log.info("crash recovery done: cluster state is %r", str(after))
    return True


def parse_history(text: str) -> list[tuple[int, int]]:
    """Lines ``parent_tli<TAB>switch_lsn<TAB>reason`` -> ``[(timeline, switch_lsn)]``.
    Blank and comment lines are skipped; raises ValueError for a malformed line."""
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise ValueError(f"malformed timeline history line: {line!r}")
        out.append((int(fields[0]), parse_lsn(fields[1])))
    return out


async def source_timeline_history(settings: PgSettings,
                                  source: Upstream) -> tuple[int, list[tuple[int, int]]]:
    """``(current timeline, history)`` of ``source``, read as superuser over SQL from its
    ``pg_wal/<timeline>.history`` (no file for timeline 1). Raises PgError when unreachable or
    unreadable."""
    async with remote_connection(settings, source.conn_url) as conn:
        snap = await snapshot(conn)
        timeline = snap.timeline
        if not timeline:
            raise PgError(f"{source.name}: current timeline unknown")
        if timeline == 1:
            return 1, []
        path = f"pg_wal/{timeline:08X}.history"
        try:
            text = await conn.fetchval("SELECT pg_read_file($1)", path, timeout=HISTORY_TIMEOUT)
            history = parse_history(str(text))
        except Exception as exc:  # SQL error, timeout or malformed file
            raise PgError(f"{source.name}: cannot read {path}: {exc}") from exc
    return timeline, history


async def ensure_source_checkpointed(settings: PgSettings, source: Upstream) -> None:
    """Make the source's pg_control show its current timeline (pg_rewind reads the source's
    timeline from there; right after a promotion it still names the old one): CHECKPOINT on
    the source when ``pg_control_checkpoint().timeline_id`` is behind. Raises PgError when the
    source is unreachable or still behind afterwards."""
    async with remote_connection(settings, source.conn_url) as conn:
        snap = await snapshot(conn)
        if snap.timeline is None or snap.checkpoint_tli is None:
            raise PgError(f"{source.name}: timeline unknown")
        if snap.checkpoint_tli >= snap.timeline:
            return
        log.info("%s: checkpoint timeline %d < timeline %d: running CHECKPOINT", source.name,
                 snap.checkpoint_tli, snap.timeline)
        try:
            await conn.execute("CHECKPOINT", timeout=CHECKPOINT_TIMEOUT)
        except Exception as exc:
            raise PgError(f"{source.name}: CHECKPOINT failed: {exc}") from exc
        snap = await snapshot(conn)
        if snap.checkpoint_tli is None or snap.timeline is None or \
                snap.checkpoint_tli < snap.timeline:
            raise PgError(f"{source.name}: pg_control still behind after CHECKPOINT")


def rewind_argv(settings: PgSettings, dsn: str) -> list[str]:
    """pg_rewind's command line: the target data directory and the source server ``dsn``,
    then the ``postgresql.rewind`` options (validated: none of them repeats these)."""
    return [settings.binary("pg_rewind"), "-D", str(settings.data_dir),
            f"--source-server={dsn}", *as_arguments(settings.rewind_options)]


async def pg_rewind(settings: PgSettings, source: Upstream,
                    timeout: float = REWIND_TIMEOUT) -> bool:
    """Run pg_rewind against ``source`` as the rewind user (its libpq options, password via the
    pgpass file; see :mod:`pgha.pg.connparams`). True on success (including "no rewind
    required"). The target must be stopped cleanly. Configuration files copied from the
    source must be regenerated by the caller."""
    dsn = await source_conninfo(settings, settings.rewind, "rewind", source, "rewind",
                                dbname="postgres")
    if dsn is None:
        return False
    argv = rewind_argv(settings, dsn)
    log.info("running pg_rewind from %s: --source-server=%r%s", source.name, dsn,
             "".join(f" {word}" for word in argv[4:]))
    with client_files(settings, settings.rewind, "rewind") as extra:
        result = await run(argv, timeout=timeout, env=clean_env(extra))
    if not result.ok:
        log.error("pg_rewind from %s failed: %s", source.name, result.describe())
        return False
    log.info("pg_rewind from %s done: %s", source.name, result.describe())
    return True
