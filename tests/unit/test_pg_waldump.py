"""Parsing pg_waldump output into a discarded-WAL report (``pgha.pg.waldump``), with lines
captured from PostgreSQL 15's pg_waldump (tests/unit/fixtures/pg_waldump_15.txt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgha.pg.waldump import (
    WalScan,
    committed_xids,
    iso_time,
    parse_lsn,
    reports_in_history,
    segment_start,
    summary,
    tally,
)

LINES = (Path(__file__).parent / "fixtures" / "pg_waldump_15.txt").read_text().splitlines()
END = ("pg_waldump: error: error in WAL record at 0/1BA6898: invalid record length at "
       "0/1BA68C8: wanted 24, got 0\n")
START = 0x1776058
BENCH = "1663/5/16384"  # the table the capture wrote to
OTHER = "1663/5/16391"
PREPARED = "1663/5/16396"


def scan(lines: list[str], stderr: str = END, **caps: int) -> dict[int, dict[str, Any]]:
    walscan = WalScan(**caps)
    for line in lines:
        walscan.feed(line)
    result = walscan.finish(stderr, START)
    return {tx["xid"]: tx for tx in result.transactions}


def upto(marker: str) -> list[str]:
    """The fixture lines up to and including the first one containing ``marker``."""
    index = next(i for i, line in enumerate(LINES) if marker in line)
    return LINES[:index + 1]


def test_every_kind_of_record() -> None:
    txs = scan(LINES)
    assert {x: (t["status"], t["relations"]) for x, t in txs.items() if x <= 733} == {
        725: ("committed", {BENCH: {"insert": 1}}),  # INSERT+INIT
        726: ("committed", {BENCH: {"update": 1}}),  # HOT_UPDATE
        727: ("committed", {BENCH: {"update": 1}}),  # UPDATE (key changed)
        728: ("committed", {BENCH: {"delete": 1}}),
        729: ("aborted", {BENCH: {"insert": 1}}),  # ROLLBACK
        730: ("committed", {OTHER: {"insert": 5}}),  # COPY: MULTI_INSERT+INIT 5 tuples
        731: ("committed", {OTHER: {"insert": 2}}),  # its committed subtransaction merged in
        733: ("aborted", {OTHER: {"insert": 1}}),  # ROLLBACK TO SAVEPOINT
    }
    assert txs[731]["subxacts"] == [732]
    assert 732 not in txs
    assert txs[725]["commit_time"] == "2026-12-04T15:47:06.557987+00:00"
    assert txs[731]["commit_time"] == "2026-12-04T15:47:06.915258+00:00"  # before "; subxacts"
    assert txs[729]["commit_time"] == "2026-12-04T15:47:06.778498+00:00"  # abort time
    assert txs[735] == {"xid": 735, "status": "committed", "relations": {BENCH: {"insert": 3}},
                        "commit_time": "2026-12-04T15:47:06.979357+00:00"}


def test_truncate_and_dropped_files() -> None:
    txs = scan(LINES)
    # TRUNCATE with wal_level=replica: a new file node, the old one dropped at commit
    assert txs[734]["relations"] == {"1663/5/1259": {"update": 1}, OTHER: {"storage_dropped": 1}}
    # with wal_level=logical the TRUNCATE record names the tables by OID
    truncated = txs[736]["relations"]
    assert truncated["relid:16391"] == {"truncate": 1}
    assert truncated["relid:16384"] == {"truncate": 1}
    assert truncated[BENCH] == {"storage_dropped": 1}


def test_two_phase_commit() -> None:
    assert scan(upto("PREPARE gid g1"))[737]["status"] == "prepared"
    txs = scan(LINES)
    assert txs[737]["status"] == "committed"
    assert txs[737]["commit_time"] == "2026-12-04T15:47:28.292076+00:00"
    assert txs[737]["relations"] == {PREPARED: {"insert": 1}}
    assert txs[738]["status"] == "aborted"
    assert txs[739]["relations"] == {"1664/0/1262": {"insert": 1}}  # CREATE DATABASE


def test_without_a_commit_record_the_transaction_is_in_progress() -> None:
    txs = scan(upto("INSERT off 7 flags 0x00, blkref #0: rel 1663/5/16384"))
    assert txs[735]["status"] == "in_progress"
    assert txs[735]["commit_time"] is None
    assert txs[735]["relations"] == {BENCH: {"insert": 3}}


def test_end_of_wal_from_the_error_message() -> None:
    walscan = WalScan()
    for line in LINES:
        walscan.feed(line)
    result = walscan.finish(END, START)
    assert result.reached_end and result.failure is None and not result.truncated
    assert result.end_lsn == 0x1BA68C8
    assert result.records == len(LINES) - 3  # comments and the "first record" line skipped


@pytest.mark.parametrize(("stderr", "end"), [
    ("pg_waldump: error: error in WAL record at 0/1FFFF80: unexpected pageaddr 0/1000000 in "
     "log segment 000000010000000000000002, offset 0", 0x2000000),
    ("pg_waldump: error: error in WAL record at 0/1BA6898: invalid magic number 0000 in log "
     "segment 000000010000000000000001, offset 12853248", 0x1C42000),
    ("pg_waldump: error: error in WAL record at 0/1BA6898: record with incorrect prev-link "
     "0/1BA6000 at 0/1BA68C8", 0x1BA68C8),
    # the last record before the end was shown: its length gives the end
    ("pg_waldump: error: error in WAL record at 0/1BA6898: something new", 0x1BA6898 + 46),
    # the next segment is missing: the WAL ended at its start
    ('pg_waldump: error: could not find file "000000010000000000000002": No such file or '
     "directory", 0x2000000),
])
def test_other_ends_of_wal(stderr: str, end: int) -> None:
    walscan = WalScan()
    for line in LINES:
        walscan.feed(line)
    result = walscan.finish(stderr, START)
    assert result.reached_end and result.end_lsn == end


@pytest.mark.parametrize("stderr", [
    'pg_waldump: error: could not find file "000000010000000000000001": No such file or '
    "directory",  # the first segment: nothing was read
    "pg_waldump: error: could not find a valid record after 0/1776058",
    "",
])
def test_failures(stderr: str) -> None:
    result = WalScan().finish(stderr, START)
    assert not result.reached_end and result.end_lsn is None
    assert result.failure == (stderr.strip() or "pg_waldump ended without reaching the end "
                              "of WAL")


def test_stopped_scan_keeps_what_it_read() -> None:
    walscan = WalScan()
    for line in LINES[:6]:
        walscan.feed(line)
    result = walscan.finish("", START, stopped="stopped after 60s")
    assert not result.reached_end and result.failure == "stopped after 60s"
    assert [tx["xid"] for tx in result.transactions] == [725, 726]


def test_caps_truncate() -> None:
    walscan = WalScan(max_transactions=3)
    for line in LINES:
        walscan.feed(line)
    result = walscan.finish(END, START)
    assert result.truncated and result.reached_end
    assert [tx["xid"] for tx in result.transactions] == [725, 726, 727]
    few_relations = scan(LINES, max_relations=2)
    assert len(few_relations[736]["relations"]) == 2


def test_committed_xids_and_tally() -> None:
    txs = list(scan(LINES).values())
    report = {"transactions": txs}
    assert committed_xids(report) == {725, 726, 727, 728, 730, 731, 732, 734, 735, 736, 737,
                                      739, 740}
    assert committed_xids({"transactions": "junk"}) == frozenset()
    assert committed_xids({"transactions": [None, {"status": "committed", "xid": "7"}]}) \
        == frozenset()
    counts, rows = tally(txs)
    assert counts == {"committed": 12, "aborted": 3, "prepared": 0, "in_progress": 0}
    assert rows["insert"] == 1 + 5 + 2 + 3 + 1 + 1 + 1
    assert rows["delete"] == 1 and rows["truncate"] == 2


def test_summary_line() -> None:
    report = {"from_lsn": "0/3000148", "to_lsn": "0/3001000", "bytes": 3768, "complete": True,
              "counts": {"committed": 3, "aborted": 1, "in_progress": 0},
              "rows": {"insert": 3, "delete": 1}}
    assert summary(report) == ("0/3000148..0/3001000 (3768 bytes), 3 committed transactions "
                               "(delete 1, insert 3), 1 aborted")
    assert summary({"complete": False, "reason": "pg_waldump: boom"}) == (
        "?..? (? bytes), 0 committed transactions; incomplete: pg_waldump: boom")


def test_reports_in_history_rows() -> None:
    report = {"member": "pg1", "timeline": 1, "transactions": [
        {"xid": 9, "status": "committed"}]}
    rows = [[1, 100, "r", "t", "pg2", {"discarded": [report]}], [2, 200, "r", "t", "pg3"],
            "junk", [3, 300, "r", "t", "pg1", "not an object"]]
    assert reports_in_history(rows) == [report]
    assert committed_xids(reports_in_history(rows)[0]) == {9}


def test_lsn_helpers() -> None:
    assert parse_lsn("0/1BA68C8") == 0x1BA68C8
    assert segment_start("000000010000000100000002", 16 << 20) == (1 << 32) + 0x2000000
    assert iso_time("2026-12-04 15:47:06 UTC") == "2026-12-04T15:47:06+00:00"
    assert iso_time("2026-12-04 15:47:06 CET") == "2026-12-04 15:47:06 CET"
