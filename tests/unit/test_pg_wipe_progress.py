"""Wiping a data directory also empties its pg_wal and tablespace link targets; long programs
are stopped when they stop making progress, never after a fixed time."""

from __future__ import annotations

import time
from pathlib import Path

from pgha.pg.bootstrap import wipe_data_dir
from pgha.pg.cmd import Progress, run, tree_size


def test_wipe_empties_the_link_targets_and_keeps_the_directories(tmp_path: Path) -> None:
    data, wal, space = tmp_path / "data", tmp_path / "wal", tmp_path / "space"
    for d in (data / "base" / "1", wal / "archive_status", space / "PG_15_202209061" / "5"):
        d.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (wal / "000000010000000000000001").write_bytes(b"x" * 10)
    (space / "PG_15_202209061" / "5" / "16384").write_bytes(b"y")
    (data / "pg_wal").symlink_to(wal)
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16400").symlink_to(space)
    outside = tmp_path / "keep.txt"
    outside.write_text("not ours")

    wipe_data_dir(data)

    assert data.is_dir() and list(data.iterdir()) == []
    assert wal.is_dir() and list(wal.iterdir()) == []
    assert space.is_dir() and list(space.iterdir()) == []
    assert outside.read_text() == "not ours"


def test_wipe_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    wipe_data_dir(tmp_path / "absent")


def test_tree_size_counts_files_through_the_wal_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "w").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"1234")
    (tmp_path / "w" / "seg").write_bytes(b"12")
    (tmp_path / "d" / "pg_wal").symlink_to(tmp_path / "w")
    assert tree_size(tmp_path / "d") == 6


async def test_a_program_without_progress_is_stopped() -> None:
    seen: list[int] = []
    started = time.monotonic()
    result = await run(["sleep", "30"], timeout=60,
                       progress=Progress(lambda: 5, stall_timeout=0.4, interval=0.1,
                                         report=seen.append))
    assert result.timed_out and not result.ok
    assert "no progress for 0.4s" in result.stderr
    assert time.monotonic() - started < 5
    assert seen == [5]


async def test_a_program_making_progress_runs_past_the_stall_timeout() -> None:
    counter = iter(range(1000))
    result = await run(["sleep", "1"], timeout=60,
                       progress=Progress(lambda: next(counter), stall_timeout=0.3,
                                         interval=0.1))
    assert result.ok
