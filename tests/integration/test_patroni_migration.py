"""Rolling migration of a running Patroni 4.1 cluster to pgha, one member at a time, under a
steady write load (issue 14).

A three-member Patroni cluster (etcd v3, PostgreSQL 15) is bootstrapped by Patroni from its
own YAML files; its agents are then replaced by ``pgha run`` on the SAME files and the same
data directories: the replicas first, then a switchover to a pgha member, then the old leader.
Throughout, a writer inserts a row every 50 ms into whichever member accepts writes and a
probe asks every member every 20 ms whether it accepts writes. Checked: no acknowledged write
is lost, no instant with two writable members, every replica streams from the leader of the
moment, Patroni's and pgha's REST APIs and ctls agree on the cluster while it is mixed, and a
failover works in both mixed directions (a pgha replica replaces a dead Patroni leader; a
Patroni replica replaces a dead pgha leader), with the way back (pgha -> Patroni) too.

The figures (the longest write gap of each step) are printed and written to
``benchmarks/results/migration.json`` (or the file ``PGHA_MIGRATION_RESULTS`` names);
``PGHA_KEEP_LOGS=<dir>`` keeps every node's log (both agents and PostgreSQL) there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.chaos.checkers import SplitBrainProbe, find_primary, lost_writes
from tests.support.cluster import (
    dump_logs,
    http_get,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)
from tests.support.etcd import EtcdServer, etcd_available
from tests.support.patroni import (
    Kind,
    MixedCluster,
    dynamic_defaults,
    listing,
    patroni_available,
    patronictl,
    pgha_cli,
    write_ctl_config,
)
from tests.support.writer import Writer

from pgha.cli.localcluster import MemberProc

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not patroni_available(), reason="Patroni 4.1 is not installed "
                       "(scripts/setup installs it into /opt/pgha/patroni-venv)"),
    pytest.mark.skipif(not etcd_available(), reason="etcd is not installed"),
]

# /work/wt/runtests runs a copy that is removed afterwards: PGHA_MIGRATION_RESULTS names a file
# that outlives it
RESULTS = Path(os.environ.get("PGHA_MIGRATION_RESULTS") or Path(__file__).resolve().parents[2]
               / "benchmarks" / "results" / "migration.json")


@dataclass
class Load:
    """The writer and the split-brain probe over every member, and the steps timed so far."""

    cluster: MixedCluster
    writer: Writer
    probe: SplitBrainProbe
    threads: list[threading.Thread]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, t0: float) -> dict[str, Any]:
        """Record step ``name`` that began at ``t0``: the longest gap between acknowledged
        writes from the last one before ``t0`` to now."""
        gap = gap_between(self.writer, t0, time.monotonic())
        entry = {"step": name, "longest_write_gap_s": None if gap is None else round(gap, 3)}
        self.steps.append(entry)
        print(f"step {name}: longest write gap {entry['longest_write_gap_s']} s")
        return entry

    def finish(self) -> dict[str, Any]:
        """Stop the load; check no acknowledged write lost and no two writable members."""
        time.sleep(1.0)
        self.writer.stop.set()
        self.probe.stop.set()
        for t in self.threads:
            t.join(15)
        members = list(self.cluster.procs.values())
        primary = wait_until(lambda: find_primary(members), 60, "one writable member")
        acked = [w for w in self.writer.writes if w.acked is not None]
        lost = lost_writes(primary, self.writer.writes)
        overlaps = self.probe.overlaps()
        summary = {"acknowledged": len(acked), "attempted": len(self.writer.writes),
                   "lost": len(lost), "two_writable_instants": len(overlaps),
                   "probe_samples": self.probe.samples, "steps": self.steps}
        assert acked, "the writer never got a write acknowledged"
        assert not lost, f"acknowledged writes lost: {[w.seq for w in lost][:20]}"
        assert not overlaps, f"two writable members at once: {overlaps[:5]}"
        assert self.probe.samples > 100
        return summary


def gap_between(writer: Writer, t0: float, t1: float) -> float | None:
    """Longest time between consecutive acknowledged writes in [t0, t1], counted from the last
    acknowledgement before ``t0``."""
    acked = sorted(w.acked for w in list(writer.writes) if w.acked is not None)
    before = [a for a in acked if a < t0]
    inside = [a for a in acked if t0 <= a <= t1]
    points = before[-1:] + inside
    if len(points) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(points))


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, etcd: EtcdServer, request: pytest.FixtureRequest
            ) -> Iterator[MixedCluster]:
    """A three-member Patroni 4.1 cluster, bootstrapped and cloned by Patroni, healthy, with
    the ``bench`` table."""
    hosts = [f"127.0.0.1:{etcd.client_port}"]
    dynamic = {**dynamic_defaults(), **getattr(request, "param", {})}
    c = MixedCluster(tmp_path / "c", scope="migr", members=3, first_pg_port=None,
                     first_api_port=None, etcd_port=None, dynamic=dynamic, etcd_hosts=hosts)
    with c:
        c.start("pg1")
        wait_until(lambda: primary_of(c), 120, "Patroni to bootstrap pg1")
        c.start_all(stagger=0.5)
        leader = wait_healthy(c, timeout=180)
        psql(leader, "CREATE TABLE bench (seq int PRIMARY KEY)")
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c, tail=120)
        keep = os.environ.get("PGHA_KEEP_LOGS")
        if keep:
            save_logs(c, Path(keep) / request.node.name)


def save_logs(cluster: MixedCluster, dest: Path) -> None:
    """Copy every member's agent log and PostgreSQL log folder to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for m in cluster.procs.values():
        shutil.copy(m.log_path, dest / f"{m.name}.log")


def start_load(cluster: MixedCluster) -> Load:
    members = list(cluster.procs.values())
    writer = Writer(members, interval=0.05)
    probe = SplitBrainProbe(members, interval=0.05)
    threads = [writer.run_in_thread(), probe.run_in_thread()]
    wait_until(lambda: any(w.acked for w in writer.writes), 30, "a first acknowledged write")
    return Load(cluster, writer, probe, threads)


def leader_name(cluster: MixedCluster) -> str:
    leader = wait_until(lambda: primary_of(cluster), 120, "one member answering /primary")
    return leader.name


def streaming_from(m: MemberProc, leader: MemberProc) -> bool:
    """``m``'s /patroni says it is a streaming replica and the leader's PostgreSQL has a
    walsender for it (application_name = member name)."""
    st = status(m)
    if st.get("role") != "replica" or st.get("replication_state") != "streaming":
        return False
    senders = psql(leader, "SELECT application_name FROM pg_stat_replication "
                           "WHERE state = 'streaming'").split()
    return m.name in senders


def wait_streaming(cluster: MixedCluster, timeout: float = 120.0) -> MemberProc:
    """Wait for one leader and every other member streaming from it; return the leader."""

    def check() -> MemberProc | None:
        leader = primary_of(cluster)
        if leader is None:
            return None
        others = [m for m in cluster.procs.values() if m is not leader]
        return leader if all(streaming_from(m, leader) for m in others) else None

    return wait_until(check, timeout, "every replica streaming from the leader")


def agent_of(m: MemberProc) -> str:
    """'patroni' or 'pgha', as the member's own REST API says."""
    version = str(status(m).get("patroni", {}).get("version", ""))
    return "patroni" if version.startswith("4.1") else "pgha"


def check_consistent(cluster: MixedCluster, ctl: Path) -> None:
    """Every member's /patroni names the same scope and sysid; every member's /cluster and
    both ctls list the three members with the same leader, replicas streaming on its
    timeline."""
    leader = wait_streaming(cluster)
    sysids = {str(status(m).get("database_system_identifier")) for m in cluster.procs.values()}
    assert len(sysids) == 1, sysids
    timeline = status(leader)["timeline"]
    for m in cluster.procs.values():
        assert status(m)["patroni"]["scope"] == "migr"
        code, body = http_get(f"{m.api}/cluster")
        assert code == 200, (m.name, code, body)
        roles = {x["name"]: x["role"] for x in body["members"]}
        assert roles[leader.name] == "leader", (m.name, agent_of(m), body)
        assert sorted(roles) == sorted(cluster.procs), (m.name, body)
    sync = cluster.dynamic.get("synchronous_mode", False)
    wait_until(lambda: ctls_agree(cluster, ctl, leader.name, timeline, sync), 60,
               "patronictl list and pgha list to show the cluster")


def ctls_agree(cluster: MixedCluster, ctl: Path, leader: str, timeline: int, sync: Any) -> bool:
    """Both ctls list every member, ``leader`` as Leader, the others streaming replicas on
    ``timeline`` (one of them a synchronous/quorum standby when ``sync``); raises naming the
    difference otherwise."""
    for which, result in (("patronictl", patronictl(ctl, "list", "migr", "-f", "json")),
                          ("pgha", pgha_cli(ctl, "list", "migr", "-f", "json"))):
        rows = listing(result)
        assert sorted(rows) == sorted(cluster.procs), (which, result.stdout)
        assert rows[leader]["Role"] == "Leader", (which, result.stdout)
        for name, row in rows.items():
            assert row["TL"] == timeline, (which, result.stdout)
            if name != leader:
                assert row["Role"] in ("Replica", "Sync Standby", "Quorum Standby"), (
                    which, result.stdout)
                assert row["State"] == "streaming", (which, result.stdout)
        if sync:
            assert any(r["Role"] in ("Sync Standby", "Quorum Standby") for r in rows.values()), (
                which, result.stdout)
    return True


def replace(load: Load, name: str, kind: Kind, keep_postgres: bool = False) -> None:
    cluster = load.cluster
    t0 = time.monotonic()
    cluster.replace(name, kind, keep_postgres=keep_postgres)
    wait_until(lambda: agent_of(cluster.procs[name]) == kind, 120, f"{name} run by {kind}")
    wait_streaming(cluster)
    how = "postgres kept running" if keep_postgres else "postgres stopped"
    load.step(f"{name} {cluster_kinds(cluster)} ({how})", t0)


def cluster_kinds(cluster: MixedCluster) -> str:
    return ",".join(f"{n}={cluster.kinds.get(n)}" for n in sorted(cluster.procs))


def switchover_target(cluster: MixedCluster, among: list[str]) -> str:
    """The first of ``among`` a switchover may go to: with ``synchronous_mode: on`` the
    leader's /cluster must name it the synchronous standby (Patroni's leader refuses any
    other candidate with 412)."""
    if cluster.dynamic.get("synchronous_mode") is not True:
        return among[0]

    def sync_standby() -> str | None:
        leader = primary_of(cluster)
        if leader is None:
            return None
        body = http_get(f"{leader.api}/cluster")[1]
        found = [x["name"] for x in body["members"]
                 if x["role"] == "sync_standby" and x["name"] in among]
        return found[0] if found else None

    return wait_until(sync_standby, 60, f"a synchronous standby among {among}")


def switchover_with_pgha(load: Load, ctl: Path, among: list[str]) -> str:
    """``pgha switchover`` (the migrating operator's new tool) to one of ``among``; returns
    the new leader."""
    cluster = load.cluster
    old = leader_name(cluster)
    candidate = switchover_target(cluster, among)
    t0 = time.monotonic()
    out = pgha_cli(ctl, "switchover", "migr", "--leader", old, "--candidate", candidate,
                   "--force", timeout=120)
    # like patronictl, a refused switchover prints "Switchover failed" and exits 0
    assert out.returncode == 0 and "failed" not in out.stdout, out.stdout + out.stderr
    wait_until(lambda: leader_name(cluster) == candidate, 120, f"{candidate} the leader")
    wait_streaming(cluster)
    load.step(f"switchover {old} -> {candidate} ({cluster_kinds(cluster)})", t0)
    return candidate


def save(name: str, summary: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            data = json.loads(RESULTS.read_text())
        except ValueError:
            data = {}
    data[name] = summary
    RESULTS.write_text(json.dumps(data, indent=2))
    print(json.dumps({name: summary}, indent=2))


@pytest.mark.parametrize("cluster", [{}, {"synchronous_mode": True},
                                     {"synchronous_mode": "quorum"}],
                         ids=["async", "sync", "quorum"], indirect=True)
def test_rolling_migration_from_patroni(cluster: MixedCluster, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    ctl = write_ctl_config(tmp_path / "ctl.yml", cluster.etcd_hosts)
    patroni_leader = leader_name(cluster)
    replicas = sorted(n for n in cluster.procs if n != patroni_leader)
    load = start_load(cluster)

    # 1. the replicas, one at a time: the first with Patroni's clean stop (PostgreSQL stopped,
    #    pgha starts it again), the second with Patroni killed alone (pgha adopts the running
    #    postmaster)
    replace(load, replicas[0], "pgha")
    check_consistent(cluster, ctl)
    replace(load, replicas[1], "pgha", keep_postgres=True)
    check_consistent(cluster, ctl)  # a Patroni leader, two pgha replicas

    # 2. the leader role moves to a pgha member
    switchover_with_pgha(load, ctl, replicas)
    check_consistent(cluster, ctl)  # a pgha leader, a Patroni replica (the old leader)

    # 3. the old leader, now a replica
    replace(load, patroni_leader, "pgha")
    check_consistent(cluster, ctl)
    assert all(agent_of(m) == "pgha" for m in cluster.procs.values())

    summary = load.finish()
    history = patronictl(ctl, "history", "migr", "-f", "json")
    assert history.returncode == 0, history.stderr
    save(f"rolling_migration[{request.node.callspec.id}]", summary)
    assert find_primary(list(cluster.procs.values())) is not None


def kill_leader_node(load: Load, expect_kind: Kind) -> str:
    """SIGKILL the leader's agent and postmaster together (node death); wait for a member run
    by ``expect_kind`` to take over and the survivors to stream from it. Returns the dead
    member's name."""
    cluster = load.cluster
    old = leader_name(cluster)
    t0 = time.monotonic()
    cluster.kill_node(old)

    def new_leader() -> str | None:
        found = primary_of(cluster)
        return found.name if found is not None and found.name != old else None

    new = wait_until(new_leader, 120, "a new leader after the node death")
    wait_until(lambda: any(w.member == new and w.started > t0 for w in list(load.writer.writes)),
               60, f"a write acknowledged by {new}")
    assert cluster.kinds[new] == expect_kind, (new, cluster_kinds(cluster))
    load.step(f"node death of {old} ({cluster_kinds(cluster)}), {new} took over", t0)
    return old


def rejoin(load: Load, name: str, kind: Kind) -> None:
    """Start ``kind`` on the dead node's data directory: it must rewind the former primary and
    stream from the new leader."""
    cluster = load.cluster
    t0 = time.monotonic()
    cluster.start_as(name, kind)
    wait_until(lambda: agent_of(cluster.procs[name]) == kind, 120, f"{name} run by {kind}")
    wait_streaming(cluster, timeout=180)
    load.step(f"{name} rejoined under {kind} ({cluster_kinds(cluster)})", t0)


def test_mixed_failover_pgha_replica_replaces_dead_patroni_leader(
        cluster: MixedCluster, tmp_path: Path) -> None:
    ctl = write_ctl_config(tmp_path / "ctl.yml", cluster.etcd_hosts)
    patroni_leader = leader_name(cluster)
    replicas = sorted(n for n in cluster.procs if n != patroni_leader)
    load = start_load(cluster)
    for name in replicas:
        replace(load, name, "pgha")
    check_consistent(cluster, ctl)

    dead = kill_leader_node(load, expect_kind="pgha")
    # the dead node comes back under Patroni: a pgha leader, a Patroni replica (rewound)
    rejoin(load, dead, "patroni")
    check_consistent(cluster, ctl)
    # and the migration is completed from there
    replace(load, dead, "pgha")
    check_consistent(cluster, ctl)
    save("mixed_failover_patroni_leader_dies", load.finish())


def test_mixed_failover_patroni_replica_replaces_dead_pgha_leader_and_way_back(
        cluster: MixedCluster, tmp_path: Path) -> None:
    ctl = write_ctl_config(tmp_path / "ctl.yml", cluster.etcd_hosts)
    patroni_leader = leader_name(cluster)
    first = sorted(n for n in cluster.procs if n != patroni_leader)[0]
    load = start_load(cluster)
    replace(load, first, "pgha")

    # patronictl (the operator's old tool) moves the leader role to the pgha member
    t0 = time.monotonic()
    out = patronictl(ctl, "switchover", "migr", "--leader", patroni_leader, "--candidate",
                     first, "--force", timeout=120)
    assert out.returncode == 0 and "failed" not in out.stdout, out.stdout + out.stderr
    wait_until(lambda: leader_name(cluster) == first, 120, f"{first} the leader")
    wait_streaming(cluster)
    load.step(f"patronictl switchover {patroni_leader} -> {first} ({cluster_kinds(cluster)})",
              t0)
    check_consistent(cluster, ctl)  # a pgha leader, two Patroni replicas

    dead = kill_leader_node(load, expect_kind="patroni")
    rejoin(load, dead, "pgha")  # a Patroni leader, a pgha replica (rewound)
    check_consistent(cluster, ctl)

    # the way back: the last pgha member is replaced by Patroni again
    replace(load, dead, "patroni")
    check_consistent(cluster, ctl)
    assert all(agent_of(m) == "patroni" for m in cluster.procs.values())
    save("mixed_failover_pgha_leader_dies_and_back", load.finish())
