"""Custom bootstrap methods end to end (real PostgreSQL 15 and etcd): a new cluster restored
from another cluster's base backup and WAL archive up to a recovery target, and a method that
fails (the agent exits with the cause, the data directory is wiped, ``initialize`` is free)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.backups import (
    RESTORE_BACKUP,
    RESTORE_WAL,
    archive_current_wal,
    archive_parameters,
    base_backup,
)
from tests.support.cluster import (
    PG_BIN,
    SRC,
    dump_logs,
    edit,
    exit_of,
    new_cluster,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration


def cluster_title(m: MemberProc) -> str:
    """The first line of ``pgha list``: ``+ Cluster: demo (<initialize>) +...``."""
    out = subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(m.config_path), "list"],
        capture_output=True, text=True, timeout=30, check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}).stdout
    return out.splitlines()[0]


NO_TRUST = ["local all all peer",
            "host replication replicator 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256"]


def tcp_login(m: MemberProc, password: str) -> bool:
    """Whether the superuser logs in over TCP with ``password``."""
    return subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(m.pg_port), "-U", "postgres",
         "-d", "postgres", "-XAtqw", "-c", "SELECT 1"], capture_output=True, timeout=30,
        env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"}, check=False).returncode == 0


def rows(m: MemberProc) -> str:
    return psql(m, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")


def state_of(m: MemberProc) -> str | None:
    try:
        return str(status(m).get("state"))
    except (OSError, AssertionError):
        return None


def source_backup(base: Path, backup: Path, archive: Path) -> tuple[str, str]:
    """A one-member cluster archiving its WAL, whose superuser has the password
    ``source-super``: table ``t`` holds row 1 in the base backup, row 2 before the returned
    recovery target time and row 3 after it, all archived. Returns (target time, the source's
    system identifier)."""
    src = new_cluster(base, members=1)
    with src:
        m = src.procs["pg1"]
        edit(m, {f"postgresql.parameters.{k}": v for k, v in archive_parameters(archive).items()})
        edit(m, {"postgresql.authentication.superuser.password": "source-super"})
        src.start("pg1")
        try:
            leader = wait_until(lambda: primary_of(src), 120, "the source's primary")
            psql(leader, "CREATE TABLE t (id int PRIMARY KEY, v text)")
            psql(leader, "INSERT INTO t VALUES (1, 'in the base backup')")
            base_backup(leader, backup)
            psql(leader, "INSERT INTO t VALUES (2, 'before the target')")
            target = psql(leader, "SELECT clock_timestamp()")
            psql(leader, "INSERT INTO t VALUES (3, 'after the target')")
            archive_current_wal(leader, archive)
            sysid = str(status(leader)["database_system_identifier"])
        except Exception:
            dump_logs(src)
            raise
    return target, sysid


def watch_state(m: MemberProc, state: str, gate: Path) -> None:
    """Wait until ``m`` shows ``state`` in GET /patroni (the step is held by ``gate``), then
    let the step go on."""
    wait_until(lambda: state_of(m) == state, 120, f"state {state!r}", interval=0.05)
    gate.touch()


@pytest.mark.parametrize("action", ["promote", "pause"])
def test_a_cluster_restored_from_a_backup_up_to_a_target_time(tmp_path: Path,
                                                               action: str) -> None:
    """PostgreSQL promotes itself at the target (``promote``), or pgha promotes it once its
    recovery paused there (``pause``)."""
    archive, backup = tmp_path / "archive", tmp_path / "backup"
    archive.mkdir()
    target, source_sysid = source_backup(tmp_path / "source", backup, archive)
    gate_restore, gate_recovery = tmp_path / "gate-restore", tmp_path / "gate-recovery"
    c: LocalCluster = new_cluster(tmp_path / "new", members=2)
    with c:
        for m in c.procs.values():
            edit(m, {"bootstrap.method": "from_backup", "bootstrap.from_backup": {
                "command": f"sh {RESTORE_BACKUP}", "backup": str(backup),
                "gate": str(gate_restore),
                "recovery_conf": {
                    "restore_command": f"sh {RESTORE_WAL} {archive} %f %p {gate_recovery}",
                    "recovery_target_time": target,
                    "recovery_target_action": action}},
                # no trust anywhere: the agent (over TCP, use_unix_socket is off) must set the
                # restored superuser's password (the source's) to its own
                "bootstrap.pg_hba": NO_TRUST,
                "bootstrap.users": {"admin": {"password": "admin-pw", "options": ["createdb"]}},
                "bootstrap.post_bootstrap": f"{PG_BIN / 'psql'} -Xq -c "
                                            "'CREATE TABLE made_by_post_bootstrap ()'"})
        pg1, pg2 = c.procs["pg1"], c.procs["pg2"]
        c.start("pg1")
        try:
            watch_state(pg1, "running custom bootstrap script", gate_restore)
            watch_state(pg1, "starting after custom bootstrap", gate_recovery)
            wait_until(lambda: primary_of(c) is pg1, 120, "the restored primary")
            c.start("pg2")
            wait_healthy(c)
            leader = status(pg1)
            # the data up to the target and not after, on the timeline of the promotion
            assert rows(pg1) == "1,2"
            assert leader["timeline"] == 2
            assert leader["state"] == "running" and leader["role"] == "primary"
            # a restored cluster keeps its source's system identifier: so does initialize
            assert leader["database_system_identifier"] == source_sysid
            assert cluster_title(pg1).split("Cluster: ")[1].startswith(f"demo ({source_sysid})")
            # as after initdb: the configured passwords, users and post_bootstrap
            assert tcp_login(pg1, "demo-super") and not tcp_login(pg1, "source-super")
            assert psql(pg1, "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'admin'") == "t"
            assert psql(pg1, "SELECT to_regclass('made_by_post_bootstrap') IS NOT NULL") == "t"
            # no recovery setting and no bootstrap-only pg_hba line is left behind
            assert psql(pg1, "SELECT setting FROM pg_settings WHERE name = "
                             "'recovery_target_time'") == ""
            assert leader["pending_restart"] is False
            assert (pg1.data_dir / "pg_hba.conf").read_text().splitlines()[1:] == NO_TRUST
            # the replica cloned from it and follows it
            psql(pg1, "INSERT INTO t VALUES (4, 'after the bootstrap')")
            wait_until(lambda: rows(pg2) == "1,2,4", 60, "the new row on the replica")
            assert status(pg2)["database_system_identifier"] == source_sysid
        except Exception:
            dump_logs(c)
            raise


def test_a_failing_method_exits_with_its_cause_and_frees_initialize(tmp_path: Path) -> None:
    junk = tmp_path / "not-a-backup"
    junk.mkdir()
    (junk / "README").write_text("no data directory here\n")
    c = new_cluster(tmp_path / "c", members=1)
    with c:
        m = c.procs["pg1"]
        edit(m, {"bootstrap.method": "from_backup", "bootstrap.from_backup": {
            "command": f"sh {RESTORE_BACKUP}", "backup": str(junk)}})
        code, log = exit_of(c, "pg1")
        assert code == 1, log
        assert ("CRITICAL pgha: failed to bootstrap the cluster: custom bootstrap script "
                f"failed: sh: exit 3: not a base backup: {junk}\n") in log, log
        assert f"custom bootstrap script: restoring {junk} into {m.data_dir}" in log
        assert log.count("running custom bootstrap script") == 1  # no retry loop, no initdb
        assert "running initdb" not in log
        assert not m.data_dir.exists() or not any(m.data_dir.iterdir())  # the copy is wiped
        assert cluster_title(m).split("Cluster: ")[1].startswith("demo (uninitialized)")
        # initialize was given back: with initdb, the same member bootstraps the cluster
        edit(m, {"bootstrap.method": "initdb"})
        c.start("pg1")
        wait_healthy(c)
