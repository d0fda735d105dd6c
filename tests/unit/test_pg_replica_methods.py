"""Replica creation methods (:mod:`pgha.pg.replica_methods`) run against stand-in programs
that record their arguments and environment: order and fallback, what each method is given,
when the data directory is emptied, and pg_basebackup's command line with its options."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgha.core.actions import Upstream
from pgha.core.standby import REMOTE
from pgha.pg import replica_methods
from pgha.pg.postgres import Postgres
from pgha.pg.replica_methods import basebackup_argv, create_replica, methods_to_run
from pgha.pg.settings import PgSettings, PgUser, ReplicaMethod

SOURCE = Upstream("pg1", "postgres://10.0.0.1:5433/postgres")

# Records its arguments, the environment it got and what the data directory held when it
# started; then does what MODE says: "fail" (exit 3), "empty" (exit 0, writes nothing),
# "cluster" (writes a data directory's marker files), "hang" (sleeps).
SCRIPT = """#!/bin/sh
exec python3 - "$@" <<'EOF'
import json, os, sys, time
datadir = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--datadir=")),
               None)
if datadir is None and "-D" in sys.argv:
    datadir = sys.argv[sys.argv.index("-D") + 1]
datadir = datadir or os.environ.get("FALLBACK_DATADIR")
record = {"argv": sys.argv[1:], "PGPASSFILE": os.environ.get("PGPASSFILE"),
          "PGHOST": os.environ.get("PGHOST"),
          "found": sorted(os.listdir(datadir)) if datadir and os.path.isdir(datadir) else None}
with open(os.environ["RECORD_TO"], "a") as out:
    out.write(json.dumps({"name": "%(name)s", **record}) + "\\n")
mode = "%(mode)s"
if mode == "fail":
    print("restore: backup not found", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
if mode == "cluster":
    os.makedirs(os.path.join(datadir, "global"), exist_ok=True)
    open(os.path.join(datadir, "PG_VERSION"), "w").write("15\\n")
    open(os.path.join(datadir, "global", "pg_control"), "w").write("x")
EOF
"""


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "record.jsonl"
    monkeypatch.setenv("RECORD_TO", str(out))
    monkeypatch.setenv("PGHOST", "somewhere-else")  # the agent's PG* variables never leak
    return out


def program(tmp: Path, name: str, mode: str) -> str:
    path = tmp / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(SCRIPT % {"name": name, "mode": mode})
    os.chmod(path, 0o755)
    return str(path)


def method(tmp: Path, name: str, mode: str, **kw: Any) -> ReplicaMethod:
    return ReplicaMethod(name, program(tmp, name, mode), **kw)


def settings(tmp: Path, *methods: ReplicaMethod, **kw: Any) -> PgSettings:
    base = PgSettings(
        name="pg2", scope="demo", data_dir=tmp / "data", bin_dir=tmp / "bin",
        listen_host="127.0.0.1", port=5432, connect_host="127.0.0.1",
        superuser=PgUser("postgres", "su-pw"), replication=PgUser("replicator", "repl-pw"),
        rewind=PgUser("rewind_user", "rw-pw"), parameters={}, pg_hba=(), initdb_options=(),
        bootstrap_users={}, pgpass=tmp / "pgpass", socket_dir=tmp / "sock",
        replica_methods=methods or (ReplicaMethod("basebackup"),))
    return replace(base, **kw)


def runs(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_methods_are_tried_in_order_until_one_succeeds(
        tmp_path: Path, record: Path, caplog: pytest.LogCaptureFixture) -> None:
    st = settings(tmp_path, method(tmp_path, "from_s3", "fail"),
                  method(tmp_path, "half", "empty"), method(tmp_path, "copy", "cluster"),
                  method(tmp_path, "never", "cluster"))
    with caplog.at_level(logging.INFO, "pgha.pg"):
        assert asyncio.run(create_replica(st, SOURCE))
    assert [r["name"] for r in runs(record)] == ["from_s3", "half", "copy"]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("ERROR", "replica method from_s3 failed: from_s3: exit 3: restore: backup not "
            "found") in messages
    assert ("WARNING", "replica method from_s3 failed; trying half next") in messages
    assert ("ERROR", f"replica method half exited successfully but {tmp_path / 'data'} holds "
            "no PostgreSQL data directory (PG_VERSION, global/pg_control)") in messages
    assert ("INFO", "replica created from pg1 with method copy") in messages
    assert (tmp_path / "data" / "PG_VERSION").exists()
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def test_a_custom_method_gets_patronis_arguments_and_the_pgpass_file(
        tmp_path: Path, record: Path) -> None:
    st = settings(tmp_path, method(tmp_path, "copy", "cluster",
                                   params=(("target", "latest"), ("retries", 3),
                                           ("skip", None))))
    assert asyncio.run(create_replica(st, SOURCE))
    [run] = runs(record)
    conninfo = ("host=10.0.0.1 port=5433 user=replicator dbname=postgres "
                f"passfile={tmp_path / 'pgpass'}")
    assert run["argv"] == ["--scope=demo", f"--datadir={tmp_path / 'data'}", "--role=replica",
                           f"--connstring={conninfo}", "--target=latest", "--retries=3"]
    assert run["PGPASSFILE"] == str(tmp_path / "pgpass")
    assert run["PGHOST"] is None
    assert "replicator:repl-pw" in (tmp_path / "pgpass").read_text()


def test_no_params_gives_the_command_nothing(tmp_path: Path, record: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = program(tmp_path, "copy", "cluster")
    st = settings(tmp_path, ReplicaMethod("copy", f"{cmd} 'a b'", no_params=True,
                                          params=(("x", 1),)))
    monkeypatch.setenv("FALLBACK_DATADIR", str(tmp_path / "data"))  # it knows where to go
    assert asyncio.run(create_replica(st, SOURCE))
    assert runs(record)[0]["argv"] == ["a b"]


def test_the_directory_is_emptied_before_each_method_but_a_keep_data_one(
        tmp_path: Path, record: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "old_file").write_text("from the previous replica")
    st = settings(tmp_path, method(tmp_path, "delta", "fail", keep_data=True),
                  method(tmp_path, "full", "fail"), method(tmp_path, "last", "cluster"))
    assert asyncio.run(create_replica(st, SOURCE))
    found = {r["name"]: r["found"] for r in runs(record)}
    assert found == {"delta": ["old_file"], "full": [], "last": []}


def test_when_every_method_fails_the_directory_is_left_empty(
        tmp_path: Path, record: Path) -> None:
    st = settings(tmp_path, method(tmp_path, "a", "empty", keep_data=True),
                  method(tmp_path, "b", "fail", keep_data=True))
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")  # a partial copy must never be started
    assert not asyncio.run(create_replica(st, SOURCE))
    assert [r["name"] for r in runs(record)] == ["a", "b"]
    assert data.is_dir() and list(data.iterdir()) == []


def test_without_a_source_only_no_leader_methods_run(
        tmp_path: Path, record: Path, caplog: pytest.LogCaptureFixture) -> None:
    st = settings(tmp_path, ReplicaMethod("basebackup"), method(tmp_path, "streaming", "cluster"),
                  method(tmp_path, "archive", "cluster", no_leader=True))
    assert [m.name for m in methods_to_run(st, None)] == ["archive"]
    assert asyncio.run(create_replica(st, None))
    [run] = runs(record)
    assert run["name"] == "archive"
    assert "--connstring=" in run["argv"]  # as Patroni: empty without a source
    st = settings(tmp_path, ReplicaMethod("basebackup"), method(tmp_path, "x", "cluster"))
    with caplog.at_level(logging.ERROR, "pgha.pg"):
        assert not asyncio.run(create_replica(st, None))
    assert "no replica method allows it (no_leader)" in caplog.text


def test_a_standby_clusters_remote_is_cloned_with_the_sections_own_methods(
        tmp_path: Path, record: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``standby_cluster.create_replica_methods`` names methods whose sections are in the
    member's ``postgresql`` (listed in its own ``create_replica_methods`` or not)."""
    repo = method(tmp_path, "from_repo", "cluster")
    st = settings(tmp_path, ReplicaMethod("basebackup"), method_sections={"from_repo": repo})
    remote = Upstream(REMOTE, "postgres://10.0.0.9:5433/postgres",
                      methods=("missing", "from_repo", "basebackup"))
    with caplog.at_level(logging.ERROR, "pgha.pg"):
        assert [m.name for m in methods_to_run(st, remote)] == ["from_repo", "basebackup"]
    assert "missing has no section postgresql.missing" in caplog.text
    assert asyncio.run(create_replica(st, remote))
    assert [r["name"] for r in runs(record)] == ["from_repo"]


def test_from_leader_runs_basebackup_alone(tmp_path: Path, record: Path) -> None:
    program(tmp_path, "pg_basebackup", "cluster")
    st = settings(tmp_path, method(tmp_path, "copy", "cluster"))
    assert [m.name for m in methods_to_run(st, SOURCE, basebackup_only=True)] == ["basebackup"]
    assert asyncio.run(create_replica(st, SOURCE, basebackup_only=True))
    assert [r["name"] for r in runs(record)] == ["pg_basebackup"]


def test_basebackup_falls_back_to_the_next_method(
        tmp_path: Path, record: Path, caplog: pytest.LogCaptureFixture) -> None:
    program(tmp_path, "pg_basebackup", "fail")
    st = settings(tmp_path, ReplicaMethod("basebackup"), method(tmp_path, "copy", "cluster"))
    with caplog.at_level(logging.WARNING, "pgha.pg"):
        assert asyncio.run(create_replica(st, SOURCE))
    assert [r["name"] for r in runs(record)] == ["pg_basebackup", "copy"]
    assert "pg_basebackup from pg1 failed: pg_basebackup: exit 3" in caplog.text
    assert "replica method basebackup failed; trying copy next" in caplog.text


def test_basebackup_command_line_with_options(tmp_path: Path) -> None:
    st = settings(tmp_path)
    pgbb = str(tmp_path / "bin" / "pg_basebackup")
    fixed = [pgbb, "-D", str(tmp_path / "data"), "-X", "stream"]
    assert basebackup_argv(st, "host=h") == [*fixed, "-c", "fast", "-w", "-d", "host=h"]
    st = replace(st, basebackup_options=(("max-rate", "100M"), ("verbose", None),
                                         ("checkpoint", "spread"), ("r", "32k"), ("v", None)))
    assert basebackup_argv(st, "host=h") == [
        *fixed, "-w", "-d", "host=h", "--max-rate=100M", "--verbose", "--checkpoint=spread",
        "-r", "32k", "-v"]
    # a one-letter checkpoint option replaces the default as well
    st = replace(st, basebackup_options=(("c", "spread"),))
    assert "fast" not in basebackup_argv(st, "host=h")


def test_basebackup_runs_with_its_options_and_logs_them(
        tmp_path: Path, record: Path, caplog: pytest.LogCaptureFixture) -> None:
    program(tmp_path, "pg_basebackup", "cluster")
    st = settings(tmp_path, basebackup_options=(("max-rate", "100M"), ("checkpoint", "fast")))
    with caplog.at_level(logging.INFO, "pgha.pg"):
        assert asyncio.run(create_replica(st, SOURCE))
    [run] = runs(record)
    assert run["argv"][-2:] == ["--max-rate=100M", "--checkpoint=fast"]
    assert "-c" not in run["argv"]
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith("cloning from pg1: "))
    assert line.endswith(" --max-rate=100M --checkpoint=fast")
    assert "repl-pw" not in caplog.text


def test_a_stalled_method_is_stopped_and_the_next_tried(tmp_path: Path, record: Path) -> None:
    st = settings(tmp_path, method(tmp_path, "stuck", "hang"),
                  method(tmp_path, "copy", "cluster"))
    assert asyncio.run(create_replica(st, SOURCE, stall_timeout=0.5))
    assert [r["name"] for r in runs(record)] == ["stuck", "copy"]


async def test_cancellation_empties_the_directory(tmp_path: Path, record: Path) -> None:
    st = settings(tmp_path, method(tmp_path, "stuck", "hang", keep_data=True))
    data = tmp_path / "data"
    data.mkdir()
    (data / "partial").write_text("x")
    task = asyncio.ensure_future(create_replica(st, SOURCE))
    for _ in range(200):
        if runs(record):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(data.iterdir()) == []


async def test_postgres_clone_refuses_data_unless_asked_to_replace_it(
        tmp_path: Path, record: Path) -> None:
    st = settings(tmp_path, method(tmp_path, "copy", "cluster"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "old").write_text("x")
    pg = Postgres(st)
    assert not await pg.clone(SOURCE)
    assert runs(record) == [] and (data / "old").exists()
    assert await pg.clone(SOURCE, replace_data=True)
    assert not (data / "old").exists() and (data / "standby.signal").exists()
    assert pg.current_upstream() == SOURCE


def test_the_module_keeps_the_clone_limits() -> None:
    # a multi-terabyte copy takes hours: no practical cut-off, a stall stops it instead
    assert replica_methods.CLONE_TIMEOUT >= 24 * 3600
    assert replica_methods.CLONE_STALL_TIMEOUT == 600
