"""The DCS fails under a running cluster (DESIGN.md safety rules 1-3, issue: behaviour when the
DCS fails): the primary stops accepting writes before any other member could take the lock,
replicas keep serving reads and never promote, and once the store is back there is one leader
again. A probe checks every 20 ms that no two members accept writes.

Runs against every DCS server of ``tests/support/dcs_servers.py`` that can run here, and
against a three-member etcd cluster losing one member (no role change) and then its quorum.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from tests.support.writer import WritableProbe

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration


def _read_only(m: MemberProc) -> bool:
    return psql(m, "SELECT pg_is_in_recovery()", timeout=5) == "t"


@pytest.fixture
def probe_of() -> Iterator[list[WritableProbe]]:
    probes: list[WritableProbe] = []
    yield probes
    for p in probes:
        p.stop.set()


def _start_probe(cluster: LocalCluster, probes: list[WritableProbe]) -> WritableProbe:
    probe = WritableProbe(list(cluster.procs.values()))
    probes.append(probe)
    probe.run_in_thread()
    wait_until(lambda: probe.samples > 10, 10, "probe running")
    return probe


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_dcs_outage_demotes_to_read_only_and_recovers(
        server_name: str, tmp_path: Path, probe_of: list[WritableProbe],
        request: pytest.FixtureRequest) -> None:
    reason = available(server_name)
    if reason:
        pytest.skip(reason)
    server = SERVERS[server_name][0]()
    try:
        cluster = new_cluster(tmp_path / "c", dcs_section=server.config_section(),
                              **agent_timing(server_name))
        with cluster:
            cluster.start_all(stagger=0.3)
            try:
                old = wait_healthy(cluster, timeout=180)
                probe = _start_probe(cluster, probe_of)
                server.stop()
                ttl = agent_timing(server_name)["ttl"]
                wait_until(lambda: _read_only(old), ttl + 15, "the primary read-only")
                time.sleep(2)
                for m in cluster.procs.values():
                    assert _read_only(m), f"{m.name} accepts writes with the DCS down"
                    assert status(m)["state"] == "running"
                server.start()
                wait_healthy(cluster, timeout=ttl * 3 + 60)
                assert primary_of(cluster) is not None
                probe.stop.set()
                time.sleep(0.2)
                assert probe.overlaps == [], probe.overlaps[:5]
            finally:
                rep = getattr(request.node, "rep_call", None)
                if rep is None or rep.failed:
                    dump_logs(cluster)
    finally:
        server.close()


def test_etcd_member_loss_changes_nothing_and_quorum_loss_demotes(
        tmp_path: Path, probe_of: list[WritableProbe], request: pytest.FixtureRequest) -> None:
    from tests.support.etcd import EtcdCluster, etcd_available

    if not etcd_available():
        pytest.skip("etcd is not installed")
    with EtcdCluster(3) as etcd:
        hosts = [f"{h}:{p}" for h, p in etcd.endpoints]
        cluster = new_cluster(tmp_path / "c", dcs_section={"etcd3": {"hosts": hosts}})
        with cluster:
            cluster.start_all(stagger=0.3)
            try:
                leader = wait_healthy(cluster, timeout=180)
                probe = _start_probe(cluster, probe_of)
                roles = {n: status(m)["role"] for n, m in cluster.procs.items()}
                etcd.members[0].kill()
                time.sleep(12)  # > 2 * ttl: long enough for any wrong role change
                assert primary_of(cluster) is leader
                assert {n: status(m)["role"] for n, m in cluster.procs.items()} == roles
                assert all(status(m)["timeline"] == 1 for m in cluster.procs.values())
                etcd.members[1].kill()  # quorum lost
                wait_until(lambda: _read_only(leader), 20, "the primary read-only")
                etcd.members[0].start()
                etcd.members[1].start()
                wait_healthy(cluster, timeout=120)
                probe.stop.set()
                time.sleep(0.2)
                assert probe.overlaps == [], probe.overlaps[:5]
            finally:
                rep = getattr(request.node, "rep_call", None)
                if rep is None or rep.failed:
                    dump_logs(cluster)
