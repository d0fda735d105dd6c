"""Replication slots of the local server: what exists (:func:`read_slots`), the slot plan's
drops, creations and advances (:class:`SlotSync`), and this replica's own slot on its upstream
(:func:`ensure_own_slot`). Copying logical slots to a replica is :mod:`pgha.pg.slotcopy`.

Every statement runs under :data:`SLOT_TIMEOUT`; slot names are checked
(:func:`valid_slot_name`) before any SQL sees them, and are passed as bind parameters.
Logical slots are created and advanced over a connection to their own database (the
superuser's connection parameters, the database by name).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.core.actions import SlotSpec, SyncSlots, Upstream, slot_name
from pgha.core.model import ObservedSlot
from pgha.core.slots import SLOT_NAME, slot_matches
from pgha.core.standby import REMOTE
from pgha.pg.controldata import format_lsn
from pgha.pg.errors import PgError
from pgha.pg.probe import (
    Connection,
    close_quietly,
    connect_local,
    remote_connection,
)
from pgha.pg.settings import PgSettings
from pgha.pg.sqlcolumns import Columns, select_sql

log = logging.getLogger("pgha.pg")

SLOT_TIMEOUT = 10.0

#: the non-temporary replication slots as the agent reads them (also in one statement with the
#: rest of an observation: :mod:`pgha.pg.observation`)
SLOT_COLUMNS: Columns = (
    ("slot_name", "s.slot_name"), ("slot_type", "s.slot_type"), ("database", "d.datname"),
    ("plugin", "s.plugin"), ("active", "s.active"),
    ("position", "pg_wal_lsn_diff(CASE WHEN s.slot_type = 'logical' THEN s.confirmed_flush_lsn"
                 " ELSE s.restart_lsn END, '0/0')::bigint"),
    ("lost", "coalesce(s.wal_status = 'lost', false)"),
)
SLOTS_SOURCE = ("pg_replication_slots s LEFT JOIN pg_database d ON d.oid = s.datoid"
                " WHERE NOT s.temporary")
SLOTS_ORDER = "s.slot_name"
SLOTS_SQL = select_sql(SLOT_COLUMNS, SLOTS_SOURCE, SLOTS_ORDER)
# atomic: a slot that became active since it was observed is not dropped
DROP_SQL = ("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = $1 AND NOT active")
CREATE_PHYSICAL_SQL = ("SELECT pg_wal_lsn_diff(lsn, '0/0')::bigint"
                       " FROM pg_create_physical_replication_slot($1, true)")
CREATE_LOGICAL_SQL = ("SELECT pg_wal_lsn_diff(lsn, '0/0')::bigint"
                      " FROM pg_create_logical_replication_slot($1, $2)")
ADVANCE_SQL = ("SELECT pg_wal_lsn_diff(end_lsn, '0/0')::bigint"
               " FROM pg_replication_slot_advance($1, $2::pg_lsn)")

WAL_REMOVED = "its WAL was removed"
NO_WAL_RESERVED = "it reserved no WAL"


def valid_slot_name(name: object) -> bool:
    """True for a name PostgreSQL accepts for a slot and pgha uses: ``[a-z0-9_]{1,63}``."""
    return isinstance(name, str) and SLOT_NAME.fullmatch(name) is not None


def valid_database(name: object) -> bool:
    """True for something usable as a database (or plugin) name: 1 to 63 characters, no NUL."""
    return isinstance(name, str) and 0 < len(name) <= 63 and "\0" not in name


def wal_gone(message: str) -> bool:
    """True when PostgreSQL's error ``message`` says a slot cannot be used because the WAL it
    needs is gone: PostgreSQL 15 says ``replication slot "x" cannot be advanced`` (detail:
    never reserved WAL, or invalidated) for a lost slot, and ``requested WAL segment ... has
    already been removed`` when decoding reaches a removed segment."""
    return "cannot be advanced" in message or "has already been removed" in message


def creation_problem(spec: SlotSpec, message: str) -> str:
    """What to report for a failed creation of ``spec`` with PostgreSQL's error ``message``."""
    if "wal_level" in message:
        return ("cannot be created: wal_level is not logical (pgha raises it for logical "
                "slots; PostgreSQL must be restarted for it to take effect)")
    if "does not exist" in message and spec.database and spec.database in message:
        return f"cannot be created: database {spec.database!r} does not exist"
    return f"cannot be created: {message}"


def row_slot(row: Mapping[str, Any]) -> ObservedSlot:
    position = row["position"]
    return ObservedSlot(
        name=str(row["slot_name"]), type=str(row["slot_type"]),
        database=None if row["database"] is None else str(row["database"]),
        plugin=None if row["plugin"] is None else str(row["plugin"]),
        active=bool(row["active"]),
        position=None if position is None else int(position),
        lost=bool(row["lost"]))


async def read_slots(conn: Connection, timeout: float = SLOT_TIMEOUT,
                     ) -> tuple[ObservedSlot, ...]:
    """Every row of ``pg_replication_slots`` (by name) but temporary slots (they belong to a
    session, e.g. a running pg_basebackup's); raises PgError."""
    try:
        rows = await conn.fetch(SLOTS_SQL, timeout=timeout)
    except Exception as exc:  # asyncpg errors of every kind, timeouts, closed connections
        raise PgError(f"listing replication slots failed: {exc}") from exc
    return tuple(row_slot(row) for row in rows)


def _describe(slot: ObservedSlot | SlotSpec) -> str:
    if slot.type != "logical":
        return slot.type
    return f"logical (database {slot.database}, plugin {slot.plugin})"


@dataclass
class _Session:
    """The connections of one :meth:`SlotSync.sync`: the main one (database ``postgres``) and
    one per database logical slots live in, opened on first use (a failed connection is
    remembered for the rest of the call)."""

    settings: PgSettings
    main: Connection
    by_db: dict[str, Connection | PgError] = field(default_factory=dict)

    async def conn_for(self, slot: ObservedSlot | SlotSpec) -> Connection:
        """The connection to use for ``slot``; raises PgError."""
        if slot.type != "logical" or not slot.database or slot.database == "postgres":
            return self.main
        got = self.by_db.get(slot.database)
        if got is None:
            try:
                got = await connect_local(self.settings, database=slot.database)
            except PgError as exc:
                got = exc
            self.by_db[slot.database] = got
        if isinstance(got, PgError):
            raise got
        return got

    async def close(self) -> None:
        for conn in self.by_db.values():
            if not isinstance(conn, PgError):
                await close_quietly(conn)


@contextlib.asynccontextmanager
async def _session(settings: PgSettings) -> AsyncIterator[_Session]:
    main = await connect_local(settings)
    session = _Session(settings, main)
    try:
        yield session
    finally:
        await session.close()
        await close_quietly(main)


class SlotSync:
    """Carries out :class:`~pgha.core.actions.SyncSlots` on the local server.

    One instance per :class:`~pgha.pg.postgres.Postgres`; it remembers the last problem
    reported per slot so that a persistent one is logged at WARNING once per distinct message
    (then at DEBUG) until that slot is handled without a problem. Not safe for concurrent
    calls (the agent's executor runs one action at a time)."""

    def __init__(self) -> None:
        self._reported: dict[str, str] = {}

    def _problem(self, problems: dict[str, str], name: str, message: str) -> None:
        problems[name] = message
        if self._reported.get(name) != message:
            self._reported[name] = message
            log.warning("replication slot %s: %s", name, message)
        else:
            log.debug("replication slot %s: %s", name, message)

    async def sync(self, settings: PgSettings, plan: SyncSlots) -> dict[str, str]:
        """Drops, then creations, then advances (see :class:`~pgha.core.actions.SyncSlots`).

        Returns ``{slot: problem}`` for each slot that failed or was handled unusually (not
        dropped because it is in use, recreated or dropped because its WAL was removed, an
        invalid name, ...); empty when everything went as planned. One slot's failure never
        stops the others. Raises PgError only when the local server cannot be reached (no
        connection, or the slots cannot be listed)."""
        problems: dict[str, str] = {}
        mentioned = {*plan.drop, *(s.name for s in plan.create), *(n for n, _ in plan.advance)}
        for name in sorted(n for n in mentioned if not valid_slot_name(n)):
            self._problem(problems, str(name), "invalid slot name (expected [a-z0-9_]{1,63})")
        async with _session(settings) as session:
            try:
                in_recovery = bool(await session.main.fetchval("SELECT pg_is_in_recovery()",
                                                               timeout=SLOT_TIMEOUT))
            except Exception as exc:
                raise PgError(f"replication slots: the server does not answer: {exc}") from exc
            existing = {s.name: s for s in await read_slots(session.main)}
            for name in plan.drop:
                if valid_slot_name(name):
                    await self._drop(session, existing, name, problems)
            for spec in plan.create:
                if valid_slot_name(spec.name):
                    await self._create(session, existing, spec, in_recovery, problems)
            for name, lsn in plan.advance:
                if valid_slot_name(name):
                    await self._advance(session, existing, name, lsn, problems)
        for name in mentioned - problems.keys():
            self._reported.pop(name, None)
        return problems

    async def _drop(self, session: _Session, existing: dict[str, ObservedSlot], name: str,
                    problems: dict[str, str]) -> bool:
        """Drop ``name`` if it is inactive; True when it is gone afterwards."""
        try:
            rows = await session.main.fetch(DROP_SQL, name, timeout=SLOT_TIMEOUT)
        except Exception as exc:  # e.g. it became active between the check and the drop
            self._problem(problems, name, f"could not be dropped: {exc}")
            return False
        if rows:
            log.info("dropped replication slot %s", name)
            existing.pop(name, None)
            return True
        if name in existing:
            self._problem(problems, name, "not dropped: it is in use")
            return False
        return True  # already gone

    async def _create(self, session: _Session, existing: dict[str, ObservedSlot],
                      spec: SlotSpec, in_recovery: bool, problems: dict[str, str]) -> bool:
        """Create ``spec`` unless a slot of that name exists; True when it exists afterwards
        as specified."""
        name = spec.name
        if (have := existing.get(name)) is not None:
            if slot_matches(spec, have):
                return True
            self._problem(problems, name, f"not created: a {_describe(have)} slot of that "
                                          f"name exists (wanted {_describe(spec)})")
            return False
        args: tuple[str | None, ...]
        if spec.type == "physical":
            sql, args = CREATE_PHYSICAL_SQL, (name,)
        elif spec.type == "logical":
            if in_recovery:
                self._problem(problems, name, "a logical slot cannot be created on a standby "
                                              "(it is copied from the primary)")
                return False
            if not valid_database(spec.database) or not valid_database(spec.plugin):
                self._problem(problems, name, "not created: a logical slot needs a valid "
                                              "database and plugin")
                return False
            sql, args = CREATE_LOGICAL_SQL, (name, spec.plugin)
        else:
            self._problem(problems, name, f"not created: unknown slot type {spec.type!r}")
            return False
        try:
            conn = await session.conn_for(spec)
            position = await conn.fetchval(sql, *args, timeout=SLOT_TIMEOUT)
        except Exception as exc:
            self._problem(problems, name, creation_problem(spec, str(exc)))
            return False
        log.info("created %s replication slot %s", _describe(spec), name)
        existing[name] = ObservedSlot(name, spec.type, spec.database, spec.plugin,
                                      position=None if position is None else int(position))
        return True

    async def _advance(self, session: _Session, existing: dict[str, ObservedSlot], name: str,
                       lsn: int, problems: dict[str, str]) -> None:
        have = existing.get(name)
        if have is None:
            self._problem(problems, name, "cannot be advanced: it does not exist")
            return
        if have.lost:
            await self._replace(session, existing, have, WAL_REMOVED, problems)
            return
        if have.position is not None and have.position >= lsn:
            return  # never backwards
        if have.active:
            self._problem(problems, name, "cannot be advanced: it is in use")
            return
        if have.position is None and have.type == "physical":
            await self._replace(session, existing, have, NO_WAL_RESERVED, problems)
            return
        if not 0 < lsn < 1 << 64:
            self._problem(problems, name, f"cannot be advanced to {lsn}: not an LSN")
            return
        try:
            conn = await session.conn_for(have)
            end = await conn.fetchval(ADVANCE_SQL, name, lsn, timeout=SLOT_TIMEOUT)
        except Exception as exc:
            if wal_gone(str(exc)):
                await self._replace(session, existing, have, WAL_REMOVED, problems)
            else:
                self._problem(problems, name, f"cannot be advanced: {exc}")
            return
        log.debug("advanced replication slot %s to %s (asked %s)", name,
                  format_lsn(int(end)) if end is not None else None, format_lsn(lsn))
        if end is not None:
            existing[name] = ObservedSlot(have.name, have.type, have.database, have.plugin,
                                          position=int(end))

    async def _replace(self, session: _Session, existing: dict[str, ObservedSlot],
                       have: ObservedSlot, why: str, problems: dict[str, str]) -> None:
        """A copy that cannot be advanced: a physical one is dropped and created again
        (reserving WAL from now on), a logical one dropped (the plan copies it again)."""
        name = have.name
        if not await self._drop(session, existing, name, problems):
            return
        if have.type != "physical":
            self._problem(problems, name, f"dropped: {why}")
            return
        spec = SlotSpec(name, "physical")
        if await self._create(session, existing, spec, False, problems):
            self._problem(problems, name, f"recreated: {why}")


async def ensure_own_slot(settings: PgSettings, upstream: Upstream) -> None:
    """Create this member's physical slot on ``upstream`` if it is missing, so the replica can
    stream at once instead of waiting for the leader's next slot sync (the WAL receiver would
    otherwise retry only every ``wal_retrieve_retry_interval``). Nothing for a ``nostream``
    member (it replays from the archive only) or without ``use_slots``. Best effort: failures
    are logged, never raised; the leader's slot sync creates the slot anyway."""
    if not settings.use_slots or settings.nostream or upstream.name == REMOTE \
            or not upstream.conn_url:
        return  # slots on a standby cluster's remote are the operator's job
    name = slot_name(settings.name)
    try:
        async with remote_connection(settings, upstream.conn_url) as conn:
            await conn.execute(
                "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
                "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", name,
                timeout=SLOT_TIMEOUT)
    except Exception as exc:
        log.warning("could not create slot %s on %s: %s", name, upstream.name, exc)
