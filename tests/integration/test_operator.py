"""The operator's interface end to end on a real three-member cluster (PostgreSQL 15 + etcd,
ttl 5 s, loop_wait 1 s): switchover, manual failover, scheduled switchover, restart, reload,
re-initialize, dynamic configuration and maintenance mode over the REST API, and the same
through the ``pgha`` CLI. A probe checks every 20 ms that two members are never writable at
once. No timing is asserted (benchmarks/switchover.py measures the write gap)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from tests.support.cluster import (
    SRC,
    call,
    dump_logs,
    http_get,
    new_cluster,
    primary_of,
    psql,
    running_with_probe,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with new_cluster(tmp_path / "c") as c, running_with_probe(c, request):
        yield c


def leader_name(c: LocalCluster) -> str:
    m = wait_until(lambda: primary_of(c), 60, "a primary")
    return m.name


def replicas(c: LocalCluster) -> list[MemberProc]:
    lead = leader_name(c)
    return [m for n, m in c.procs.items() if n != lead]


def cli(c: LocalCluster, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    config = next(iter(c.procs.values())).config_path
    return subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(config), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(config.parent)})


def test_switchover_failover_and_scheduled_switchover(cluster: LocalCluster) -> None:
    old = cluster.procs[leader_name(cluster)]
    target = replicas(cluster)[0]
    psql(old, "CREATE TABLE sw (id int)")
    psql(old, "INSERT INTO sw VALUES (1)")

    code, text = call(old, "POST", "/switchover", {"leader": old.name,
                                                   "candidate": target.name})
    assert code == 200, text
    assert target.name in text
    assert wait_healthy(cluster).name == target.name
    # the former leader follows the new one on the new timeline, and no write was lost
    # (it may report "streaming" a moment before its WAL receiver crossed to the new timeline)
    wait_until(lambda: status(old).get("replication_state") == "streaming"
               and status(old).get("timeline") == status(target).get("timeline"), 60,
               "old leader streaming on the new timeline")
    assert psql(target, "SELECT count(*) FROM sw") == "1"
    code, history = call(target, "GET", "/history")
    assert code == 200 and history[-1][4] == target.name
    code, clus = call(old, "GET", "/cluster")
    assert "scheduled_switchover" not in clus

    # impossible requests are refused with a reason and change nothing
    code, text = call(target, "POST", "/switchover", {"leader": old.name,
                                                      "candidate": target.name})
    assert code in (400, 412), text
    code, text = call(target, "POST", "/switchover", {"leader": target.name,
                                                      "candidate": "nobody"})
    assert code == 412, text
    assert leader_name(cluster) == target.name

    # a manual failover sent to any member (here a replica) with a leader present
    third = next(m for m in replicas(cluster) if m.name != old.name)
    code, text = call(third, "POST", "/failover", {"candidate": old.name})
    assert code == 200, text
    assert wait_healthy(cluster).name == old.name

    # scheduled: shown in /cluster, carried out when due; a second one can be cancelled
    at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    code, text = call(old, "POST", "/switchover", {"leader": old.name,
                                                   "candidate": third.name,
                                                   "scheduled_at": at})
    assert code == 202, text
    sched = wait_until(lambda: call(third, "GET", "/cluster")[1].get("scheduled_switchover"),
                       10, "scheduled switchover visible")
    assert sched["to"] == third.name
    wait_until(lambda: leader_name(cluster) == third.name, 60, "scheduled switchover")
    wait_healthy(cluster)
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    code, text = call(third, "POST", "/switchover", {"leader": third.name,
                                                     "scheduled_at": later})
    assert code == 202, text
    wait_until(lambda: call(third, "GET", "/cluster")[1].get("scheduled_switchover"), 10,
               "scheduled switchover visible")
    assert call(third, "DELETE", "/switchover")[0] == 200
    wait_until(lambda: "scheduled_switchover" not in call(third, "GET", "/cluster")[1], 10,
               "scheduled switchover removed")
    assert call(third, "DELETE", "/switchover")[0] == 404


def test_restart_reload_reinitialize_and_dynamic_configuration(
        cluster: LocalCluster) -> None:
    lead = cluster.procs[leader_name(cluster)]
    rep = replicas(cluster)[0]

    before = status(rep)["postmaster_start_time"]
    code, text = call(rep, "POST", "/restart", {})
    assert code == 200, text
    wait_until(lambda: status(rep).get("replication_state") == "streaming", 60, "restarted")
    assert status(rep)["postmaster_start_time"] != before
    code, text = call(lead, "POST", "/restart", {"role": "replica"})
    assert code == 503, text  # conditions not met: the leader is a primary

    # a reload-only parameter reaches every member's running server
    code, cfg = call(rep, "PATCH", "/config",
                     {"postgresql": {"parameters": {"work_mem": "7MB"}}})
    assert code == 200, cfg
    assert cfg["postgresql"]["parameters"]["work_mem"] == "7MB"
    for m in cluster.procs.values():
        wait_until(lambda m=m: psql(m, "SHOW work_mem") == "7MB", 30, f"work_mem on {m.name}")
    # a restart-only parameter is reported as pending until restarted
    code, cfg = call(lead, "PATCH", "/config",
                     {"postgresql": {"parameters": {"max_connections": 60}}})
    assert code == 200, cfg
    for m in cluster.procs.values():
        wait_until(lambda m=m: status(m).get("pending_restart"), 30, f"pending on {m.name}")
        assert "max_connections" in status(m)["pending_restart_reason"]
    for m in [*replicas(cluster), lead]:
        code, text = call(m, "POST", "/restart", {"restart_pending": True})
        assert code == 200, text
        wait_until(lambda m=m: not status(m).get("pending_restart"), 60, f"cleared {m.name}")
        assert psql(m, "SHOW max_connections") == "60"
    wait_healthy(cluster)
    code, text = call(rep, "POST", "/restart", {"restart_pending": True})
    assert code == 503, text  # nothing pending any more

    assert call(rep, "POST", "/reload")[0] == 202

    assert call(lead, "POST", "/reinitialize", {})[0] == 503  # the leader refuses
    psql(lead, "CREATE TABLE reinit (id int); INSERT INTO reinit VALUES (42)")
    code, text = call(rep, "POST", "/reinitialize", {"from_leader": True})
    assert code == 200, text
    wait_until(lambda: psql(rep, "SELECT id FROM reinit") == "42", 120, "re-cloned replica")
    wait_healthy(cluster)


def test_maintenance_mode(cluster: LocalCluster) -> None:
    lead = cluster.procs[leader_name(cluster)]
    rep = replicas(cluster)[0]
    code, cfg = call(rep, "PATCH", "/config", {"pause": True})
    assert code == 200 and cfg["pause"] is True
    for m in cluster.procs.values():
        wait_until(lambda m=m: status(m).get("pause"), 30, f"{m.name} paused")
    # nothing is changed automatically: a dead replica postmaster stays down
    cluster.kill_postmaster(rep.name)
    wait_until(lambda: status(rep)["state"] != "running", 30, "replica down")
    time.sleep(3)  # three loop_waits: long enough for an unpaused agent to restart it
    assert status(rep)["state"] != "running"
    # stopping the leader's agent leaves PostgreSQL running (and it is adopted again)
    cluster.stop(lead.name)
    assert psql(lead, "SELECT NOT pg_is_in_recovery()") == "t"
    cluster.start(lead.name)
    wait_until(lambda: http_get(f"{lead.api}/primary", timeout=1)[0] == 200, 60,
               "leader adopted")
    # resume: the replica is started again
    code, cfg = call(lead, "PATCH", "/config", {"pause": None})
    assert code == 200 and "pause" not in cfg
    wait_healthy(cluster)


def test_cli_against_a_live_cluster(cluster: LocalCluster) -> None:
    out = cli(cluster, "list")
    assert out.returncode == 0, out.stderr
    lead = leader_name(cluster)
    assert "Leader" in out.stdout and lead in out.stdout
    target = replicas(cluster)[0].name

    out = cli(cluster, "switchover", "--leader", lead, "--candidate", target, "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert wait_healthy(cluster).name == target

    out = cli(cluster, "reload", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    rep = replicas(cluster)[0]
    before = status(rep)["postmaster_start_time"]
    out = cli(cluster, "restart", rep.name, "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    wait_until(lambda: status(rep).get("postmaster_start_time") not in (None, before), 60,
               "restarted by the CLI")

    out = cli(cluster, "pause", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Maintenance mode: on" in cli(cluster, "list").stdout
    out = cli(cluster, "resume", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Maintenance mode" not in cli(cluster, "list").stdout

    out = cli(cluster, "edit-config", "-p", "work_mem=9MB", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    for m in cluster.procs.values():
        wait_until(lambda m=m: psql(m, "SHOW work_mem") == "9MB", 30, f"work_mem on {m.name}")
    out = cli(cluster, "history")
    assert out.returncode == 0 and target in out.stdout


def test_callbacks_run_on_start_stop_and_role_change(tmp_path: Path) -> None:
    """Each member runs its callbacks as ``command action role scope``; a switchover fires
    on_stop and on_role_change replica on the old leader and on_role_change primary on the new
    one."""
    script = tmp_path / "callback.sh"
    script.write_text('#!/bin/sh\necho "$1 $2 $3" >> "$(dirname "$0")/calls-$PGHA_TEST_NAME"\n')
    script.chmod(0o755)
    c = new_cluster(tmp_path / "c")
    with c:
        for m in c.procs.values():
            cfg = yaml.safe_load(m.config_path.read_text())
            cfg["postgresql"]["callbacks"] = {
                action: f"env PGHA_TEST_NAME={m.name} {script}"
                for action in ("on_start", "on_stop", "on_role_change", "on_restart")}
            m.config_path.write_text(yaml.safe_dump(cfg))
        c.start_all(stagger=0.3)
        try:
            old = wait_healthy(c)
            new = next(m for m in c.procs.values() if m is not old)

            def calls(m: MemberProc) -> list[str]:
                path = tmp_path / f"calls-{m.name}"
                return path.read_text().splitlines() if path.exists() else []

            wait_until(lambda: "on_start primary demo" in calls(old), 30, "on_start primary")
            wait_until(lambda: "on_start replica demo" in calls(new), 30, "on_start replica")
            code, text = call(old, "POST", "/switchover", {"leader": old.name,
                                                           "candidate": new.name})
            assert code == 200, text
            wait_until(lambda: "on_role_change primary demo" in calls(new), 30,
                       "on_role_change on the new leader")
            wait_until(lambda: "on_role_change replica demo" in calls(old), 30,
                       "on_role_change on the old leader")
            assert "on_stop primary demo" in calls(old)
            code, text = call(new, "POST", "/restart", {})
            assert code == 200, text
            wait_until(lambda: "on_restart primary demo" in calls(new), 30, "on_restart")
        except BaseException:
            dump_logs(c)
            raise
