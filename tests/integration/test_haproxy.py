"""End to end through HAProxy: the shipped configs/haproxy.cfg (addresses and ports swapped for
local ones, nothing else) in front of three real agents (synchronous_mode on, ttl 5 s).

A client writes through the primary port and another reads through the replica port, one new
connection per read, while the cluster goes through a switchover and then the death of the new
leader's node. Checked: writes go on after each event through the same address, to the new
leader, and no acknowledged write is lost; once HAProxy agrees with the cluster every read
through the replica port lands on a replica (``pg_is_in_recovery()``), spread over all of them.
The write gaps are printed, never asserted (benchmarks/haproxy.py records them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import running_cluster
from tests.support.haproxy import EXAMPLE, HAProxy, render_config
from tests.support.haproxy_campaign import run_campaign

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request, synchronous_mode=True) as c:
        yield c


def test_example_renders_for_local_members(tmp_path: Path) -> None:
    members = [MemberProc(f"pg{i}", tmp_path / "x", tmp_path / "d", 6000 + i, 7000 + i,
                          tmp_path / "l") for i in (1, 2, 3)]
    text = render_config(EXAMPLE.read_text(), members, 5100, 5101, 5102)
    assert "server pg2 127.0.0.1:6002 maxconn 100 check port 7002" in text
    assert text.count("check port 700") == 6
    assert "bind 127.0.0.1:5100" in text and "bind 127.0.0.1:5101" in text
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "10.0.0." not in active and "*:" not in active
    # a copy of the example without its server lines is refused, naming what is missing
    broken = EXAMPLE.read_text().replace("server pg3", "server db3")
    with pytest.raises(AssertionError, match="server pg3"):
        render_config(broken, members, 5100, 5101, 5102)


def test_writes_and_reads_through_haproxy_survive_switchover_and_node_death(
        cluster: LocalCluster, tmp_path: Path) -> None:
    with HAProxy(tmp_path / "haproxy", list(cluster.procs.values())) as proxy:
        try:
            campaign = run_campaign(cluster, proxy)
        except Exception:
            print(proxy.log_path.read_text(errors="replace")[-4000:])
            raise
    summary = {p.name: p.summary() for p in campaign.phases}
    print("haproxy campaign:", json.dumps(summary, indent=2))
    assert [p.name for p in campaign.phases] == ["switchover", "node_death"]
    assert campaign.acked, "no write was acknowledged through HAProxy"
    assert not campaign.lost, f"acknowledged writes missing on the primary: {campaign.lost}"
    port_of = {name: port for port, name in campaign.members_by_port.items()}
    alive = set(cluster.procs)
    for phase in campaign.phases:
        assert phase.new_leader != phase.old_leader
        # writes went on through the same address and reached the new leader
        assert phase.gap_s is not None and phase.acked_after > 0, phase.summary()
        if phase.name == "node_death":
            alive.discard(phase.old_leader)
        replicas = {port_of[n] for n in alive if n != phase.new_leader}
        assert all(r.in_recovery is True for r in phase.steady), phase.steady
        # roundrobin: every replica answered some of the reads
        assert {r.server_port for r in phase.steady} == replicas, phase.steady
