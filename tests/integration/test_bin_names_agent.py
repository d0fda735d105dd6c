"""Real agents (PostgreSQL 15, etcd) with ``postgresql.bin_dir`` empty and the programs found
on PATH under custom names (``bin_name`` in the YAML, ``PATRONI_POSTGRESQL_BIN_PG_CTL`` in the
environment), and ``max_timelines_history: 1``: after two switchovers the DCS ``history``
holds only the last promotion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cluster import (
    PG_BIN,
    call,
    dump_logs,
    edit,
    new_cluster,
    primary_of,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc
from pgha.pg.process import postmaster_pid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RENAMED = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_rewind")


def custom_programs(directory: Path) -> Path:
    directory.mkdir()
    for program in RENAMED:
        (directory / f"{program}.custom").symlink_to(PG_BIN / program)
    return directory


def server_command(m: MemberProc) -> str:
    pid = postmaster_pid(m.data_dir)
    assert pid is not None, f"{m.name}: no postmaster"
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def timelines(m: MemberProc) -> list[int] | None:
    code, history = call(m, "GET", "/history")
    return [row[0] for row in history] if code == 200 else None


def switchover(c: LocalCluster, to: MemberProc) -> None:
    old = primary_of(c)
    assert old is not None and old is not to
    code, text = call(old, "POST", "/switchover", {"leader": old.name, "candidate": to.name})
    assert code == 200, text
    assert wait_healthy(c).name == to.name
    wait_until(lambda: status(old).get("timeline") == status(to).get("timeline"), 60,
               "the old leader on the new timeline")


@pytest.mark.skipif(not (PG_BIN / "postgres").exists() or os.geteuid() == 0,
                    reason="needs PostgreSQL 15 binaries and a non-root user")
def test_agents_run_renamed_programs_found_on_path_and_trim_the_history(
        tmp_path: Path) -> None:
    programs = custom_programs(tmp_path / "programs")
    c = new_cluster(tmp_path / "cluster", members=2, max_timelines_history=1)
    c.bin_dir = None
    c.env = {**c.env, "PATH": f"{programs}:/usr/bin:/bin",
             "PATRONI_POSTGRESQL_BIN_PG_CTL": "pg_ctl.custom"}
    with c:
        for m in c.procs.values():
            edit(m, {"postgresql.bin_dir": "",
                     "postgresql.bin_name": {p: f"{p}.custom" for p in RENAMED
                                             if p != "pg_ctl"}})
        c.start_all(stagger=0.3)
        try:
            first = wait_healthy(c)
            # pg_ctl.custom started the server it was given with -p: postgres.custom
            for m in c.procs.values():
                assert server_command(m) == str(programs / "postgres.custom"), m.name
            other = next(m for m in c.procs.values() if m is not first)
            switchover(c, other)
            wait_until(lambda: timelines(other) == [1], 30, "history [1]")
            switchover(c, first)
            wait_until(lambda: timelines(first) == [2], 30, "history trimmed to [2]")
            assert call(first, "GET", "/history")[1][0][4] == first.name
        except BaseException:
            dump_logs(c)
            raise
