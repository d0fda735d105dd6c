"""Recording the WAL a rejoin discards: the scan before pg_rewind or a wipe, and the reports
kept beside the data directory. The report's JSON schema is in :mod:`pgha.pg.waldump`.

Contract:

* :func:`collect` reads the old timeline's WAL from the divergence point (the leader's history
  says where ``timeline`` ended) to its end, with ``pg_waldump`` under :data:`WALDUMP_TIMEOUT`
  and at most :data:`MAX_RECORDS` records, streaming (memory bounded by the caps of
  :class:`pgha.pg.waldump.WalScan`). It names relations through the new leader under
  :data:`NAMES_TIMEOUT`. It never raises (except CancelledError): whatever fails is written
  into the report's ``reason`` and the rejoin goes on.
* The caller destroys the data only after :func:`collect` returned, then calls
  :meth:`DiscardedLog.record` with the method used.
* :class:`DiscardedLog` keeps the :data:`MAX_REPORTS` most recent reports in
  ``<parent of data_dir>/<name>-pgha-discarded.json`` (a JSON list, replaced atomically), so
  they survive an agent restart; an unreadable file is logged and treated as empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgha.core.actions import Upstream
from pgha.pg import controldata
from pgha.pg.cmd import clean_env, kill_group
from pgha.pg.conf import atomic_write
from pgha.pg.errors import PgError
from pgha.pg.probe import remote_connection
from pgha.pg.rewind import source_timeline_history
from pgha.pg.settings import PgSettings
from pgha.pg.waldump import ScanResult, WalScan, format_lsn, segment_start, summary, tally

log = logging.getLogger("pgha.pg")

WALDUMP_TIMEOUT = 60.0
MAX_RECORDS = 2_000_000
NAMES_TIMEOUT = 10.0
MAX_DATABASES = 16
MAX_REPORTS = 20
_LINE_LIMIT = 1 << 20
_STDERR_LIMIT = 64 << 10
_YIELD_EVERY = 2000  # lines parsed between two yields to the event loop
_SEGMENT_SIZE_KEY = "Bytes per WAL segment"
_SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
_FILENODE = re.compile(r"^(\d+)/(\d+)/(\d+)$")
_NAMES_SQL = """
SELECT f.spc::int8, f.node::int8, n.nspname, c.relname
FROM unnest($1::oid[], $2::oid[]) AS f(spc, node)
JOIN pg_class c ON c.oid = pg_filenode_relation(f.spc, f.node)
JOIN pg_namespace n ON n.oid = c.relnamespace"""


def report_path(settings: PgSettings) -> Path:
    """Where this member's reports are kept: beside (not inside) the data directory, which a
    re-clone wipes."""
    return settings.data_dir.parent / f"{settings.name}-pgha-discarded.json"


# ------------------------------------------------------------------------------ keeping
def load_reports(path: Path) -> list[dict[str, Any]]:
    """The reports in ``path``; ``[]`` when missing or unreadable (logged). Blocking."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("discarded-WAL reports in %s unreadable (%s): starting a new list", path,
                    exc)
        return []
    if not isinstance(data, list):
        log.warning("discarded-WAL reports in %s: not a JSON list; starting a new list", path)
        return []
    return [r for r in data if isinstance(r, dict)]


_SCAN_FIELDS = ("to_lsn", "bytes", "complete", "reason", "counts", "rows", "transactions")


def merge(reports: Sequence[Mapping[str, Any]], report: Mapping[str, Any],
          limit: int = MAX_REPORTS) -> list[dict[str, Any]]:
    """``reports`` plus ``report`` (last), at most ``limit`` (the oldest dropped). A report
    for the same (member, timeline, from_lsn) is replaced, except that a new scan that named
    no transaction does not erase an earlier one that did (a failed pg_rewind may have
    destroyed the WAL the first attempt read)."""
    key = (report.get("member"), report.get("timeline"), report.get("from_lsn"))
    new = dict(report)
    out: list[dict[str, Any]] = []
    for old in reports:
        if (old.get("member"), old.get("timeline"), old.get("from_lsn")) != key:
            out.append(dict(old))
        elif old.get("transactions") and not new.get("transactions"):
            new.update({f: old[f] for f in _SCAN_FIELDS if f in old})
    out.append(new)
    return out[-limit:] if limit > 0 else []


class DiscardedLog:
    """This member's reports, loaded once and kept in memory; :meth:`record` writes through
    (blocking: call it in a thread)."""

    def __init__(self, path: Path, limit: int = MAX_REPORTS) -> None:
        self.path = path
        self.limit = limit
        self._reports: tuple[dict[str, Any], ...] = tuple(load_reports(path))

    @property
    def reports(self) -> tuple[dict[str, Any], ...]:
        """Oldest first. Replaced, never mutated: readers need no lock."""
        return self._reports

    def record(self, report: Mapping[str, Any]) -> None:
        """Add ``report`` and write the file atomically; an OSError is logged and the report
        still kept in memory (the rejoin must not fail for it)."""
        self._reports = tuple(merge(self._reports, report, self.limit))
        try:
            atomic_write(self.path, json.dumps(list(self._reports), indent=1) + "\n", 0o600)
        except OSError as exc:
            log.error("cannot write discarded-WAL reports to %s: %s", self.path, exc)


def finish_report(report: Mapping[str, Any], method: str, now: datetime | None = None
                  ) -> dict[str, Any]:
    """``report`` with ``method`` ("rewind" | "reclone") and ``recorded_at``."""
    when = now or datetime.now(UTC)
    return {**report, "method": method,
            "recorded_at": when.astimezone(UTC).isoformat(timespec="seconds")}


def log_report(report: Mapping[str, Any]) -> None:
    log.warning("discarded WAL: member %s, timeline %s, %s from %s: %s", report.get("member"),
                report.get("timeline"), report.get("method"), report.get("leader"),
                summary(report))


# ----------------------------------------------------------------------------- collecting
async def collect(settings: PgSettings, leader: Upstream,
                  leader_history: tuple[int, list[tuple[int, int]]] | None = None
                  ) -> dict[str, Any]:
    """The report (without ``method``/``recorded_at``) for the WAL the stopped local data
    holds past the divergence point with ``leader``. ``leader_history`` is the leader's
    ``(timeline, history)`` when already read (else it is read here). Never raises."""
    reasons: list[str] = []
    cd = await controldata.read_controldata(settings)
    position = controldata.divergence_position(cd)
    timeline = position[0] if position else None
    segment_size = _segment_size(cd)
    start = await _divergence_point(settings, leader, timeline, leader_history, reasons)
    scan: ScanResult | None = None
    if timeline is not None and start is not None:
        first = await asyncio.to_thread(_first_available, settings.data_dir / "pg_wal",
                                        timeline, start, segment_size)
        if first is None:
            reasons.append(f"no WAL of timeline {timeline} from {format_lsn(start)} is left "
                           "in pg_wal")
        else:
            if first > start:
                reasons.append(f"WAL from {format_lsn(start)} to {format_lsn(first)} was "
                               "already removed")
            scan = await scan_wal(settings, timeline, first, segment_size)
    end = scan.end_lsn if scan is not None and scan.reached_end else None
    if scan is not None and scan.failure:
        reasons.append(f"pg_waldump: {scan.failure}")
    if scan is not None and scan.truncated:
        reasons.append("more transactions or relations than the report keeps")
    if end is None and (fallback := controldata.wal_position(cd)) is not None:
        end = fallback
        reasons.append("end of WAL taken from pg_control (a lower bound)")
    txs = list(scan.transactions) if scan is not None else []
    txs = await _name_relations(settings, leader, txs)
    counts, rows = tally(txs)
    return {
        "member": settings.name, "timeline": timeline, "leader": leader.name,
        "from_lsn": None if start is None else format_lsn(start),
        "to_lsn": None if end is None else format_lsn(end),
        "bytes": None if start is None or end is None else max(0, end - start),
        "complete": not reasons, "reason": "; ".join(reasons) or None,
        "method": None, "recorded_at": None, "counts": counts, "rows": rows,
        "transactions": txs,
    }


def _segment_size(cd: Mapping[str, str]) -> int:
    try:
        size = int(cd.get(_SEGMENT_SIZE_KEY, ""))
    except ValueError:
        return 16 << 20
    return size if size > 0 else 16 << 20


async def _divergence_point(settings: PgSettings, leader: Upstream, timeline: int | None,
                            leader_history: tuple[int, list[tuple[int, int]]] | None,
                            reasons: list[str]) -> int | None:
    """Where ``timeline`` ended in the leader's history; None (with a reason) when unknown."""
    if timeline is None:
        reasons.append("local timeline unknown (pg_controldata unreadable)")
        return None
    if leader_history is None:
        try:
            leader_history = await source_timeline_history(settings, leader)
        except PgError as exc:
            reasons.append(f"leader's timeline history unreadable: {exc}")
            return None
    points = [lsn for tl, lsn in leader_history[1] if tl == timeline]
    if not points:
        reasons.append(f"timeline {timeline} is not in the history of {leader.name}'s "
                       f"timeline {leader_history[0]}: divergence point unknown")
        return None
    return min(points)


def _first_available(wal_dir: Path, timeline: int, start: int, segment_size: int) -> int | None:
    """``start`` when its segment of ``timeline`` is in ``wal_dir``; else the start of the
    first later segment of that timeline there; None when there is none. Blocking."""
    try:
        names = [p.name for p in wal_dir.iterdir() if _SEGMENT_NAME.match(p.name)]
    except OSError:
        return None
    prefix = f"{timeline:08X}"
    begins = sorted(segment_start(n, segment_size) for n in names if n.startswith(prefix))
    first_segment = start - start % segment_size
    if first_segment in begins:
        return start
    later = [b for b in begins if b > start]
    return later[0] if later else None


async def scan_wal(settings: PgSettings, timeline: int, start: int, segment_size: int,
                   timeout: float = WALDUMP_TIMEOUT, max_records: int = MAX_RECORDS
                   ) -> ScanResult:
    """Run pg_waldump from ``start`` on ``timeline`` to the end of the WAL in the data
    directory's pg_wal and parse it as it streams. A timeout, a record limit or an overlong
    line stop the program (killed and reaped) and make the result say so."""
    scan = WalScan(segment_size)
    argv = [settings.binary("pg_waldump"), "-p", str(settings.data_dir / "pg_wal"),
            "-t", str(timeline), "-s", format_lsn(start), "-n", str(max_records),
            "-r", "Heap", "-r", "Heap2", "-r", "Transaction"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=clean_env({"TZ": "UTC"}),
            start_new_session=True, limit=_LINE_LIMIT)
    except OSError as exc:
        return scan.finish("", start, stopped=f"cannot run pg_waldump: {exc}")
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(_read_tail(proc.stderr, _STDERR_LIMIT))
    stopped: str | None = None
    lines = 0
    try:
        async with asyncio.timeout(timeout):
            while line := await proc.stdout.readline():
                scan.feed(line.decode(errors="replace"))
                lines += 1
                if lines % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a long scan must not starve the event loop
            await proc.wait()
    except TimeoutError:
        stopped = f"stopped after {timeout:g}s"
    except ValueError:  # a line longer than the stream limit
        stopped = "output line too long"
    except asyncio.CancelledError:
        await asyncio.shield(kill_group(proc))
        errors.cancel()
        raise
    if stopped is not None:
        await kill_group(proc)
    stderr = b""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            stderr = await errors
    errors.cancel()
    if stopped is None and scan.records >= max_records:
        stopped = f"stopped after {max_records} records"
    return scan.finish(stderr.decode(errors="replace"), start, stopped=stopped)


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to EOF, keeping only the last ``limit`` bytes."""
    kept = b""
    while chunk := await stream.read(limit):
        kept = (kept + chunk)[-limit:]
    return kept


async def _name_relations(settings: PgSettings, leader: Upstream,
                          txs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``txs`` with file nodes renamed ``<database>/<schema>.<relation>`` where the leader
    knows them (under :data:`NAMES_TIMEOUT`); unchanged when it cannot be asked."""
    nodes = {k for tx in txs for k in tx["relations"] if _FILENODE.match(k)}
    if not nodes:
        return txs
    try:
        async with asyncio.timeout(NAMES_TIMEOUT):
            names = await resolve_names(settings, leader, nodes)
    except (PgError, TimeoutError, OSError) as exc:
        log.warning("cannot name the relations of the discarded WAL on %s: %s", leader.name,
                    exc)
        return txs
    out = []
    for tx in txs:
        relations: dict[str, dict[str, int]] = {}
        for key, ops in tx["relations"].items():
            into = relations.setdefault(names.get(key, key), {})
            for op, n in ops.items():
                into[op] = into.get(op, 0) + n
        out.append({**tx, "relations": relations})
    return out


async def resolve_names(settings: PgSettings, leader: Upstream,
                        nodes: set[str]) -> dict[str, str]:
    """``spc/db/rel`` -> ``<database>/<schema>.<relation>`` (shared catalogues:
    ``global/...``) as the leader's catalogues name those file nodes; at most
    :data:`MAX_DATABASES` databases are asked. Raises PgError; the caller bounds the time."""
    by_db: dict[int, list[tuple[int, int]]] = {}
    for key in nodes:
        if (m := _FILENODE.match(key)) is not None:
            by_db.setdefault(int(m[2]), []).append((int(m[1]), int(m[3])))
    try:
        async with remote_connection(settings, leader.conn_url) as conn:
            rows = await conn.fetch("SELECT oid::int8, datname FROM pg_database "
                                    "WHERE oid = ANY($1::oid[])", list(by_db))
    except PgError:
        raise
    except Exception as exc:
        raise PgError(f"{leader.name}: {exc}") from exc
    datnames = {int(r[0]): str(r[1]) for r in rows}
    out: dict[str, str] = {}
    for db, pairs in list(by_db.items())[:MAX_DATABASES]:
        datname = "postgres" if db == 0 else datnames.get(db)
        if datname is None:
            continue
        try:
            async with remote_connection(settings, leader.conn_url, database=datname) as conn:
                found = await conn.fetch(_NAMES_SQL, [p[0] for p in pairs],
                                         [p[1] for p in pairs])
        except Exception as exc:  # PgError or any asyncpg error: keep the file nodes
            log.debug("naming relations in database %s: %s", datname, exc)
            continue
        shown = "global" if db == 0 else datname
        for r in found:
            out[f"{int(r[0])}/{db}/{int(r[1])}"] = f"{shown}/{r[2]}.{r[3]}"
    return out
