"""SQL access to PostgreSQL with asyncpg: the local probe and short-lived connections.

Every connection is the superuser's, with its libpq options (:mod:`pgha.pg.connparams`): local
ones over the unix socket in ``settings.socket_dir`` (``use_unix_socket``) or TCP to the local
address; remote ones (a leader, a clone source) over TCP to the host/port of its ``conn_url``.
Every connect and every query runs under a timeout; failures raise :class:`PgError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg

from pgha.pg.connparams import asyncpg_params, check_key_file, local_host
from pgha.pg.errors import PgError
from pgha.pg.settings import PgSettings, parse_conn_url
from pgha.pg.sqlcolumns import Columns, select_sql

log = logging.getLogger("pgha.pg")

CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 5.0
APPLICATION_NAME = "pgha"

Connection = Any  # asyncpg.Connection (asyncpg ships no type information)
T = TypeVar("T")

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

SNAPSHOT_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('server_version_num')::int AS server_version,
       pg_postmaster_start_time() AS start_time,
       (SELECT system_identifier FROM pg_control_system()) AS sysid,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint END AS flush_lsn,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END AS walfile_tli,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive_lsn,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_lsn,
       pg_last_xact_replay_timestamp() AS replay_timestamp,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       (SELECT received_tli FROM pg_stat_wal_receiver) AS received_tli,
       current_setting('synchronous_standby_names') AS sync_standby_names
"""

#: ``pg_stat_replication`` as the agent reads it (:mod:`pgha.pg.observation` reads the same rows)
REPLICATION_COLUMNS: Columns = (
    ("usename", "usename"), ("application_name", "application_name"),
    ("client_addr", "client_addr::text"), ("state", "state"), ("sync_state", "sync_state"),
    ("sync_priority", "sync_priority"),
    ("flush_lsn", "pg_wal_lsn_diff(flush_lsn, '0/0')::bigint"),
)
REPLICATION_SOURCE = "pg_stat_replication"
REPLICATION_ORDER = "application_name, pid"
REPLICATION_SQL = select_sql(REPLICATION_COLUMNS, REPLICATION_SOURCE, REPLICATION_ORDER)


@dataclass(frozen=True)
class Snapshot:
    """One consistent-enough status read of a running server. LSNs are ints."""

    in_recovery: bool
    server_version: int
    postmaster_start_time: str | None
    sysid: str | None
    flush_lsn: int | None  # primary only
    walfile_tli: int | None  # primary only: timeline of the current WAL file (exact)
    receive_lsn: int | None
    replay_lsn: int | None
    replay_timestamp: str | None
    paused: bool | None
    checkpoint_tli: int | None
    receiver_status: str | None
    received_tli: int | None
    sync_standby_names: str | None = None

    @property
    def timeline(self) -> int | None:
        """The server's current timeline.

        Primary: from the current WAL file name (pg_control's checkpoint timeline is stale
        until the first checkpoint after a promotion). Replica: the later of the WAL receiver's
        timeline and the latest restartpoint's."""
        if not self.in_recovery:
            return self.walfile_tli or self.checkpoint_tli
        known = [t for t in (self.received_tli, self.checkpoint_tli) if t]
        return max(known) if known else None

    @property
    def wal_position(self) -> int | None:
        if not self.in_recovery:
            return self.flush_lsn
        known = [p for p in (self.receive_lsn, self.replay_lsn) if p is not None]
        return max(known) if known else None

    @property
    def streaming(self) -> bool:
        return self.receiver_status == "streaming"


def _text(value: Any) -> str | None:
    """Text for the REST API; timestamps as ``2024-01-31 12:00:00.123456+00:00``."""
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


async def snapshot(conn: Connection, timeout: float = QUERY_TIMEOUT) -> Snapshot:
    """Read a :class:`Snapshot`; raises PgError."""
    return snapshot_of(await fetch_status_row(conn, SNAPSHOT_SQL, timeout))


async def fetch_status_row(conn: Connection, sql: str, timeout: float) -> Any:
    """The one row of ``sql`` (a status query); raises PgError."""
    try:
        return await conn.fetchrow(sql, timeout=timeout)
    except _DB_ERRORS as exc:
        raise PgError(f"status query failed: {exc}") from exc


def snapshot_of(row: Any) -> Snapshot:
    """The :class:`Snapshot` of a row holding :data:`SNAPSHOT_SQL`'s columns."""
    walfile_tli = row["walfile_tli"]
    sysid = _int(row["sysid"])
    return Snapshot(
        in_recovery=bool(row["in_recovery"]),
        server_version=int(row["server_version"]),
        postmaster_start_time=_text(row["start_time"]),
        sysid=None if sysid is None else str(sysid % (1 << 64)),
        flush_lsn=_int(row["flush_lsn"]),
        walfile_tli=int(walfile_tli, 16) if walfile_tli else None,
        receive_lsn=_int(row["receive_lsn"]),
        replay_lsn=_int(row["replay_lsn"]),
        replay_timestamp=_text(row["replay_timestamp"]),
        paused=None if row["paused"] is None else bool(row["paused"]),
        checkpoint_tli=_int(row["checkpoint_tli"]),
        receiver_status=_text(row["receiver_status"]),
        received_tli=_int(row["received_tli"]),
        sync_standby_names=_text(row["sync_standby_names"]),
    )


def status_fields(snap: Snapshot, sysid: str | None) -> dict[str, Any]:
    """``GET /patroni`` fields of a snapshot (``replication`` is added by the caller)."""
    out: dict[str, Any] = {
        "postmaster_start_time": snap.postmaster_start_time,
        "server_version": snap.server_version,
        "timeline": snap.timeline,
        "database_system_identifier": sysid or snap.sysid,
    }
    if snap.in_recovery:
        received = snap.receive_lsn if snap.receive_lsn is not None else snap.replay_lsn
        out["xlog"] = {"received_location": received, "replayed_location": snap.replay_lsn,
                       "replayed_timestamp": snap.replay_timestamp, "paused": bool(snap.paused)}
        out["replication_state"] = "streaming" if snap.streaming else "in archive recovery"
    else:
        out["xlog"] = {"location": snap.flush_lsn}
    return out


async def replication(conn: Connection, timeout: float = QUERY_TIMEOUT) -> list[dict[str, Any]]:
    """Rows of pg_stat_replication as dicts; raises PgError."""
    try:
        rows = await conn.fetch(REPLICATION_SQL, timeout=timeout)
    except _DB_ERRORS as exc:
        raise PgError(f"pg_stat_replication query failed: {exc}") from exc
    return [dict(row) for row in rows]


async def _connect(settings: PgSettings, host: str, port: int, timeout: float,
                   database: str = "postgres") -> Connection:
    """Connect as the superuser to ``database`` on ``host:port`` (a socket directory when it
    starts with ``/``). A client key libpq would refuse is refused here too, naming the file."""
    if not host.startswith("/") and (problem := check_key_file(settings.superuser, "superuser")):
        raise PgError(f"cannot connect to {host}:{port}: {problem}")
    kwargs = asyncpg_params(settings.superuser, host, port)
    try:
        async with asyncio.timeout(timeout + 1):
            return await asyncpg.connect(
                database=database, timeout=timeout,
                server_settings={"application_name": APPLICATION_NAME}, **kwargs)
    except (*_DB_ERRORS, ValueError) as exc:
        raise PgError(f"cannot connect to {host}:{port}: {exc}") from exc


async def connect_local(settings: PgSettings, timeout: float = CONNECT_TIMEOUT,
                        database: str = "postgres") -> Connection:
    """Superuser connection to ``database`` on the local server (socket or TCP, see
    :func:`pgha.pg.connparams.local_host`); raises PgError."""
    return await _connect(settings, local_host(settings), settings.port, timeout, database)


async def connect_remote(settings: PgSettings, conn_url: str,
                         timeout: float = CONNECT_TIMEOUT,
                         database: str = "postgres") -> Connection:
    """Superuser connection to another member (host/port of its ``conn_url``); raises PgError."""
    try:
        host, port = parse_conn_url(conn_url)
    except ValueError as exc:
        raise PgError(str(exc)) from exc
    return await _connect(settings, host, port, timeout, database)


WRITABLE_POSITION_SQL = (
    "SELECT system_identifier::text, CASE WHEN pg_is_in_recovery()"
    " OR current_setting('transaction_read_only')::bool THEN NULL"
    " ELSE (pg_current_wal_lsn() - '0/0')::bigint END FROM pg_control_system()")


async def remote_writable_position(settings: PgSettings, conn_url: str, timeout: float,
                                   system_id: str | None) -> int | None:
    """The WAL position of another member's server if it accepts writes now (not in recovery,
    not read-only) and belongs to the cluster ``system_id`` (any when None); None when it does
    not, or does not answer within ``timeout`` (connection and query together). Never
    raises."""
    conn: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await connect_remote(settings, conn_url, timeout)
            row = await conn.fetchrow(WRITABLE_POSITION_SQL)
    except (PgError, *_DB_ERRORS) as exc:
        log.debug("PostgreSQL at %s not checked: %s", conn_url, exc)
        return None
    finally:
        if conn is not None:
            conn.terminate()
    if row is None or row[1] is None or (system_id and row[0] != system_id):
        return None
    return int(row[1])


async def close_quietly(conn: Connection | None) -> None:
    """Close ``conn`` gracefully within a second, else abort it. Never raises."""
    if conn is None:
        return
    try:
        await conn.close(timeout=1.0)
    except Exception:  # closing is best effort
        with contextlib.suppress(Exception):
            conn.terminate()


@contextlib.asynccontextmanager
async def local_connection(settings: PgSettings,
                           database: str = "postgres") -> AsyncIterator[Connection]:
    """A short-lived local superuser connection to ``database`` (closed on exit)."""
    conn = await connect_local(settings, database=database)
    try:
        yield conn
    finally:
        await close_quietly(conn)


@contextlib.asynccontextmanager
async def remote_connection(settings: PgSettings, conn_url: str,
                            database: str = "postgres") -> AsyncIterator[Connection]:
    """A short-lived superuser connection to ``database`` on another member (closed on
    exit)."""
    conn = await connect_remote(settings, conn_url, database=database)
    try:
        yield conn
    finally:
        await close_quietly(conn)


_RECEIVED_SQL = "SELECT pg_last_wal_receive_lsn() - '0/0'"


@contextlib.asynccontextmanager
async def received_position(settings: PgSettings, conn_url: str,
                            ) -> AsyncIterator[Callable[[], Awaitable[int | None]]]:
    """A connection to another member, open while entered (raises PgError when it cannot be
    opened), yielding a function that returns the WAL position that member's PostgreSQL has
    received (None when the query fails or it receives nothing)."""
    async with remote_connection(settings, conn_url) as conn:
        async def received() -> int | None:
            try:
                value = await conn.fetchval(_RECEIVED_SQL, timeout=1.0)
            except Exception as exc:  # asyncpg errors of every kind: the caller polls again
                log.debug("received position query failed: %s", exc)
                return None
            return int(value) if value is not None else None

        yield received


class LocalProbe:
    """One pooled local connection for frequent status reads, used by one query at a time.

    Any failure closes the connection; the next call reconnects.
    """

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._tli_seen: tuple[str | None, int | None] = (None, None)  # (postmaster start, tli)

    async def run(self, settings: PgSettings,
                  query: Callable[[Connection], Awaitable[T]]) -> T:
        """``await query(conn)`` on the pooled connection (connected first when needed). The
        query must put its own timeout on each statement and raise PgError on failure; any
        exception closes the connection and propagates."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect_local(settings)
                return await query(self._conn)
            except BaseException:  # also cancellation: the connection state is unknown
                conn, self._conn = self._conn, None
                await close_quietly(conn)
                raise

    async def snapshot(self, settings: PgSettings) -> Snapshot:
        """Status of the local server; raises PgError when it does not answer.

        The WAL receiver's timeline vanishes while it reconnects (e.g. after following a new
        upstream), and pg_control's lags until a restartpoint: the highest timeline this
        postmaster has received is remembered, so a replica that already streams a newer
        timeline never looks as if it ran past the end of an older one."""
        return self.remember_timeline(await self.run(settings, snapshot))

    def remember_timeline(self, snap: Snapshot) -> Snapshot:
        """``snap`` with the highest timeline this postmaster was seen to receive (see
        :meth:`snapshot`), for every snapshot read over this probe."""
        key = snap.postmaster_start_time
        if key != self._tli_seen[0]:
            self._tli_seen = (key, None)
        if snap.in_recovery and snap.timeline is not None:
            seen = self._tli_seen[1]
            if seen is not None and seen > snap.timeline:
                snap = replace(snap, received_tli=seen)
            else:
                self._tli_seen = (key, snap.timeline)
        return snap

    async def replication(self, settings: PgSettings) -> list[dict[str, Any]]:
        return await self.run(settings, replication)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        await close_quietly(conn)
