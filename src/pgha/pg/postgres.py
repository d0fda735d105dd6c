"""The facade the agent uses to observe and drive its PostgreSQL instance.

Concurrency: the agent's executor runs one action (start, stop, promote, rejoin, ...) at a
time; :meth:`Postgres.observe` and :meth:`Postgres.status` may run concurrently with an
action. Failure behaviour: actions return False (and log why) when PostgreSQL refused or a
program failed; SQL helpers raise :class:`PgError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

from pgha.core.actions import SlotSpec, StopMode, SyncSlots, Upstream
from pgha.core.model import ControlState, DataState, PgRole, PgState
from pgha.pg import bootstrap, controldata, replica_methods, rewind, slotcopy, slots
from pgha.pg.cmd import tail_file
from pgha.pg.conf import STANDBY_SIGNAL, read_managed_state, read_managed_sync_names, write_config
from pgha.pg.discarded import DiscardedLog, report_path
from pgha.pg.errors import PgError
from pgha.pg.observation import Observation, observe_local
from pgha.pg.probe import LocalProbe, Snapshot, local_connection, received_position, status_fields
from pgha.pg.process import (
    pg_ctl_promote,
    pg_ctl_reload,
    pg_ctl_start,
    pg_ctl_stop,
    postmaster_pid,
    remove_stale_lock_files,
    wait_pid_exit,
)
from pgha.pg.rejoin import rejoin as rejoin_procedure
from pgha.pg.settings import PgSettings, format_conn_url
from pgha.pg.syncrep import PrimaryReplication

log = logging.getLogger("pgha.pg")

EXECUTE_TIMEOUT = 60.0
_READY_POLL = 0.05
_PROMOTE_POLL = 0.01  # writes resume the moment recovery ends: a switchover waits on this
# A promotion not done after this many seconds is signalled again: a request reaching the
# startup process just before it sleeps out wal_retrieve_retry_interval (after failing to
# stream from the dead primary, e.g. right after a reload) is only seen after that sleep.
_PROMOTE_RESIGNAL = 0.5


class Postgres:
    """One local PostgreSQL instance. ``settings`` may be replaced by the agent (e.g. after a
    configuration reload); the next :meth:`reload`, :meth:`start` or :meth:`follow` writes the
    new configuration."""

    def __init__(self, settings: PgSettings) -> None:
        self._sync_names = read_managed_sync_names(settings.config_dir)
        self.settings = settings
        self._probe = LocalProbe()
        self._syncrep = PrimaryReplication()
        self._slots = slots.SlotSync()
        self._sysid: str | None = None
        self._upstream: Upstream | None = None
        self._upstream_known = False  # False: read it back from our postgresql.conf header
        self._observed: Snapshot | None = None  # the last observe()'s, until status() uses it
        self.discarded = DiscardedLog(report_path(settings))  # what rejoins threw away

    @property
    def settings(self) -> PgSettings:
        return self._settings

    @settings.setter
    def settings(self, value: PgSettings) -> None:
        """Keeps the value :meth:`set_sync_standby_names` set."""
        self._settings = replace(value, synchronous_standby_names=self._sync_names)

    # ----------------------------------------------------------------- cheap, synchronous
    def conn_url(self) -> str:
        """``postgres://<connect_address>/postgres`` (host and port of ``connect_address``, else
        of ``listen``), as published in the member key."""
        return format_conn_url(self.settings.connect_host,
                               self.settings.connect_port or self.settings.port)

    def data_state(self) -> DataState:
        """EMPTY: missing or empty directory; VALID: PG_VERSION and global/pg_control exist;
        INVALID otherwise."""
        data = self.settings.data_dir
        try:
            if not data.is_dir() or not any(data.iterdir()):
                return DataState.EMPTY
        except OSError:
            return DataState.INVALID
        if (data / "PG_VERSION").is_file() and (data / "global" / "pg_control").is_file():
            return DataState.VALID
        return DataState.INVALID

    def is_running(self) -> bool:
        """postmaster.pid exists and names a live (non-zombie) postmaster."""
        return postmaster_pid(self.settings.data_dir) is not None

    def _set_upstream(self, upstream: Upstream | None) -> None:
        self._upstream, self._upstream_known = upstream, True

    def current_upstream(self) -> Upstream | None:
        """The upstream this replica was last configured to stream from (kept in the data
        directory: it survives an agent restart); None for a primary or unknown."""
        if not self._upstream_known:
            state = read_managed_state(self.settings.config_dir)
            self._set_upstream(state[1] if state and state[0] == "replica" else None)
        return self._upstream

    # ------------------------------------------------------------------------ observing
    async def controldata(self) -> dict[str, str]:
        """pg_controldata output as a dict; ``{}`` when not readable."""
        data = await controldata.read_controldata(self.settings)
        if data.get(controldata.SYSID):
            self._sysid = data[controldata.SYSID]
        return data

    async def wait_postmaster_exit(self) -> None:
        """Return when the current postmaster exits (at once when none runs). Uses a pidfd, so
        it works for a postmaster adopted from postmaster.pid as well."""
        pid = postmaster_pid(self.settings.data_dir)
        if pid is not None:
            await wait_pid_exit(pid)

    async def _snapshot(self) -> Snapshot | None:
        try:
            snap = await self._probe.snapshot(self.settings)
        except PgError as exc:
            log.debug("probe failed: %s", exc)
            return None
        if snap.sysid:
            self._sysid = snap.sysid
        return snap

    async def observe(self) -> PgState:
        """What runs and what the data holds. ``down_since``/``stopped_by_agent`` are left for
        the agent. Running but not answering: role is guessed from standby.signal, control
        state read from pg_control, timeline and position unknown (None). Stopped: timeline and
        position from pg_control (latest checkpoint start, or minRecoveryPoint when later).
        ``slots`` only while accepting. One statement while it answers
        (:mod:`pgha.pg.observation`)."""
        self._observed = None
        data = self.data_state()
        if postmaster_pid(self.settings.data_dir) is None:
            if data != DataState.VALID:
                return PgState(data=data)
            cd = await self.controldata()
            position = controldata.divergence_position(cd)
            return PgState(data=data, sysid=self._sysid,
                           timeline=position[0] if position else None,
                           wal_position=controldata.wal_position(cd),
                           control_state=controldata.control_state(cd))
        try:
            obs: Observation | None = await observe_local(self._probe, self.settings)
        except PgError as exc:
            log.debug("probe failed: %s", exc)
            obs = None
        self._observed = obs.snapshot if obs is not None else None
        self._sysid = (obs.snapshot.sysid if obs is not None else None) or self._sysid
        if obs is None:
            cd = await self.controldata()
            replica = (self.settings.data_dir / STANDBY_SIGNAL).exists()
            return PgState(data=data, running=True, sysid=self._sysid,
                           role=PgRole.REPLICA if replica else PgRole.PRIMARY,
                           control_state=controldata.control_state(cd))
        if self._sysid is None:
            await self.controldata()
        snap, standbys = obs.snapshot, self._syncrep.observed(obs.replication)
        return PgState(
            data=data, running=True, accepting=True,
            role=PgRole.REPLICA if snap.in_recovery else PgRole.PRIMARY,
            sysid=self._sysid, timeline=snap.timeline, wal_position=snap.wal_position,
            control_state=(ControlState.IN_ARCHIVE_RECOVERY if snap.in_recovery
                           else ControlState.IN_PRODUCTION),
            upstream=(u.name if snap.in_recovery and (u := self.current_upstream()) else None),
            standbys=() if snap.in_recovery else standbys,
            sync_standby_names=snap.sync_standby_names, sync_managed=self._sync_names is not None,
            sync_names_since=None if snap.in_recovery else self._syncrep.since(snap),
            slots=obs.slots)

    async def status(self) -> dict[str, Any]:
        """Status fields for ``GET /patroni``: from the snapshot the last :meth:`observe` took,
        when no call used it yet (observe, then status: one read), else read now. Only
        ``database_system_identifier`` (when known) while PostgreSQL is not answering."""
        snap, self._observed = self._observed, None
        observed = snap is not None
        if snap is None and self.is_running():
            snap = await self._snapshot()
        if snap is None:
            return {"database_system_identifier": self._sysid} if self._sysid else {}
        return {**status_fields(snap, self._sysid), "replication": await self._syncrep.
                rows_for_status(self._probe, self.settings, primary=not snap.in_recovery,
                                observed=observed)}

    async def set_sync_standby_names(self, value: str | None, timeout: float = 10.0) -> bool:
        """Make ``value`` the managed ``synchronous_standby_names`` (None: the user's again),
        recorded in postgresql.conf's header so a restarted agent keeps it; a running server
        is reloaded and True returned once it runs with the value (False after ``timeout``)."""
        self._sync_names = value
        self.settings = self._settings
        if not await self.reload():
            return False
        if not self.is_running():
            return True  # written: the next start runs with it
        want = value if value is not None else self.settings.parameters.get(
            "synchronous_standby_names")
        deadline = time.monotonic() + timeout
        while (snap := await self._snapshot()) is None or (
                want is not None and snap.sync_standby_names != str(want)):
            if time.monotonic() >= deadline:
                log.error("PostgreSQL does not run with synchronous_standby_names %r", want)
                return False
            await asyncio.sleep(_READY_POLL)
        log.info("synchronous_standby_names = %r", snap.sync_standby_names)
        return True
    async def _wait_ready(self, replica: bool, deadline: float,
                          poll: float = _READY_POLL) -> bool:
        while True:
            snap = await self._snapshot()
            if snap is not None and snap.in_recovery == replica:
                return True
            if time.monotonic() >= deadline or not self.is_running():
                return False
            await asyncio.sleep(poll)

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        """Write the configuration for ``role`` ("primary" | "replica") and start PostgreSQL;
        True once it accepts connections in that role.

        Already running in that role: True without restarting (a replica whose upstream
        differs is pointed at ``upstream`` with :meth:`follow`). Running in the other role:
        False. Data last used in recovery (or a fresh base backup / rewound directory with a
        backup_label) started as "primary" is started as a replica without upstream and then
        promoted, so it gets a new timeline instead of silently continuing the old one. On
        timeout the postmaster is left running (still starting); False. Former primaries
        that may have diverged must go through :meth:`rejoin`, not ``start("replica")``.
        """
        if role not in ("primary", "replica"):
            raise ValueError(f"unknown role {role!r}")
        if self.is_running():
            snap = await self._snapshot()
            same = snap is not None and snap.in_recovery == (role == "replica")
            log.warning("start(%s): PostgreSQL already running (%s)", role,
                        "same role" if same else "different role or not answering")
            if same and upstream is not None and role == "replica" \
                    and upstream != self.current_upstream():
                return await self.follow(upstream)
            return same
        if self.data_state() != DataState.VALID:
            log.error("start(%s): no valid data directory at %s", role, self.settings.data_dir)
            return False
        promote_after = False
        if role == "primary":
            state = controldata.control_state(await self.controldata())
            if state in (ControlState.SHUT_DOWN_IN_RECOVERY, ControlState.IN_ARCHIVE_RECOVERY) \
                    or (self.settings.data_dir / "backup_label").exists():
                log.info("data was last in recovery (%s): starting in recovery, then promoting",
                         state)
                role, upstream, promote_after = "replica", None, True
        if role == "replica" and upstream is not None:
            await slots.ensure_own_slot(self.settings, upstream)
        try:
            await asyncio.to_thread(remove_stale_lock_files, self.settings)
            await asyncio.to_thread(write_config, self.settings, role,
                                    upstream if role == "replica" else None)
        except (OSError, ValueError) as exc:
            log.error("start(%s): writing configuration failed: %s", role, exc)
            return False
        self._set_upstream(upstream if role == "replica" else None)
        timeout = self.settings.pg_ctl_timeout
        deadline = time.monotonic() + timeout
        log.info("starting PostgreSQL as %s%s", role,
                 f" streaming from {upstream.name}" if role == "replica" and upstream else "")
        result = await pg_ctl_start(self.settings, timeout)
        if not result.ok:
            log.error("pg_ctl start failed: %s; server log %s ends with:\n%s",
                      result.describe(), self.settings.log_file,
                      await asyncio.to_thread(tail_file, self.settings.log_file))
            return False
        if not await self._wait_ready(role == "replica", deadline):
            log.error("PostgreSQL started but does not answer as %s", role)
            return False
        if promote_after:
            return await self.promote()
        return True

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        """Stop with ``pg_ctl stop -m mode -w``; True when no postmaster runs afterwards (also
        when none ran). A fast stop that does not finish within ``timeout`` (default
        pg_ctl_timeout) is escalated to immediate."""
        if not self.is_running():
            return True
        timeout = self.settings.pg_ctl_timeout if timeout is None else timeout
        await self._probe.close()
        log.info("stopping PostgreSQL (%s)", mode)
        result = await pg_ctl_stop(self.settings, mode, timeout)
        if not result.ok and self.is_running() and mode == StopMode.FAST:
            log.warning("fast stop did not finish (%s): stopping immediately", result.describe())
            result = await pg_ctl_stop(self.settings, StopMode.IMMEDIATE, timeout)
        if self.is_running():
            log.error("PostgreSQL still running after stop: %s", result.describe())
            return False
        return True

    async def promote(self) -> bool:
        """``pg_ctl promote``, repeated every ``_PROMOTE_RESIGNAL`` until ``pg_is_in_recovery()``
        is false (within pg_ctl_timeout); then rewrite the configuration as primary and reload.
        True once writable."""
        snap = await self._snapshot() if self.is_running() else None
        if snap is None:
            log.error("promote: PostgreSQL is not running/answering")
            return False
        deadline = time.monotonic() + self.settings.pg_ctl_timeout
        while snap.in_recovery:
            log.info("promoting PostgreSQL")
            result = await pg_ctl_promote(self.settings)
            if not result.ok:
                log.warning("pg_ctl promote: %s", result.describe())
            until = min(deadline, time.monotonic() + _PROMOTE_RESIGNAL)
            if await self._wait_ready(False, until, poll=_PROMOTE_POLL):
                break
            if time.monotonic() >= deadline or not self.is_running():
                log.error("promote: still in recovery")
                return False
        try:
            await asyncio.to_thread(write_config, self.settings, "primary", None)
        except (OSError, ValueError) as exc:
            log.error("promote: rewriting configuration failed: %s", exc)
        self._set_upstream(None)
        await pg_ctl_reload(self.settings)
        return True

    async def follow(self, upstream: Upstream) -> bool:
        """Point the running replica at ``upstream`` (primary_conninfo, slot) and reload; the
        WAL receiver reconnects. False when not running, or running as a primary."""
        snap = await self._snapshot() if self.is_running() else None
        if snap is None or not snap.in_recovery:
            log.error("follow(%s): PostgreSQL is not a running replica", upstream.name)
            return False
        await slots.ensure_own_slot(self.settings, upstream)
        try:
            await asyncio.to_thread(write_config, self.settings, "replica", upstream)
        except (OSError, ValueError) as exc:
            log.error("follow(%s): writing configuration failed: %s", upstream.name, exc)
            return False
        self._set_upstream(upstream)
        log.info("following %s", upstream.name)
        return await self.reload()

    async def reload(self) -> bool:
        """Rewrite the configuration for the current role/upstream and signal a reload.
        Not running: only the files are rewritten (when the role is known). True on success."""
        state = read_managed_state(self.settings.config_dir)
        role = state[0] if state else None
        if self.is_running():
            snap = await self._snapshot()
            if snap is not None:
                role = "replica" if snap.in_recovery else "primary"
        if role is not None:
            try:
                upstream = self.current_upstream() if role == "replica" else None
                await asyncio.to_thread(write_config, self.settings, role, upstream)
            except (OSError, ValueError) as exc:
                log.error("reload: writing configuration failed: %s", exc)
                return False
        if not self.is_running():
            return True
        result = await pg_ctl_reload(self.settings)
        if not result.ok:
            log.error("reload failed: %s", result.describe())
        return result.ok

    # ------------------------------------------------------------------- creating data
    async def initdb(self) -> bool:
        """initdb into an EMPTY data directory (False otherwise or on failure)."""
        if self.data_state() != DataState.EMPTY:
            log.error("initdb refused: data directory %s is not empty", self.settings.data_dir)
            return False
        self._sysid = None
        self._set_upstream(None)
        return await bootstrap.initdb(self.settings)

    async def create_roles(self) -> None:
        """Superuser password, replication and rewind roles, bootstrap users; idempotent.
        Raises PgError."""
        await bootstrap.create_roles(self.settings)

    async def clone(self, source: Upstream | None, *, basebackup_only: bool = False,
                    replace_data: bool = False) -> bool:
        """Create this replica's data (:func:`pgha.pg.replica_methods.create_replica`; None:
        no running leader) and write its configuration for ``source`` (not started). Refused
        while PostgreSQL runs, and for data that is not EMPTY unless ``replace_data`` (an
        operator's re-initialisation). On failure the directory is left empty."""
        if self.is_running() or (not replace_data and self.data_state() != DataState.EMPTY):
            log.error("clone refused: PostgreSQL is running or %s is not empty",
                      self.settings.data_dir)
            return False
        await self._probe.close()
        self._sysid = None
        self._set_upstream(None)
        if not await replica_methods.create_replica(self.settings, source,
                                                    basebackup_only=basebackup_only):
            return False
        try:
            await asyncio.to_thread(write_config, self.settings, "replica", source)
        except (OSError, ValueError) as exc:
            log.error("clone: writing configuration failed: %s", exc)
            return False
        self._set_upstream(source)
        return True

    async def wipe(self) -> None:
        """Remove the data directory's contents. Raises PgError while a postmaster runs."""
        if self.is_running():
            raise PgError("refusing to wipe the data directory of a running PostgreSQL")
        log.warning("wiping data directory %s", self.settings.data_dir)
        await self._probe.close()
        await asyncio.to_thread(bootstrap.wipe_data_dir, self.settings.data_dir)
        self._sysid = None
        self._set_upstream(None)

    # ------------------------------------------------------------ rejoin building blocks
    async def crash_recover(self) -> bool | None:
        """Single-user crash recovery of an uncleanly stopped former primary; see
        :func:`pgha.pg.rewind.crash_recover` (None: inconclusive, try again later)."""
        ok = await rewind.crash_recover(self.settings)
        if ok:
            self._set_upstream(None)
        return ok

    async def timeline_history(self, source: Upstream) -> list[tuple[int, int]]:
        """``[(timeline, switch_lsn)]`` of ``source``'s current timeline. Raises PgError."""
        return (await rewind.source_timeline_history(self.settings, source))[1]

    async def ensure_source_checkpointed(self, source: Upstream) -> None:
        """CHECKPOINT on ``source`` when its pg_control lags its timeline. Raises PgError."""
        await rewind.ensure_source_checkpointed(self.settings, source)

    async def rewind(self, source: Upstream) -> bool:
        """pg_rewind from ``source``, then regenerate our configuration as its replica (not
        started). False when running or on failure."""
        if self.is_running():
            log.error("pg_rewind refused: PostgreSQL is running")
            return False
        if not await rewind.pg_rewind(self.settings, source):
            return False
        try:
            await asyncio.to_thread(write_config, self.settings, "replica", source)
        except (OSError, ValueError) as exc:
            log.error("rewind: writing configuration failed: %s", exc)
            return False
        self._set_upstream(source)
        return True

    async def rejoin(self, leader: Upstream, use_pg_rewind: bool) -> bool:
        """Bring this (stopped) data back as a replica of ``leader``; see
        :mod:`pgha.pg.rejoin` (discarded WAL is recorded in :attr:`discarded`). True once it
        runs as a replica."""
        return await rejoin_procedure(self, leader, use_pg_rewind, self.discarded)

    # ------------------------------------------------------------------------------ SQL
    async def sync_slots(self, plan: SyncSlots) -> dict[str, str]:
        """Carry out the slot plan; ``{slot: problem}`` (see :class:`pgha.pg.slots.SlotSync`).
        Raises PgError only when the local server cannot be reached."""
        return await self._slots.sync(self.settings, plan)

    async def copy_logical_slots(self, source: Upstream, slots: tuple[SlotSpec, ...]) -> bool:
        """Copy the logical ``slots`` from the primary ``source`` and restart this replica to
        load them; see :mod:`pgha.pg.slotcopy`. False (logged) on failure."""
        return await slotcopy.copy_logical_slots(self, source, slots)

    def peer_received_position(self, conn_url: str) -> AbstractAsyncContextManager[
            Callable[[], Awaitable[int | None]]]:
        """See :func:`pgha.pg.probe.received_position` (raises PgError when entered)."""
        return received_position(self.settings, conn_url)

    async def checkpoint(self) -> None:
        """CHECKPOINT on the local server. Raises PgError."""
        await self.execute("CHECKPOINT")

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement as superuser on the local server; its rows (asyncpg Records).
        Raises PgError."""
        try:
            async with local_connection(self.settings) as conn:
                return list(await conn.fetch(sql, *args, timeout=EXECUTE_TIMEOUT))
        except PgError:
            raise
        except Exception as exc:
            raise PgError(f"query failed: {exc}") from exc

    async def close(self) -> None:
        """Close the pooled probe connection."""
        await self._probe.close()
