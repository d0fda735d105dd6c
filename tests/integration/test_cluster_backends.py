"""The skeleton's failover scenarios on every DCS backend: bootstrap, clean stop of the leader,
rejoin, leader node death, rejoin again. The DCS is whatever ``tests/support/dcs_servers.py``
can run here (etcd, ZooKeeper, the Consul emulator, a real Consul agent when installed);
the agents and PostgreSQL are real."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cluster import (
    dump_logs,
    new_cluster,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)
from tests.support.dcs_servers import SERVERS, agent_timing, available

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_failover_scenarios(server_name: str, tmp_path: Path,
                            request: pytest.FixtureRequest) -> None:
    reason = available(server_name)
    if reason:
        pytest.skip(reason)
    timing = agent_timing(server_name)
    settle = timing["ttl"] * 3 + 60
    server = SERVERS[server_name][0]()
    try:
        cluster = new_cluster(tmp_path / "c", dcs_section=server.config_section(), **timing)
        with cluster:
            cluster.start_all(stagger=0.3)
            try:
                first = wait_healthy(cluster, timeout=180)
                psql(first, "CREATE TABLE t (id int primary key)")
                psql(first, "INSERT INTO t SELECT generate_series(1, 100)")
                # clean stop: the lock is released after PostgreSQL stopped; nothing lost
                cluster.stop(first.name)
                second = wait_until(lambda: primary_of(cluster), settle, "a primary after stop")
                assert second.name != first.name
                assert psql(second, "SELECT count(*) FROM t") == "100"
                psql(second, "INSERT INTO t VALUES (101)")
                cluster.start(first.name)
                wait_until(lambda: status(first).get("role") == "replica"
                           and status(first).get("state") == "running", settle,
                           "the stopped leader rejoined")
                wait_until(lambda: psql(first, "SELECT count(*) FROM t") == "101", 60,
                           "rejoined data")
                # node death of the new leader: agent and postmaster SIGKILLed together
                wait_healthy(cluster, timeout=settle)
                cluster.kill_node(second.name)
                third = wait_until(lambda: primary_of(cluster), settle,
                                   "a primary after node death")
                assert third.name != second.name
                psql(third, "INSERT INTO t VALUES (102)")
                cluster.start(second.name)
                wait_until(lambda: status(second).get("role") == "replica"
                           and status(second).get("state") == "running", settle,
                           "the dead leader rejoined")
                wait_until(lambda: psql(second, "SELECT count(*) FROM t") == "102", 60,
                           "data on the rejoined member")
                wait_healthy(cluster, timeout=settle)
            finally:
                rep = getattr(request.node, "rep_call", None)
                if rep is None or rep.failed:
                    dump_logs(cluster)
    finally:
        server.close()
