"""The leader's agent dies (SIGKILL) or hangs (SIGSTOP) while its PostgreSQL runs on as a
writable primary: its leader and member keys expire with its session, but nobody may promote
beside a server that still takes writes (found by the chaos campaign: before the fix a replica
promoted one ttl after the kill and both accepted writes until the agent came back).

The replicas ask the last leader's PostgreSQL directly when its agent does not answer
(``race_refused_primary_running``); a probe checks every 20 ms that no two members accept
writes. When the agent comes back it takes the lock again with the same timeline; when the
agent stays away and its PostgreSQL dies, a replica takes over.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import (
    http_get,
    is_primary,
    psql,
    running_cluster,
    wait_healthy,
    wait_until,
)
from tests.support.writer import WritableProbe, Writer

from pgha.cli.localcluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request) as c:
        yield c


def _leader_key(cluster: LocalCluster) -> str | None:
    """The leader named in the DCS, as any answering member's ``GET /cluster`` shows it."""
    for m in cluster.procs.values():
        try:
            code, body = http_get(f"{m.api}/cluster", timeout=1.0)
        except OSError:
            continue
        if code == 200 and isinstance(body, dict):
            return next((x["name"] for x in body.get("members", [])
                         if x.get("role") == "leader"), None)
    raise AssertionError("no member answered GET /cluster")


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_no_promotion_beside_a_primary_whose_agent_is_silent(cluster: LocalCluster,
                                                             fault: str) -> None:
    old = wait_healthy(cluster)
    psql(old, "CREATE TABLE bench (seq int PRIMARY KEY)")
    tl = psql(old, "SELECT timeline_id FROM pg_control_checkpoint()")
    probe = WritableProbe(list(cluster.procs.values()))
    writer = Writer(list(cluster.procs.values()))
    threads = [probe.run_in_thread(), writer.run_in_thread()]
    others = [m for m in cluster.procs.values() if m is not old]
    try:
        wait_until(lambda: probe.samples > 20, 10, "probe running")
        assert old.proc is not None
        if fault == "kill":
            cluster.kill_agent(old.name)
        else:
            os.kill(old.proc.pid, signal.SIGSTOP)
        time.sleep(15)  # 3 * ttl: the keys expired long ago; the replicas keep refusing
        assert not [m.name for m in others if is_primary(m)]
        assert _leader_key(cluster) is None
        assert psql(old, "SELECT pg_is_in_recovery()") == "f"
        logs = "".join(m.log_path.read_text() for m in others)
        assert "race_refused_primary_running" in logs
        assert "its agent does not answer" in logs
        recent = [w for w in writer.writes if w.started > time.monotonic() - 3]
        assert recent and all(w.member == old.name for w in recent if w.acked)
        if fault == "kill":
            cluster.start(old.name)
            wait_until(lambda: _leader_key(cluster) == old.name, 30, "the old leader back")
            assert psql(old, "SELECT timeline_id FROM pg_control_checkpoint()") == tl
        else:
            os.kill(old.proc.pid, signal.SIGCONT)
        wait_healthy(cluster)
        # with the agent gone for good, a dead PostgreSQL lets a replica take over
        leader = wait_healthy(cluster)
        cluster.kill_agent(leader.name)
        wait_until(lambda: _leader_key(cluster) is None, 20, "the leader key expired")
        cluster.kill_postmaster(leader.name)
        wait_until(lambda: any(is_primary(m) for m in cluster.procs.values()
                               if m is not leader), 40, "a replica promoted")
    finally:
        probe.stop.set()
        writer.stop.set()
        for t in threads:
            t.join(10)
    assert probe.overlaps == [], f"two writable primaries at once: {probe.overlaps[:5]}"


def test_an_agent_restarted_after_the_leader_keys_expired_does_not_promote(
        cluster: LocalCluster) -> None:
    """The leader's agent dies; once its keys have expired, both replicas' agents are killed
    and started again: they never saw that leader, yet find its server (through the
    ``status`` key and their replicas' upstream) and stay out of the race (found by the
    simulation once it modelled agent-only deaths)."""
    old = wait_healthy(cluster)
    probe = WritableProbe(list(cluster.procs.values()))
    thread = probe.run_in_thread()
    others = [m for m in cluster.procs.values() if m is not old]
    try:
        wait_until(lambda: probe.samples > 20, 10, "probe running")
        cluster.kill_agent(old.name)
        wait_until(lambda: _leader_key(cluster) is None, 20, "the leader key expired")
        sizes = {}
        for m in others:
            cluster.kill_agent(m.name)
            sizes[m.name] = m.log_path.stat().st_size
            cluster.start(m.name)
        time.sleep(12)  # several of the restarted agents' races
        assert not [m.name for m in others if is_primary(m)]
        assert psql(old, "SELECT pg_is_in_recovery()") == "f"
        for m in others:
            with m.log_path.open() as f:
                f.seek(sizes[m.name])
                assert "race_refused_primary_running" in f.read(), m.name
    finally:
        probe.stop.set()
        thread.join(10)
    assert probe.overlaps == [], f"two writable primaries at once: {probe.overlaps[:5]}"
