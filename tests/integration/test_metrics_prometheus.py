"""A real Prometheus scraping ``/metrics`` of a live cluster (real agents, PostgreSQL 15, etcd).

The test runs its own ``/usr/bin/prometheus`` (Debian package ``prometheus``) on a free port
with a temporary storage directory and a 1 s scrape interval, and queries its HTTP API the way a
dashboard or an alert rule would. Every process it starts is stopped at the end. Waits only
bound how long the test may take; nothing is timed.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import running_cluster, wait_healthy, wait_until
from tests.support.prom import PATRONI_COUNTER_LINTS, PrometheusServer, parse, promtool_problems

from pgha.cli.localcluster import LocalCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                       reason="prometheus/promtool are not installed (Debian package "
                              "prometheus; scripts/setup installs it)"),
]

SCOPE = "demo"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request, members=2) as c:
        yield c


def scrape(api: str) -> str:
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body: bytes = resp.read()
    return body.decode()


def test_prometheus_scrapes_one_primary_pgha_metrics_and_a_failover(
        cluster: LocalCluster, tmp_path: Path) -> None:
    leader = wait_healthy(cluster)
    members = sorted(cluster.procs)
    targets = [f"127.0.0.1:{m.api_port}" for m in cluster.procs.values()]

    # what the agents serve is valid exposition text, even for promtool's linter
    for m in cluster.procs.values():
        text = scrape(m.api)
        assert set(promtool_problems(text)) <= PATRONI_COUNTER_LINTS
        doc = parse(text)
        assert doc.value("patroni_primary") == (1 if m is leader else 0)
        assert doc.value("pgha_dcs_request_duration_seconds_count", operation="get_prefix") > 0
        # the cluster's maximum_lag_on_failover (the demo cluster's dynamic configuration)
        assert doc.value("pgha_maximum_lag_on_failover_bytes") == 1048576

    # the leader holds a lease with time left on it; a replica reports 0
    wait_until(lambda: parse(scrape(leader.api)).value("pgha_leader_lease_seconds_left") > 0,
               30, "seconds left on the leader's lease")
    for m in cluster.procs.values():
        if m is not leader:
            assert parse(scrape(m.api)).value("pgha_leader_lease_seconds_left") == 0

    with PrometheusServer(tmp_path / "prometheus", targets, interval=1.0) as prom:
        prom.wait_ready()
        try:
            wait_until(lambda: prom.scalar('count(up{job="pgha"} == 1)') == len(members),
                       60, "Prometheus scraping every member")
            wait_until(
                lambda: prom.scalar(f'count(patroni_primary{{scope="{SCOPE}"}})') == len(members),
                60, "patroni_primary stored for every member")
            total = prom.scalar(f'sum(patroni_primary{{scope="{SCOPE}"}})')
            assert total == 1
            primaries = prom.query(f'patroni_primary{{scope="{SCOPE}"}} == 1')
            assert [r["metric"]["name"] for r in primaries] == [leader.name]
            replicas = prom.query(f'patroni_replica{{scope="{SCOPE}"}} == 1')
            assert sorted(r["metric"]["name"] for r in replicas) == \
                [n for n in members if n != leader.name]

            cycles = prom.query(f'pgha_decision_loop_duration_seconds_count{{scope="{SCOPE}"}} > 0')
            assert sorted(r["metric"]["name"] for r in cycles) == members
            quantile = prom.scalar(
                'histogram_quantile(0.5, sum by (le) '
                f'(pgha_decision_loop_duration_seconds_bucket{{scope="{SCOPE}"}}))')
            assert quantile is not None and quantile >= 0
            streaming = prom.scalar(f'sum(patroni_postgres_streaming{{scope="{SCOPE}"}})')
            assert streaming == len(members) - 1
            assert prom.scalar(f'sum(pgha_promotions_total{{scope="{SCOPE}"}})') == 0

            # the leader's node dies: the survivor's promotion is counted as a failover
            cluster.kill_node(leader.name)
            survivor = next(m for m in cluster.procs.values() if m is not leader)
            wait_until(
                lambda: prom.scalar(
                    f'patroni_primary{{scope="{SCOPE}",name="{survivor.name}"}}') == 1,
                90, "Prometheus seeing the survivor as primary")
            query = f'{{__name__=~"pgha_(promotions|failovers|demotions)_total",' \
                    f'scope="{SCOPE}",name="{survivor.name}"}}'
            wait_until(lambda: len(prom.query(query)) == 3 and prom.scalar(
                f'pgha_failovers_total{{scope="{SCOPE}",name="{survivor.name}"}}') == 1,
                30, "the failover counted")
            counts = {r["metric"]["__name__"]: float(r["value"][1]) for r in prom.query(query)}
            assert counts == {"pgha_promotions_total": 1, "pgha_failovers_total": 1,
                              "pgha_demotions_total": 0}
        except BaseException:
            print(prom.log())
            raise
