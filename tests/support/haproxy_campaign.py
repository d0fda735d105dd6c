"""One campaign through HAProxy, shared by tests/integration/test_haproxy.py and
benchmarks/haproxy.py: a client writes through the primary port and another reads through the
replica port while the cluster goes through a switchover and then the death of the new
leader's node. Returns what happened; the caller decides what to assert or record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pgha.cli.localcluster import LocalCluster, MemberProc
from tests.support.cluster import call, new_primary, psql, wait_healthy, wait_until
from tests.support.haproxy import EndpointReader, EndpointWriter, HAProxy, Read, reads_through

STEADY_READS = 12  # reads on fresh connections once HAProxy agrees with the cluster
SETTLE = 2.0  # seconds of load before an event and after HAProxy has converged


@dataclass
class Phase:
    """One event: ``gap_s`` is the longest time between two acknowledged writes from the
    event until the next one; ``steady`` the reads made once HAProxy agreed with the cluster."""

    name: str
    old_leader: str
    new_leader: str
    started: float
    converged_after_s: float = 0.0
    gap_s: float | None = None
    acked_after: int = 0  # writes acknowledged by the new leader after the event
    stray_reads: int = 0  # reads through the replica port that landed on a primary
    failed_reads: int = 0
    steady: list[Read] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"old_leader": self.old_leader, "new_leader": self.new_leader,
                "write_gap_s": None if self.gap_s is None else round(self.gap_s, 3),
                "haproxy_converged_after_s": round(self.converged_after_s, 3),
                "writes_acked_after": self.acked_after,
                "reads_on_primary_during_event": self.stray_reads,
                "failed_reads_during_event": self.failed_reads}


@dataclass
class Campaign:
    phases: list[Phase]
    acked: set[int]
    committed: set[int]  # rows on the final primary
    members_by_port: dict[int, str]

    @property
    def lost(self) -> set[int]:
        return self.acked - self.committed


def converged(cluster: LocalCluster, haproxy: HAProxy, leader: MemberProc) -> bool:
    """HAProxy has exactly ``leader`` UP for writes and exactly the other live members UP for
    reads."""
    replicas = {m.name for m in cluster.procs.values() if m.alive and m is not leader}
    return haproxy.up() == {"primary": {leader.name}, "replicas": replicas}


def _wait_converged(cluster: LocalCluster, haproxy: HAProxy, leader: MemberProc) -> None:
    wait_until(lambda: converged(cluster, haproxy, leader), 60,
               f"HAProxy: {leader.name} the only primary, the other live members replicas")


def _switchover(cluster: LocalCluster, haproxy: HAProxy, leader: MemberProc) -> MemberProc:
    code, body = call(leader, "POST", "/switchover", {"leader": leader.name})
    assert code == 200, (code, body)
    new = new_primary(cluster, leader, 60, "a new primary after the switchover")
    wait_healthy(cluster)
    return new


def _node_death(cluster: LocalCluster, haproxy: HAProxy, leader: MemberProc) -> MemberProc:
    cluster.kill_node(leader.name)
    new = new_primary(cluster, leader, 90, "a new primary after the node death")
    wait_healthy(cluster)
    return new


def run_campaign(cluster: LocalCluster, haproxy: HAProxy) -> Campaign:
    """Switchover, then node death of the new leader, under load through ``haproxy``. The
    cluster must be started; table ``bench`` is created here."""
    leader = wait_healthy(cluster)
    psql(leader, "CREATE TABLE bench (seq bigint PRIMARY KEY)")
    _wait_converged(cluster, haproxy, leader)
    by_port = {m.pg_port: m.name for m in cluster.procs.values()}
    writer = EndpointWriter(haproxy.primary_port)
    reader = EndpointReader(haproxy.replica_port)
    threads = [writer.run_in_thread(), reader.run_in_thread()]
    phases: list[Phase] = []
    try:
        wait_until(lambda: len(writer.acked()) > 10, 30, "writes through HAProxy")
        time.sleep(SETTLE)
        for name, event in (("switchover", _switchover), ("node_death", _node_death)):
            phase = Phase(name, leader.name, "", time.monotonic())
            new = event(cluster, haproxy, leader)
            _wait_converged(cluster, haproxy, new)
            phase.new_leader = new.name
            phase.converged_after_s = time.monotonic() - phase.started
            phase.steady = reads_through(haproxy.replica_port, STEADY_READS)
            time.sleep(SETTLE)
            phases.append(phase)
            leader = new
    finally:
        writer.stop.set()
        reader.stop.set()
        for t in threads:
            t.join(30)
    ends = [p.started for p in phases[1:]] + [time.monotonic()]
    for phase, end in zip(phases, ends, strict=True):
        phase.gap_s = writer.longest_gap(phase.started, end)
        new_port = next(p for p, n in by_port.items() if n == phase.new_leader)
        phase.acked_after = sum(1 for w in writer.writes if w.acked is not None
                                and phase.started <= w.started < end
                                and w.server_port == new_port)
        during = [r for r in reader.reads if phase.started <= r.at < end]
        phase.stray_reads = sum(1 for r in during if r.in_recovery is False)
        phase.failed_reads = sum(1 for r in during if r.in_recovery is None)
    rows = psql(leader, "SELECT seq FROM bench").split()
    return Campaign(phases, writer.acked(), {int(x) for x in rows}, by_port)
