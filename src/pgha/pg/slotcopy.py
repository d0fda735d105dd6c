"""Copying logical replication slots from the primary to this replica
(:class:`~pgha.core.actions.CopyLogicalSlots`): PostgreSQL before 17 cannot create logical slots
on a standby, so the slot's on-disk state is copied and loaded by a restart; the copy is then
kept close to the primary's by :class:`~pgha.pg.slots.SlotSync` advances.

Order: read every slot's ``pg_replslot/<name>/state`` from the source (a running primary; each
checked to be the logical slot the plan names), and only then stop the local replica (fast),
write the files (each into ``<name>.tmp`` first, which PostgreSQL removes at startup if we
crash before the rename; file 0600, directory 0700, the file and both directories fsynced) and
start it again as a replica of its upstream. A replica that does not start with the copies
(none should: the copies are refused unless wal_level is logical) is started without them.

A slot is not copied (logged) when this replica no longer holds the WAL from the slot's
``restart_lsn`` on (read from the copied state): the copy could never be advanced, and would be
dropped again at once. It can be copied once the primary's slot has moved past this
replica's oldest WAL segment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from pgha.core.actions import SlotSpec, StopMode, Upstream
from pgha.core.model import PgRole, PgState
from pgha.pg.conf import effective_wal_level
from pgha.pg.controldata import format_lsn
from pgha.pg.errors import PgError
from pgha.pg.probe import local_connection, remote_connection
from pgha.pg.settings import PgSettings
from pgha.pg.slots import SLOT_TIMEOUT, valid_slot_name

log = logging.getLogger("pgha.pg")

SLOT_DIR = "pg_replslot"

READ_STATES_SQL = """
SELECT s.slot_name, s.slot_type, d.datname AS database, s.plugin,
       pg_read_binary_file('pg_replslot/' || s.slot_name || '/state') AS state
  FROM pg_replication_slots s LEFT JOIN pg_database d ON d.oid = s.datoid
 WHERE s.slot_name = ANY($1::text[]) AND NOT pg_is_in_recovery()
"""


class Postgres(Protocol):
    """What the copy needs of :class:`pgha.pg.postgres.Postgres`."""

    @property
    def settings(self) -> PgSettings: ...

    def is_running(self) -> bool: ...

    def current_upstream(self) -> Upstream | None: ...

    async def observe(self) -> PgState: ...

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool: ...

    async def start(self, role: str, upstream: Upstream | None) -> bool: ...


async def read_states(settings: PgSettings, source: Upstream,
                      specs: Iterable[SlotSpec]) -> dict[str, bytes]:
    """``{slot: state file}`` of each of ``specs`` that exists on ``source`` as that logical
    slot (same database and plugin); the others are left out and logged. Raises PgError when
    ``source`` cannot be read or is in recovery."""
    wanted = {s.name: s for s in specs if valid_slot_name(s.name) and s.type == "logical"}
    for spec in specs:
        if spec.name not in wanted:
            log.warning("not copying replication slot %r: not a valid logical slot name/type",
                        spec.name)
    if not wanted:
        return {}
    try:
        async with remote_connection(settings, source.conn_url) as conn:
            if await conn.fetchval("SELECT pg_is_in_recovery()", timeout=SLOT_TIMEOUT):
                raise PgError(f"{source.name} is in recovery: logical slots are copied from "
                              f"the primary only")
            rows = await conn.fetch(READ_STATES_SQL, sorted(wanted), timeout=SLOT_TIMEOUT)
    except PgError:
        raise
    except Exception as exc:  # asyncpg errors of every kind, timeouts
        raise PgError(f"reading replication slots from {source.name} failed: {exc}") from exc
    out: dict[str, bytes] = {}
    found = {str(r["slot_name"]): r for r in rows}
    for name, spec in sorted(wanted.items()):
        row = found.get(name)
        if row is None:
            log.warning("not copying replication slot %s: %s has no such slot", name,
                        source.name)
            continue
        have = (row["slot_type"], row["database"], row["plugin"])
        if have != ("logical", spec.database, spec.plugin):
            log.warning("not copying replication slot %s: on %s it is %s (database %s, plugin "
                        "%s), not logical (database %s, plugin %s)", name, source.name,
                        *have, spec.database, spec.plugin)
            continue
        out[name] = bytes(row["state"])
    return out


SLOT_MAGIC = 0x1051CA1
# ReplicationSlotOnDisk: magic, checksum, version, length (4 bytes each), then the persistent
# data: name (64), database, persistency, xmin, catalog_xmin (4 each), restart_lsn (8)
_RESTART_LSN_AT = 96
WAL_FILES_SQL = ("SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
SEGMENT_SIZE_SQL = "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"


def state_restart_lsn(state: bytes) -> int | None:
    """The ``restart_lsn`` recorded in a slot's ``state`` file (native byte order, as the
    server wrote it); None when the file is not recognised or holds none."""
    if len(state) < _RESTART_LSN_AT + 8 or struct.unpack_from("=I", state)[0] != SLOT_MAGIC:
        return None
    return struct.unpack_from("=Q", state, _RESTART_LSN_AT)[0] or None


def oldest_segment_start(names: Iterable[str], segment_size: int) -> int | None:
    """The LSN where the oldest of the WAL segment files ``names`` starts (any timeline)."""
    starts = [(int(n[8:16], 16) << 32) + int(n[16:24], 16) * segment_size for n in names]
    return min(starts) if starts else None


async def local_oldest_wal(settings: PgSettings) -> int | None:
    """Where the oldest WAL segment in our ``pg_wal`` starts; None when there is none or it
    cannot be read (logged at debug)."""
    try:
        async with local_connection(settings) as conn:
            size = await conn.fetchval(SEGMENT_SIZE_SQL, timeout=SLOT_TIMEOUT)
            rows = await conn.fetch(WAL_FILES_SQL, timeout=SLOT_TIMEOUT)
    except Exception as exc:  # PgError, asyncpg errors of every kind, timeouts
        log.debug("reading our WAL segments failed: %s", exc)
        return None
    return oldest_segment_start((str(r["name"]) for r in rows), int(size))


def _without_missing_wal(states: dict[str, bytes], oldest: int | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, state in states.items():
        restart = state_restart_lsn(state)
        if oldest is not None and restart is not None and restart < oldest:
            log.warning("not copying replication slot %s: this replica no longer holds the "
                        "WAL from %s on that it needs (its oldest WAL starts at %s)", name,
                        format_lsn(restart), format_lsn(oldest))
            continue
        out[name] = state
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_state(data_dir: Path, name: str, state: bytes) -> None:
    """Make ``data_dir/pg_replslot/<name>/state`` hold ``state`` (replacing a slot of that
    name), crash-safe: written into ``<name>.tmp`` (removed by PostgreSQL at startup), fsynced,
    renamed, and the directories fsynced. PostgreSQL must be stopped. Raises OSError."""
    if not valid_slot_name(name):
        raise ValueError(f"invalid slot name {name!r}")
    root = data_dir / SLOT_DIR
    final, tmp = root / name, root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp, 0o700)
    os.chmod(tmp, 0o700)
    fd = os.open(tmp / "state", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(state)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(final)
    _fsync(root)


def remove_slots(data_dir: Path, names: Iterable[str]) -> None:
    """Remove the slot directories ``names`` (PostgreSQL stopped). Raises OSError."""
    root = data_dir / SLOT_DIR
    for name in names:
        if valid_slot_name(name) and (root / name).exists():
            shutil.rmtree(root / name)
    _fsync(root)


def _write_all(data_dir: Path, states: Mapping[str, bytes]) -> None:
    for name, state in sorted(states.items()):
        write_state(data_dir, name, state)


async def copy_logical_slots(pg: Postgres, source: Upstream,
                             specs: tuple[SlotSpec, ...]) -> bool:
    """See the module docstring. True when every copy was written and PostgreSQL runs again as
    a replica; False otherwise (logged), with PostgreSQL running as a replica whenever it was
    one before (nothing is stopped when the states cannot be read first)."""
    state = await pg.observe()
    if not state.accepting or state.role is not PgRole.REPLICA:
        log.error("copying logical slots: PostgreSQL is not a running replica")
        return False
    upstream = pg.current_upstream() or source
    wal_level = effective_wal_level(pg.settings)
    if wal_level != "logical":
        log.error("copying logical slots refused: wal_level would be %s, and PostgreSQL does "
                  "not start with logical slots unless it is logical", wal_level)
        return False
    try:
        states = await read_states(pg.settings, source, specs)
    except PgError as exc:
        log.error("copying logical slots: %s", exc)
        return False
    states = _without_missing_wal(states, await local_oldest_wal(pg.settings))
    if not states:
        log.error("copying logical slots: none of %s could be copied from %s",
                  ", ".join(s.name for s in specs) or "(none)", source.name)
        return False
    log.info("copying logical replication slots %s from %s: restarting PostgreSQL",
             ", ".join(sorted(states)), source.name)
    if not await pg.stop(StopMode.FAST):
        log.error("copying logical slots: PostgreSQL did not stop")
        return False
    data_dir = pg.settings.data_dir
    written = True
    try:
        await asyncio.to_thread(_write_all, data_dir, states)
    except (OSError, ValueError) as exc:
        log.error("copying logical slots: writing into %s failed: %s", data_dir / SLOT_DIR, exc)
        written = False
    if await pg.start("replica", upstream):
        return written
    if pg.is_running():
        log.error("copying logical slots: PostgreSQL is still starting")
        return False
    log.error("copying logical slots: PostgreSQL did not start with the copies; removing them")
    try:
        await asyncio.to_thread(remove_slots, data_dir, states)
    except OSError as exc:
        log.error("removing the copied slots failed: %s", exc)
    await pg.start("replica", upstream)
    return False
