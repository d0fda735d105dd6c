"""``GET /decisions`` and ``pgha why`` on a real three-member cluster (PostgreSQL 15 + etcd, ttl
5 s, loop_wait 1 s, ``maximum_lag_on_failover`` 1 kB): pg2 is tagged nofailover, the leader's
node dies after writing WAL no replica received (its last ``status`` optime is ahead of them),
so nobody may take over, and every member and the CLI say why."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import (
    SRC,
    dump_logs,
    edit,
    http_get,
    is_primary,
    new_cluster,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster
from pgha.config import load_config
from pgha.dcs.factory import open_kv
from pgha.dcs.store import ClusterStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMIT = 1024
UNRECEIVED = 64 * 1024 * 1024  # WAL the dead leader wrote that no replica received


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    c = new_cluster(tmp_path / "c", maximum_lag_on_failover=LIMIT)
    with c:
        edit(c.procs["pg2"], {"tags.nofailover": True})
        c.start("pg1")
        wait_until(lambda: is_primary(c.procs["pg1"]), 90, "pg1 primary")
        c.start("pg2")
        c.start("pg3")
        wait_healthy(c)
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c)


def why(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    config = c.procs["pg3"].config_path
    return subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(config), "why", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(config.parent)})


def decisions(c: LocalCluster, name: str) -> list[dict[str, Any]]:
    code, body = http_get(f"{c.procs[name].api}/decisions")
    assert code == 200 and isinstance(body, list), (code, body)
    return body


def refusal(c: LocalCluster, name: str, reason: str) -> dict[str, Any] | None:
    return next((r for r in reversed(decisions(c, name)) if r["reason"] == reason), None)


def publish_unreceived_wal(c: LocalCluster, optime: int, conn_url: str) -> None:
    """The ``status`` key as the dead leader would have left it after writing WAL that no
    replica received."""
    async def write() -> None:
        config = load_config(c.procs["pg1"].config_path, env={})
        async with open_kv(config, ttl=30, timeout=5) as kv:
            store = ClusterStore(kv, config.namespace, config.scope, "pg1")
            await store.write_status(optime, conn_url=conn_url)

    asyncio.run(write())


def test_why_nobody_took_over(cluster: LocalCluster) -> None:
    out = why(cluster)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("leader pg1 since "), out.stdout  # its bootstrap record
    leader_position = status(cluster.procs["pg1"])["xlog"]["location"]
    pg1_url = f"postgres://127.0.0.1:{cluster.procs['pg1'].pg_port}/postgres"

    cluster.kill_node("pg1")
    publish_unreceived_wal(cluster, leader_position + UNRECEIVED, pg1_url)

    lag = wait_until(lambda: refusal(cluster, "pg3", "race_refused_lag"), 60,
                     "pg3 refusing the race for its lag")
    nofailover = wait_until(lambda: refusal(cluster, "pg2", "race_refused_nofailover"), 60,
                            "pg2 refusing the race for its tag")
    own = lag["standings"][0]
    assert (own["name"], own["code"], own["limit"]) == ("pg3", "lag", LIMIT)
    assert own["lag"] > UNRECEIVED - 1024 * 1024
    others = {s["name"]: s for s in lag["standings"][1:]}
    assert others["pg1"]["code"] == "unreachable"  # the dead leader, found by its status key
    assert others["pg2"]["code"] == "nofailover"
    assert lag["leader"] is None and lag["role"] == "replica"
    assert nofailover["standings"][0]["code"] == "nofailover"

    out = why(cluster)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("no candidate: "), out.stdout
    assert "pg1 unreachable" in first and "pg2 nofailover" in first
    assert "pg3 lag " in first and f"> {LIMIT // 1024} kB" in first
    out = why(cluster, "pg3")
    assert out.returncode == 0 and "race_refused_lag" in out.stdout, out.stdout + out.stderr
    # nobody took over
    assert not any(is_primary(m) for n, m in cluster.procs.items() if n != "pg1")
