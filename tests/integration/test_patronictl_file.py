"""The operator CLI driven as a patronictl user drives it, on a real three-member cluster
(PostgreSQL 15 + etcd) whose REST APIs demand credentials for unsafe calls: the configuration
is patronictl's default file, ``~/.config/patroni/patronictl.yaml``, holding only an ``etcd3``
section and the ``ctl``/``restapi`` credentials (no scope, no member name, no postgresql), and
the cluster is named on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.support.cluster import SRC, dump_logs, new_cluster, primary_of, wait_healthy

from pgha.cli.localcluster import LocalCluster

pytestmark = pytest.mark.integration

CREDENTIALS = {"username": "ops", "password": "ops-secret"}


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    c = new_cluster(tmp_path / "c")
    with c:
        for m in c.procs.values():  # every member's API demands the credentials
            cfg = yaml.safe_load(m.config_path.read_text())
            cfg["restapi"]["authentication"] = CREDENTIALS
            m.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        c.start_all(stagger=0.3)
        wait_healthy(c)
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c)


def pgha(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pgha ARGS`` with ``HOME`` set to ``home`` and no configuration option."""
    return subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", *args], capture_output=True, text=True,
        timeout=120, check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(home)})


def test_list_and_switchover_with_a_patronictl_file(cluster: LocalCluster,
                                                    tmp_path: Path) -> None:
    assert cluster.etcd is not None
    etcd = cluster.etcd.endpoint
    home = tmp_path / "home"
    default = home / ".config" / "patroni" / "patronictl.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(yaml.safe_dump({"etcd3": {"hosts": [etcd]}, "ctl": {"insecure": False}}))
    leader = wait_healthy(cluster).name
    target = next(n for n in sorted(cluster.procs) if n != leader)

    listed = pgha(home, "list", "demo")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("+ Cluster: demo (") and lines[0].endswith("+")
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag",
                      "Replay LSN", "Lag"]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in lines[3:-1])}
    assert rows[leader][2] == "Leader"
    assert all(rows[n][3] == "streaming" for n in rows if n != leader)

    # without credentials the leader refuses, and says so as patronictl shows it
    refused = pgha(home, "switchover", "demo", "--candidate", target, "--force")
    assert "Switchover failed, details: 401" in refused.stdout, refused.stdout + refused.stderr
    still = primary_of(cluster)
    assert still is not None and still.name == leader

    default.write_text(yaml.safe_dump({"etcd3": {"hosts": [etcd]}, "ctl": {"insecure": False},
                                       "restapi": {"authentication": CREDENTIALS}}))
    done = pgha(home, "switchover", "demo", "--leader", leader, "--candidate", target,
                "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Current cluster topology\n+ Cluster: demo (")
    assert f'Successfully switched over to "{target}"' in done.stdout
    assert wait_healthy(cluster).name == target

    # the same DCS named with -d, the scope as the argument; an unknown leader is refused
    by_url = pgha(home, "-d", f"etcd3://{etcd}", "switchover", "demo", "--leader", leader,
                  "--candidate", target, "--force")
    assert by_url.returncode == 1
    assert f"Error: Member {leader} is not the leader of cluster demo" in by_url.stderr
    relisted = pgha(home, "-d", f"etcd3://{etcd}", "list", "demo", "-f", "json")
    assert relisted.returncode == 0, relisted.stderr
    roles = {row["Member"]: row["Role"] for row in json.loads(relisted.stdout)}
    assert roles[target] == "Leader" and roles[leader] == "Replica"
