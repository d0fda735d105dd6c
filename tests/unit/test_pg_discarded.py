"""Collecting and keeping discarded-WAL reports (``pgha.pg.discarded``): the reports file
(bounded, atomic, a corrupt file tolerated), pg_waldump run as a stream under its limits (a
script stands in for it), the whole collection, and the rejoin calling it before it destroys
anything."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_pg_helpers import settings as make_settings
from tests.unit.test_pg_rejoin_procedure import LEADER, FakePg

import pgha.pg.rejoin as rejoin_module
from pgha.core.actions import Upstream
from pgha.core.model import DataState
from pgha.pg.discarded import DiscardedLog, collect, finish_report, merge, report_path, scan_wal
from pgha.pg.settings import PgSettings

FIXTURE = Path(__file__).parent / "fixtures" / "pg_waldump_15.txt"
END = ("pg_waldump: error: error in WAL record at 0/1BA6898: invalid record length at "
       "0/1BA68C8: wanted 24, got 0")


def report(timeline: int = 1, from_lsn: str = "0/3000000", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"member": "pg1", "timeline": timeline, "from_lsn": from_lsn,
                            "to_lsn": "0/3001000", "bytes": 4096, "complete": True,
                            "reason": None, "method": "rewind", "counts": {}, "rows": {},
                            "transactions": [{"xid": 7, "status": "committed"}]}
    return {**base, **kw}


# --------------------------------------------------------------------------- the reports file


def test_reports_survive_a_restart_and_stay_bounded(tmp_path: Path) -> None:
    path = tmp_path / "pg1-pgha-discarded.json"
    book = DiscardedLog(path, limit=3)
    for tl in range(1, 6):
        book.record(report(tl))
    assert [r["timeline"] for r in book.reports] == [3, 4, 5]
    again = DiscardedLog(path, limit=3)  # a restarted agent
    assert again.reports == book.reports
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "reports.json"
    book = DiscardedLog(path)
    book.record(report(1))
    before = path.read_text()

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    book.record(report(2))  # does not raise
    assert path.read_text() == before
    assert [r["timeline"] for r in book.reports] == [1, 2]
    assert "cannot write discarded-WAL reports" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["reports.json"]


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', "", '[1, "x", {"timeline": 3}]'])
def test_a_corrupt_file_is_tolerated(tmp_path: Path, content: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "reports.json"
    path.write_text(content)
    book = DiscardedLog(path)
    assert book.reports == (({"timeline": 3},) if content.startswith("[") else ())
    book.record(report(1))
    assert json.loads(path.read_text())[-1]["timeline"] == 1


def test_merge_replaces_the_same_range_without_losing_a_scan() -> None:
    first = report(1, method="rewind")
    failed_rescan = report(1, method="reclone", transactions=[], complete=False,
                           reason="pg_waldump: could not find file")
    merged = merge([first, report(2)], failed_rescan)
    assert [r["timeline"] for r in merged] == [2, 1]
    assert merged[-1]["method"] == "reclone"
    assert merged[-1]["transactions"] == first["transactions"] and merged[-1]["complete"]
    better = report(1, transactions=[{"xid": 8, "status": "committed"}])
    assert merge([first], better)[-1]["transactions"] == better["transactions"]
    assert len(merge([first], report(1, from_lsn="0/4000000"))) == 2


def test_report_path_is_beside_the_data_directory(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert report_path(s) == tmp_path / "Node-1-pgha-discarded.json"


def test_finish_report() -> None:
    done = finish_report(report(), "reclone", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert done["method"] == "reclone" and done["recorded_at"] == "2026-01-02T03:04:05+00:00"


# --------------------------------------------------------------------------- pg_waldump runs


def fake_bin(tmp_path: Path, waldump: str, controldata: str = "") -> PgSettings:
    """Settings whose bin_dir holds shell scripts standing in for the programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("pg_waldump", waldump), ("pg_controldata", controldata)):
        script = bin_dir / name
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)
    s = make_settings(tmp_path)
    return PgSettings(**{**s.__dict__, "bin_dir": bin_dir})


async def test_scan_streams_the_output(tmp_path: Path) -> None:
    s = fake_bin(tmp_path, f'echo "$@" > {tmp_path}/argv\ncat {FIXTURE}\necho "{END}" >&2\n'
                           "exit 1")
    result = await scan_wal(s, 1, 0x1776058, 16 << 20)
    assert result.reached_end and result.end_lsn == 0x1BA68C8 and result.failure is None
    assert len(result.transactions) == 15
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:6] == ["-p", str(s.data_dir / "pg_wal"), "-t", "1", "-s", "0/1776058"]
    assert argv[8:] == ["-r", "Heap", "-r", "Heap2", "-r", "Transaction"]


async def test_scan_limits(tmp_path: Path) -> None:
    slow = fake_bin(tmp_path, f"cat {FIXTURE}\nexec sleep 30")
    result = await scan_wal(slow, 1, 0x1776058, 16 << 20, timeout=1.0)
    assert result.failure == "stopped after 1s" and not result.reached_end
    assert len(result.transactions) == 15  # what was read before the stop is kept
    many = await scan_wal(slow, 1, 0x1776058, 16 << 20, timeout=1.0, max_records=5)
    assert many.failure in ("stopped after 5 records", "stopped after 1s")


async def test_scan_without_the_program(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    s = PgSettings(**{**s.__dict__, "bin_dir": tmp_path / "nowhere"})
    result = await scan_wal(s, 1, 0x1776058, 16 << 20)
    assert result.failure is not None and result.failure.startswith("cannot run pg_waldump")


# --------------------------------------------------------------------------- collect


CONTROL = """echo "Latest checkpoint location:           0/1BA6898"
echo "Latest checkpoint's TimeLineID:       1"
echo "Bytes per WAL segment:                16777216"
"""


def data_dir(s: PgSettings, *segments: str) -> None:
    (s.data_dir / "global").mkdir(parents=True)
    (s.data_dir / "global" / "pg_control").write_bytes(b"")
    (s.data_dir / "pg_wal").mkdir()
    for name in segments:
        (s.data_dir / "pg_wal" / name).write_bytes(b"")


UNREACHABLE = Upstream("pg2", "postgres://127.0.0.1:9/postgres")


async def test_collect_reads_from_the_divergence_point(tmp_path: Path) -> None:
    s = fake_bin(tmp_path, f'echo "$@" > {tmp_path}/argv\ncat {FIXTURE}\necho "{END}" >&2',
                 CONTROL)
    data_dir(s, "000000010000000000000001", "000000020000000000000001")
    got = await collect(s, UNREACHABLE, (2, [(1, 0x1776058)]))
    assert (got["member"], got["timeline"], got["leader"]) == ("Node-1", 1, "pg2")
    assert (got["from_lsn"], got["to_lsn"], got["bytes"]) == ("0/1776058", "0/1BA68C8",
                                                              0x1BA68C8 - 0x1776058)
    assert got["complete"] and got["reason"] is None
    assert got["counts"]["committed"] == 12 and got["rows"]["insert"] == 14
    assert "-s 0/1776058" in (tmp_path / "argv").read_text()
    # the leader could not name the file nodes: they stay as they are
    assert {"1663/5/16384": {"insert": 1}} == got["transactions"][0]["relations"]


async def test_collect_when_the_wal_was_removed(tmp_path: Path) -> None:
    s = fake_bin(tmp_path, f'echo "$@" > {tmp_path}/argv\necho "{END}" >&2', CONTROL)
    data_dir(s, "000000010000000000000002")
    got = await collect(s, UNREACHABLE, (2, [(1, 0x1776058)]))
    assert not got["complete"]
    assert "WAL from 0/1776058 to 0/2000000 was already removed" in got["reason"]
    assert "-s 0/2000000" in (tmp_path / "argv").read_text()
    assert got["from_lsn"] == "0/1776058"


async def test_collect_never_blocks_the_rejoin(tmp_path: Path) -> None:
    s = fake_bin(tmp_path, 'echo "pg_waldump: error: out of memory" >&2; exit 1', CONTROL)
    data_dir(s, "000000010000000000000001")
    got = await collect(s, UNREACHABLE, (2, [(1, 0x1776058)]))
    assert not got["complete"] and got["transactions"] == []
    assert "pg_waldump: pg_waldump: error: out of memory" in got["reason"]
    assert "end of WAL taken from pg_control" in got["reason"]
    assert got["to_lsn"] == "0/1BA6898"
    # a timeline the leader's history does not name: no divergence point, nothing scanned
    other = await collect(s, UNREACHABLE, (3, [(2, 0x1776058)]))
    assert other["from_lsn"] is None and other["bytes"] is None
    assert "divergence point unknown" in other["reason"]


# --------------------------------------------------------------------------- the rejoin


@pytest.fixture
def leader_history(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(settings: Any, leader: Upstream) -> tuple[int, list[tuple[int, int]]]:
        return 2, [(1, 0x3000000)]

    monkeypatch.setattr(rejoin_module, "source_timeline_history", fake)


@pytest.mark.parametrize(("pg", "use_pg_rewind", "calls", "method"), [
    (FakePg(), True, ["crash_recover", "collect", "rewind", "start replica"], "rewind"),
    (FakePg(remove_on_diverged=True), False,
     ["crash_recover", "collect", "wipe", "clone", "start replica"], "reclone"),
    (FakePg(rewind_ok=False, remove_on_failure=True), True,
     ["crash_recover", "collect", "rewind", "wipe", "clone", "start replica"], "reclone"),
    (FakePg(rewind_ok=False), True, ["crash_recover", "collect", "rewind"], None),
    (FakePg(checkpoint_error=True), True, ["crash_recover"], None),
])
async def test_rejoin_reads_the_wal_before_destroying_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leader_history: None,
        caplog: pytest.LogCaptureFixture, pg: FakePg, use_pg_rewind: bool,
        calls: list[str], method: str | None) -> None:
    caplog.set_level(logging.WARNING, logger="pgha.pg")
    seen: list[Any] = []

    async def fake_collect(settings: Any, leader: Upstream, history: Any) -> dict[str, Any]:
        pg.calls.append("collect")
        seen.append(history)
        return report()

    monkeypatch.setattr(rejoin_module, "collect", fake_collect)
    book = DiscardedLog(tmp_path / "reports.json")
    await rejoin_module.rejoin(pg, LEADER, use_pg_rewind, book)  # type: ignore[arg-type]
    assert pg.calls == calls
    if method is None:
        assert book.reports == ()
        return
    assert seen == [(2, [(1, 0x3000000)])]  # the history the divergence was judged on
    assert [r["method"] for r in book.reports] == [method]
    assert json.loads((tmp_path / "reports.json").read_text())[0]["method"] == method
    assert f"discarded WAL: member pg1, timeline 1, {method} from" in caplog.text


async def test_nothing_is_collected_for_empty_data_or_without_a_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leader_history: None) -> None:
    async def fail(*args: Any) -> dict[str, Any]:
        raise AssertionError("collected")

    monkeypatch.setattr(rejoin_module, "collect", fail)
    book = DiscardedLog(tmp_path / "reports.json")
    empty: Any = FakePg(data=DataState.EMPTY)
    assert await rejoin_module.rejoin(empty, LEADER, True, book)
    assert empty.calls == ["wipe", "clone", "start replica"]
    assert await rejoin_module.rejoin(FakePg(), LEADER, True)  # type: ignore[arg-type]
    assert book.reports == ()

