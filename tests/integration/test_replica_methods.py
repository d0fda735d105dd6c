"""``postgresql.create_replica_methods`` end to end, on real PostgreSQL 15 and etcd: a replica
created by a custom method (a script copying a base backup taken earlier) with Patroni's
arguments; ``basebackup`` with options; a failing first method followed by ``basebackup``;
and a replica created by a ``no_leader`` method while the leader is stopped, which starts as
a replica without an upstream and follows the leader once it is back.

No timing is asserted; waits only bound how long a test may take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import (
    PG_BIN,
    dump_logs,
    is_primary,
    new_cluster,
    psql,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "replica_from_backup.py"
COMMAND = f"{sys.executable} {SCRIPT}"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Two members, prepared but not started (each test edits pg2's YAML first)."""
    c = new_cluster(tmp_path / "c", members=2)
    with c:
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c, tail=120)


def edit_postgresql(m: MemberProc, **section: Any) -> None:
    cfg = yaml.safe_load(m.config_path.read_text())
    cfg["postgresql"].update(section)
    m.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def start_leader(c: LocalCluster) -> MemberProc:
    leader = c.start("pg1")
    wait_until(lambda: is_primary(leader), 120, "pg1 running as primary")
    psql(leader, "CREATE TABLE t (id int primary key)")
    psql(leader, "INSERT INTO t SELECT generate_series(1, 10)")
    return leader


def base_backup(leader: MemberProc, target: Path) -> None:
    """A base backup of the leader taken by hand, as a backup tool would keep one."""
    subprocess.run(
        [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(leader.pg_port),
         "-U", "replicator", "-D", str(target), "-X", "stream", "-c", "fast"],
        check=True, capture_output=True, timeout=120,
        env={**os.environ, "PGPASSWORD": "demo-repl"})


def agent_log(m: MemberProc) -> str:
    return m.log_path.read_text(errors="replace")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_custom_method_creates_a_streaming_replica_from_a_backup(
        cluster: LocalCluster, tmp_path: Path) -> None:
    leader = start_leader(cluster)
    backup, record = tmp_path / "backup", tmp_path / "record.jsonl"
    base_backup(leader, backup)
    psql(leader, "INSERT INTO t VALUES (11)")  # after the backup: comes by streaming
    replica = cluster.procs["pg2"]
    edit_postgresql(replica, create_replica_methods=["from_backup", "basebackup"],
                    from_backup={"command": COMMAND, "backup": str(backup),
                                 "record": str(record)})
    cluster.start("pg2")
    assert wait_healthy(cluster) is leader
    wait_until(lambda: psql(replica, "SELECT count(*) FROM t") == "11", 60,
               "the row written after the backup on pg2")
    assert status(replica)["replication_state"] == "streaming"
    [call] = records(record)
    argv = call["argv"]
    assert argv[:3] == ["--scope=demo", f"--datadir={replica.data_dir}", "--role=replica"]
    assert argv[3].startswith("--connstring=")
    conn = argv[3].removeprefix("--connstring=")
    for word in ("host=127.0.0.1", f"port={leader.pg_port}", "user=replicator",
                 "dbname=postgres"):
        assert word in conn.split(), conn
    assert "demo-repl" not in conn  # the password is in the pgpass file
    assert argv[4:] == [f"--backup={backup}", f"--record={record}"]
    assert call["PGPASSFILE"] == str(replica.data_dir.parent / "pgpass")
    log = agent_log(replica)
    assert "replica created from pg1 with method from_backup" in log
    assert "cloning from pg1" not in log  # basebackup was not needed


def test_basebackup_with_options(cluster: LocalCluster) -> None:
    leader = start_leader(cluster)
    replica = cluster.procs["pg2"]
    edit_postgresql(replica, basebackup=[{"max-rate": "100M"}, {"checkpoint": "fast"},
                                         "verbose"])
    cluster.start("pg2")
    assert wait_healthy(cluster) is leader
    wait_until(lambda: psql(replica, "SELECT count(*) FROM t") == "10", 60, "rows on pg2")
    line = next(line for line in agent_log(replica).splitlines()
                if "cloning from pg1: " in line)
    argv = line.split("cloning from pg1: ", 1)[1].split()
    assert argv[-3:] == ["--max-rate=100M", "--checkpoint=fast", "--verbose"]
    assert "-c" not in argv  # the user's checkpoint option replaces pgha's default


def test_a_failing_method_is_logged_and_the_next_one_tried(cluster: LocalCluster,
                                                           tmp_path: Path) -> None:
    leader = start_leader(cluster)
    replica = cluster.procs["pg2"]
    record = tmp_path / "record.jsonl"
    edit_postgresql(replica, create_replica_methods=["broken", "basebackup"],
                    broken={"command": COMMAND, "fail": True, "record": str(record)})
    cluster.start("pg2")
    assert wait_healthy(cluster) is leader
    wait_until(lambda: psql(replica, "SELECT count(*) FROM t") == "10", 60, "rows on pg2")
    log = agent_log(replica)
    failure = next(line for line in log.splitlines() if "replica method broken failed: " in line)
    assert "exit 1: replica_from_backup: no backup for this member (asked to fail)" in failure
    assert "ERROR" in failure
    assert "replica method broken failed; trying basebackup next" in log
    assert "replica created from pg1 with method basebackup" in log
    assert len(records(record)) == 1  # tried once: basebackup succeeded


def test_a_no_leader_method_creates_a_replica_while_the_leader_is_stopped(
        cluster: LocalCluster, tmp_path: Path) -> None:
    leader = start_leader(cluster)
    backup, record = tmp_path / "backup", tmp_path / "record.jsonl"
    base_backup(leader, backup)
    psql(leader, "INSERT INTO t VALUES (11)")  # after the backup
    cluster.stop("pg1")  # a clean stop: PostgreSQL stopped, the leader lock released
    replica = cluster.procs["pg2"]
    edit_postgresql(replica, create_replica_methods=["basebackup", "from_backup"],
                    from_backup={"command": COMMAND, "no_leader": True,
                                 "backup": str(backup), "record": str(record)})
    cfg = yaml.safe_load(replica.config_path.read_text())
    cfg["tags"]["nofailover"] = True  # restored from an old backup: never the leader
    replica.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cluster.start("pg2")
    wait_until(lambda: (s := status(replica)).get("role") == "replica"
               and s.get("state") == "running", 120, "pg2 running as a replica")
    assert psql(replica, "SELECT count(*) FROM t") == "10"  # the backup's data
    assert psql(replica, "SELECT pg_is_in_recovery()") == "t"
    [call] = records(record)
    assert "--connstring=" in call["argv"]  # no source member: as Patroni, empty
    log = agent_log(replica)
    assert "replica created without a leader with method from_backup" in log
    assert "cloning from" not in log  # basebackup needs a leader: skipped
    # the leader comes back: pg2 follows it and gets what was written after the backup
    cluster.start("pg1")
    assert wait_healthy(cluster) is leader
    psql(leader, "INSERT INTO t VALUES (12)")
    wait_until(lambda: psql(replica, "SELECT count(*) FROM t") == "12", 60,
               "pg2 following the leader")
    assert status(replica)["replication_state"] == "streaming"
