"""What a rewind threw away: parsing ``pg_waldump`` output (pure: no IO, no clock).

When a former primary's timeline diverged from the new leader's, the WAL it wrote after the
divergence point is destroyed by pg_rewind or by wiping the data directory. Before that,
:mod:`pgha.pg.discarded` runs ``pg_waldump -r Heap -r Heap2 -r Transaction`` over the range
and feeds every output line to :class:`WalScan`; the result becomes one *discarded-WAL report*.

Report (JSON object; one per rewind or re-clone, kept in ``<name>-pgha-discarded.json`` beside
the data directory and served on ``GET /history``)::

    member        str    the member whose WAL was discarded
    timeline      int    the timeline the discarded WAL was written on
    leader        str    the new leader it was rewound/re-cloned from
    from_lsn      str|null  divergence point: where the leader's history says ``timeline``
                         ended (``"0/3000148"``); null when it could not be determined
    to_lsn        str|null  end of the member's WAL on ``timeline`` (found by the scan; else
                         the latest checkpoint from pg_control, a lower bound)
    bytes         int|null  ``to_lsn - from_lsn``
    complete      bool   every record of the range was read and nothing was left out
    reason        str|null  why not complete (pg_waldump failed or timed out, WAL already
                         removed, caps reached, ...); null when complete
    method        str    "rewind" or "reclone"
    recorded_at   str    ISO 8601 (UTC) time the data was rewound / wiped
    counts        {status: n}   transactions by status
    rows          {op: n}       rows of the COMMITTED transactions, by operation
    transactions  [ {xid: int, status: "committed" | "aborted" | "prepared" | "in_progress",
                     commit_time: str|null (ISO 8601, commit or abort time),
                     relations: {name_or_filenode: {insert: n, update: n, delete: n,
                                                    truncate: n, storage_dropped: n}},
                     subxacts: [int]  (committed subtransactions merged into this one)} ]

Only ``committed`` transactions are lost writes: the new leader never saw them. ``aborted``
ones changed nothing; ``in_progress`` ones (no commit record before the end of the WAL) and
``prepared`` ones were never acknowledged as committed. A transaction that began before the
divergence point and committed after it is listed with the rows found in the range only.

Relations are ``<database>/<schema>.<relation>`` when the new leader could name the file node
(``pg_filenode_relation``), else ``<spcNode>/<dbNode>/<relNode>``; a logged ``TRUNCATE`` names
its tables by OID (``relid:<oid>``). Operations: ``insert`` (``MULTI_INSERT`` counts its
tuples), ``update`` (HOT or not), ``delete``, ``truncate`` (wal_level logical only) and
``storage_dropped`` (files a committed transaction dropped: DROP, TRUNCATE, rewrites). Index
and catalogue-internal records are not counted.

Bounds: at most ``max_transactions`` transactions and ``max_relations`` relations per
transaction are kept; beyond that the report says so (``complete`` false).

:func:`committed_xids` is what the chaos checker calls to see whether an acknowledged write
that the cluster lost is named by a report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_TRANSACTIONS = 10_000
MAX_RELATIONS = 100

_LSN = r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"
_RECORD = re.compile(
    r"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*\d+/\s*(?P<tot>\d+), tx:\s*(?P<xid>\d+), "
    rf"lsn: (?P<lsn>{_LSN}), prev {_LSN}, desc: (?P<desc>.*)$")
_BLKREF_REL = re.compile(r"blkref #0: rel (\d+/\d+/\d+)")
_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [^\s;]+"
_END = re.compile(rf"^(?P<kind>COMMIT|ABORT) (?P<time>{_TIME})(?P<rest>.*)$")
_END_PREPARED = re.compile(rf"^(?P<kind>COMMIT|ABORT)_PREPARED (?P<xid>\d+): (?P<time>{_TIME})")
_ASSIGNMENT = re.compile(r"^ASSIGNMENT xtop (?P<top>\d+): subxacts:(?P<subs>[\d ]*)")
_SUBXACTS = re.compile(r"subxacts:(?P<subs>[\d ]+)")
_RELS = re.compile(r"rels:(?P<rels>[^;]+)")
_TUPLES = re.compile(r"^(\d+) tuples")
_RELIDS = re.compile(r"\brelids(?P<ids>(?: \d+)+)")
_FAILED_AT = re.compile(rf"error in WAL record at ({_LSN}): (.*)$", re.MULTILINE)
_ANY_LSN = re.compile(_LSN)
_SEGMENT_OFFSET = re.compile(r"log segment ([0-9A-F]{24}), offset (\d+)")
_MISSING_FILE = re.compile(r'could not find file "(?:[^"]*/)?([0-9A-F]{24})"')

# record type (without "+INIT") -> operation counted for the relation of block reference 0
_HEAP_OPS = {"INSERT": "insert", "UPDATE": "update", "HOT_UPDATE": "update",
             "DELETE": "delete"}

STATUSES = ("committed", "aborted", "prepared", "in_progress")


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_start(name: str, segment_size: int) -> int:
    """LSN where the WAL segment file ``name`` (24 hex digits: timeline, log, segment)
    begins."""
    return (int(name[8:16], 16) << 32) + int(name[16:24], 16) * segment_size


def iso_time(text: str) -> str:
    """``2024-06-01 10:00:00.123456 UTC`` -> ``2024-06-01T10:00:00.123456+00:00``; text in
    another time zone is returned as printed (pg_waldump is run with ``TZ=UTC``)."""
    stamp, _, zone = text.rpartition(" ")
    if zone != "UTC":
        return text
    return stamp.replace(" ", "T") + "+00:00"


def _file_key(path: str) -> str | None:
    """A dropped file as ``spc/db/rel``: ``base/5/16384``, ``global/1262``,
    ``pg_tblspc/16400/PG_15_x/5/16384``."""
    parts = path.strip().split("/")
    if len(parts) == 3 and parts[0] == "base":
        return f"1663/{parts[1]}/{parts[2]}"
    if len(parts) == 2 and parts[0] == "global":
        return f"1664/0/{parts[1]}"
    if len(parts) == 5 and parts[0] == "pg_tblspc":
        return f"{parts[1]}/{parts[3]}/{parts[4]}"
    return None


class _Tx:
    __slots__ = ("commit_time", "relations", "status", "subxacts", "xid")

    def __init__(self, xid: int) -> None:
        self.xid = xid
        self.status = "in_progress"
        self.commit_time: str | None = None
        self.relations: dict[str, dict[str, int]] = {}
        self.subxacts: list[int] = []

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"xid": self.xid, "status": self.status,
                               "commit_time": self.commit_time,
                               "relations": {k: dict(v) for k, v in self.relations.items()}}
        if self.subxacts:
            out["subxacts"] = list(self.subxacts)
        return out


@dataclass(frozen=True)
class ScanResult:
    """What one pg_waldump run showed.

    ``reached_end``: the scan read up to the end of the WAL (``end_lsn`` is then where the
    last valid record ends, or a lower bound when pg_waldump did not say). ``failure``: why
    the range could not be read at all (no transaction can then be named). ``truncated``:
    caps were reached, some transactions or relations are missing."""

    records: int
    transactions: tuple[dict[str, Any], ...]
    reached_end: bool
    end_lsn: int | None
    failure: str | None
    truncated: bool


class WalScan:
    """Feed pg_waldump's stdout lines one at a time (:meth:`feed`), then :meth:`finish`
    with its stderr. Memory is bounded by the caps, not by the number of lines."""

    def __init__(self, segment_size: int = 16 << 20, *, max_transactions: int = MAX_TRANSACTIONS,
                 max_relations: int = MAX_RELATIONS) -> None:
        self.segment_size = segment_size
        self.max_transactions = max_transactions
        self.max_relations = max_relations
        self.records = 0
        self.truncated = False
        self._txs: dict[int, _Tx] = {}
        self._last: tuple[int, int] | None = None  # (lsn, total length) of the last record

    # ------------------------------------------------------------------ lines
    def feed(self, line: str) -> None:
        """One output line; lines that are not records (``first record is after ...``) are
        ignored."""
        match = _RECORD.match(line.rstrip("\n"))
        if match is None:
            return
        self.records += 1
        self._last = (parse_lsn(match["lsn"]), int(match["tot"]))
        xid, rmgr, desc = int(match["xid"]), match["rmgr"], match["desc"]
        kind, _, rest = desc.partition(" ")
        kind = kind.removesuffix("+INIT")
        if rmgr == "Transaction":
            self._transaction(xid, kind, desc)
        elif xid == 0:
            return
        elif rmgr == "Heap" and kind in _HEAP_OPS:
            if (rel := _BLKREF_REL.search(rest)) is not None:
                self._count(xid, rel[1], _HEAP_OPS[kind], 1)
        elif rmgr == "Heap" and kind == "TRUNCATE":
            if (ids := _RELIDS.search(rest)) is not None:
                for relid in ids["ids"].split():
                    self._count(xid, f"relid:{relid}", "truncate", 1)
        elif rmgr == "Heap2" and kind == "MULTI_INSERT":
            tuples = _TUPLES.match(rest)
            rel = _BLKREF_REL.search(rest)
            if tuples is not None and rel is not None:
                self._count(xid, rel[1], "insert", int(tuples[1]))

    def _tx(self, xid: int) -> _Tx | None:
        tx = self._txs.get(xid)
        if tx is None:
            if len(self._txs) >= self.max_transactions:
                self.truncated = True
                return None
            tx = self._txs[xid] = _Tx(xid)
        return tx

    def _count(self, xid: int, rel: str, op: str, n: int) -> None:
        tx = self._tx(xid)
        if tx is None:
            return
        ops = tx.relations.get(rel)
        if ops is None:
            if len(tx.relations) >= self.max_relations:
                self.truncated = True
                return
            ops = tx.relations[rel] = {}
        ops[op] = ops.get(op, 0) + n

    def _merge_subxacts(self, top: _Tx, subs: Iterable[int]) -> None:
        for sub in subs:
            if sub == top.xid:
                continue
            top.subxacts.append(sub)
            child = self._txs.pop(sub, None)
            if child is None:
                continue
            for rel, ops in child.relations.items():
                for op, n in ops.items():
                    self._count(top.xid, rel, op, n)

    def _transaction(self, xid: int, kind: str, desc: str) -> None:
        if (m := _END_PREPARED.match(desc)) is not None:
            tx = self._tx(int(m["xid"]))
            if tx is not None:
                tx.status = "committed" if m["kind"] == "COMMIT" else "aborted"
                tx.commit_time = iso_time(m["time"])
            return
        if (m := _ASSIGNMENT.match(desc)) is not None:
            if (tx := self._tx(int(m["top"]))) is not None:
                self._merge_subxacts(tx, (int(s) for s in m["subs"].split()))
            return
        if xid == 0:
            return
        if kind == "PREPARE":
            if (tx := self._tx(xid)) is not None:
                tx.status = "prepared"
            return
        if (m := _END.match(desc)) is None or (tx := self._tx(xid)) is None:
            return
        committed = m["kind"] == "COMMIT"
        tx.status = "committed" if committed else "aborted"
        tx.commit_time = iso_time(m["time"])
        if (subs := _SUBXACTS.search(m["rest"])) is not None:
            ids = [int(s) for s in subs["subs"].split()]
            if committed:
                self._merge_subxacts(tx, ids)
            else:
                for sub in ids:
                    if (child := self._txs.get(sub)) is not None:
                        child.status, child.commit_time = "aborted", tx.commit_time
        if committed and (rels := _RELS.search(m["rest"])) is not None:
            for path in rels["rels"].split():
                if (key := _file_key(path)) is not None:
                    self._count(xid, key, "storage_dropped", 1)

    # ------------------------------------------------------------------ the end
    def finish(self, stderr: str, start_lsn: int, *, stopped: str | None = None) -> ScanResult:
        """The result, given pg_waldump's stderr and the LSN the scan started at.

        ``stopped`` says why the program was stopped before it ended (timeout, record
        limit): the end of the WAL is then unknown. Otherwise an ``error in WAL record at``
        message marks the end of valid WAL (its last LSN, or the segment and offset it
        names, is where the next record would start); a missing segment file after the first
        one marks the end at that segment's start; any other error before the end means the
        range could not be read."""
        txs = tuple(tx.to_json() for tx in self._txs.values())
        if stopped is not None:
            return ScanResult(self.records, txs, False, None, stopped, self.truncated)
        end = self._end_of_wal(stderr, start_lsn)
        if end is not None:
            return ScanResult(self.records, txs, True, end, None, self.truncated)
        problem = " ".join(stderr.split()) or "pg_waldump ended without reaching the end of WAL"
        return ScanResult(self.records, txs, False, None, problem, self.truncated)

    def _end_of_wal(self, stderr: str, start_lsn: int) -> int | None:
        failed = _FAILED_AT.search(stderr)
        if failed is not None:
            message = failed[2]
            if (seg := _SEGMENT_OFFSET.search(message)) is not None:
                return segment_start(seg[1], self.segment_size) + int(seg[2])
            positions = _ANY_LSN.findall(message)
            if positions:
                return parse_lsn(positions[-1])
            last = parse_lsn(failed[1])
            if self._last is not None and self._last[0] == last:
                return last + self._last[1]
            return last
        missing = _MISSING_FILE.search(stderr)
        if missing is not None:
            begins = segment_start(missing[1], self.segment_size)
            if begins > start_lsn:
                return begins
        return None


# ---------------------------------------------------------------------- reading reports
def committed_xids(report: Mapping[str, Any]) -> frozenset[int]:
    """The 32-bit xids of the committed transactions a report names (subtransactions of a
    committed transaction included). ``pg_current_xact_id()`` returns an epoch-qualified
    xid8: compare ``xid8 % 2**32`` with these. A malformed report names nothing."""
    out: set[int] = set()
    txs = report.get("transactions")
    if not isinstance(txs, list):
        return frozenset()
    for tx in txs:
        if not isinstance(tx, Mapping) or tx.get("status") != "committed":
            continue
        if isinstance(xid := tx.get("xid"), int):
            out.add(xid)
        subs = tx.get("subxacts")
        if isinstance(subs, list):
            out.update(s for s in subs if isinstance(s, int))
    return frozenset(out)


def reports_in_history(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The discarded-WAL reports attached to ``GET /history`` rows (the optional sixth
    element ``{"discarded": [report, ...]}``), in row order."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if isinstance(row, list) and len(row) > 5 and isinstance(row[5], Mapping):
            out.extend(r for r in row[5].get("discarded") or () if isinstance(r, dict))
    return out


def tally(transactions: Iterable[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """``(transactions by status, rows of committed transactions by operation)``."""
    counts = dict.fromkeys(STATUSES, 0)
    rows: dict[str, int] = {}
    for tx in transactions:
        status = str(tx.get("status"))
        counts[status] = counts.get(status, 0) + 1
        if status != "committed":
            continue
        for ops in (tx.get("relations") or {}).values():
            for op, n in ops.items():
                rows[op] = rows.get(op, 0) + int(n)
    return counts, rows


def summary(report: Mapping[str, Any]) -> str:
    """One line: range, bytes, transactions and rows (for the log and ``pgha history -e``)."""
    size = report.get("bytes")
    counts = report.get("counts") or {}
    rows = report.get("rows") or {}
    text = (f"{report.get('from_lsn') or '?'}..{report.get('to_lsn') or '?'} "
            f"({'?' if size is None else size} bytes), "
            f"{counts.get('committed', 0)} committed transactions")
    if rows:
        text += " (" + ", ".join(f"{op} {n}" for op, n in sorted(rows.items())) + ")"
    others = [f"{counts[s]} {s.replace('_', ' ')}" for s in STATUSES[1:] if counts.get(s)]
    if others:
        text += ", " + ", ".join(others)
    if not report.get("complete"):
        text += f"; incomplete: {report.get('reason') or 'unknown'}"
    return text
