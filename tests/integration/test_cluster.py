"""End to end: three real agents, real PostgreSQL 15 and a real etcd (ttl 5 s, loop_wait 1 s).

Each test builds its own cluster in a temporary directory on free ports and stops every
process it started. No timing is asserted here (that is the benchmark's job); waits only bound
how long a test may take.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import (
    SRC,
    is_primary,
    primary_of,
    psql,
    running_cluster,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request) as c:
        yield c


def _replicas(cluster: LocalCluster, leader_name: str) -> list[str]:
    return [n for n in cluster.procs if n != leader_name]


def test_bootstrap_replicates_and_lists(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    psql(leader, "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a')")
    for name in _replicas(cluster, leader.name):
        m = cluster.procs[name]
        wait_until(lambda m=m: psql(m, "SELECT v FROM t WHERE id = 1") == "a", 30,
                   f"row on {name}")
        st = status(m)
        assert st["role"] == "replica"
        assert st["database_system_identifier"] == status(leader)["database_system_identifier"]
    # every replica streams through its own slot on the leader
    slots = psql(leader, "SELECT slot_name || ':' || active FROM pg_replication_slots "
                         "ORDER BY 1").splitlines()
    assert slots == [f"{n}:true" for n in sorted(_replicas(cluster, leader.name))]
    out = subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(leader.config_path), "list"],
        capture_output=True, text=True, timeout=30, check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    ).stdout
    sysid = status(leader)["database_system_identifier"]
    assert f"Cluster: demo ({sysid})" in out
    assert "| Leader " in out and out.count("| Replica ") == 2
    # the generated postgresql.conf includes initdb's settings kept in postgresql.base.conf
    conf = (leader.data_dir / "postgresql.conf").read_text()
    assert "include 'postgresql.base.conf'" in conf
    assert (leader.data_dir / "postgresql.base.conf").exists()


def test_leader_node_death_fails_over_and_old_leader_rejoins(cluster: LocalCluster) -> None:
    old = wait_healthy(cluster)
    psql(old, "CREATE TABLE t (id int primary key)")
    psql(old, "INSERT INTO t SELECT generate_series(1, 100)")
    for name in _replicas(cluster, old.name):
        m = cluster.procs[name]
        wait_until(lambda m=m: psql(m, "SELECT count(*) FROM t") == "100", 30, "replication")
    cluster.kill_node(old.name)
    new = wait_until(lambda: primary_of(cluster), 60, "a new primary")
    assert new.name != old.name
    psql(new, "INSERT INTO t VALUES (101)")
    assert status(new)["timeline"] == 2
    other = next(cluster.procs[n] for n in _replicas(cluster, old.name) if n != new.name)
    wait_until(lambda: psql(other, "SELECT count(*) FROM t") == "101", 60,
               "the other replica following the new leader")
    wait_until(lambda: status(other)["timeline"] == 2, 10, "the replica's status on TL 2")
    # the old leader comes back as a replica of the new one
    cluster.start(old.name)
    wait_until(lambda: status(old).get("role") == "replica"
               and status(old).get("state") == "running", 90, "old leader rejoined")
    wait_until(lambda: psql(old, "SELECT count(*) FROM t") == "101", 60, "rejoined data")
    wait_until(lambda: status(old)["timeline"] == 2, 10, "the old leader's status on TL 2")
    assert not is_primary(old)
    wait_healthy(cluster)


def test_postmaster_crash_on_replica_restarts_it(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    replica = cluster.procs[_replicas(cluster, leader.name)[0]]
    before = cluster.kill_postmaster(replica.name)
    assert before is not None
    wait_until(lambda: (replica.postmaster_pid() not in (None, before)
                        and status(replica).get("state") == "running"), 60,
               "replica postmaster restarted")
    assert status(replica)["role"] == "replica"
    assert primary_of(cluster) is leader


def test_postmaster_crash_on_leader_restarts_in_place(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    psql(leader, "CREATE TABLE t (id int)")
    before = cluster.kill_postmaster(leader.name)
    wait_until(lambda: leader.postmaster_pid() not in (None, before) and is_primary(leader),
               60, "leader restarted in place")
    psql(leader, "INSERT INTO t VALUES (1)")
    assert status(leader)["timeline"] == 1  # crash recovery, no promotion of another member
    wait_healthy(cluster)


def test_clean_stop_of_leader_hands_over(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    psql(leader, "CREATE TABLE t (id int primary key)")
    psql(leader, "INSERT INTO t SELECT generate_series(1, 500)")
    cluster.stop(leader.name)
    assert leader.postmaster_pid() is None or not (leader.data_dir / "postmaster.pid").exists()
    new = wait_until(lambda: primary_of(cluster), 30, "a new primary after a clean stop")
    assert new.name != leader.name
    # every acknowledged write made it: a clean stop ships all WAL before the lock is released
    assert psql(new, "SELECT count(*) FROM t") == "500"
    psql(new, "INSERT INTO t VALUES (501)")


def test_killed_leader_agent_restarts_and_adopts_running_postgres(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    pid = leader.postmaster_pid()
    cluster.kill_agent(leader.name)  # PostgreSQL keeps running without its agent
    cluster.start(leader.name)
    wait_until(lambda: is_primary(leader), 60, "restarted agent back as leader")
    assert leader.postmaster_pid() == pid  # adopted, not restarted
    assert status(leader)["timeline"] == 1  # no failover happened
    # DESIGN.md rule 7: the key still bound to the killed agent's session was rebound first
    assert "decision leader_rebind" in leader.log_path.read_text()
    psql(leader, "CREATE TABLE t (id int)")
    wait_healthy(cluster)


def test_second_agent_with_a_live_name_refuses_to_start(cluster: LocalCluster,
                                                        tmp_path: Path) -> None:
    import yaml

    leader = wait_healthy(cluster)
    cfg = yaml.safe_load(leader.config_path.read_text())
    from pgha.cli.localcluster import free_port

    port = free_port()
    cfg["restapi"]["listen"] = cfg["restapi"]["connect_address"] = f"127.0.0.1:{port}"
    cfg["postgresql"]["data_dir"] = str(tmp_path / "dup-data")
    dup = tmp_path / "dup.yml"
    dup.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "run", str(dup)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "there is already a node named" in out.stderr and "running" in out.stderr
    assert not (tmp_path / "dup-data").exists()


def test_sighup_rereads_yaml_and_reloads_postgres(cluster: LocalCluster) -> None:
    import signal

    import yaml

    leader = wait_healthy(cluster)
    assert leader.proc is not None
    original = leader.config_path.read_text()
    leader.config_path.write_text("scope: [this is not valid\n")
    leader.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the running configuration" in leader.log_path.read_text(), 20,
               "the broken file rejected")
    assert leader.alive and is_primary(leader)
    cfg = yaml.safe_load(original)
    cfg["postgresql"]["parameters"]["work_mem"] = "7MB"
    leader.config_path.write_text(yaml.safe_dump(cfg))
    leader.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: psql(leader, "SHOW work_mem") == "7MB", 20, "work_mem reloaded")
    assert is_primary(leader)
