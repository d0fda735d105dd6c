"""A three-server ZooKeeper ensemble loses members (issue 3: losing one member of the ensemble
does not disturb pgha; losing its quorum demotes the primary before anyone could take over).

The store alone: a client whose server is killed or frozen, or whose ensemble loses its
leader, moves to another server and keeps its session (its ephemeral leader key stays).

A three-member cluster on the ensemble, with a probe checking every 20 ms that no two members
accept writes:

1. The ZooKeeper server the leader agent is connected to is killed: the agent's client moves to
   another server within its session timeout; the primary stays writable throughout, no role
   or timeline changes.
2. It is restarted, then the ensemble's current leader is killed (a ZooKeeper leader election
   under the cluster): again nothing changes.
3. A second server is killed (quorum lost): the primary becomes read-only, no member promotes.
4. Both are restarted: exactly one primary again, with streaming replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import (
    dump_logs,
    is_primary,
    new_cluster,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)
from tests.support.writer import WritableProbe
from tests.support.zookeeper import ZooKeeperEnsemble, zookeeper_unavailable

from pgha.cli.localcluster import LocalCluster, MemberProc
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.dcs.zookeeper import ZooKeeperStore

pytestmark = pytest.mark.integration

TTL = 5.0
QUIET = 12.0  # > 2 * ttl: long enough for any wrong role change to happen


@pytest.mark.parametrize("fault", ["kill-own-server", "freeze-own-server", "kill-zk-leader"])
async def test_client_moves_to_another_server_and_keeps_its_session(fault: str) -> None:
    """The fault hits the server the client is connected to (SIGKILL, or SIGSTOP: connections
    stay open and silent) or the ensemble's leader. Keep-alives every 0.25 s (as an agent's)
    must carry the session over to another server: same session, leader key still ours."""
    reason = zookeeper_unavailable()
    if reason:
        pytest.skip(reason)
    async with ZooKeeperEnsemble(3) as zk:
        kv = ZooKeeperStore(zk.hosts, ttl=TTL, timeout=1.0)
        store = ClusterStore(kv, "/service/", "ens", "a")
        frozen: int | None = None
        try:
            await kv.connect()
            await kv.keepalive()
            assert await store.acquire_leader()
            session = kv.session_id
            own = await asyncio.to_thread(zk.server_of, os.getpid())
            assert own is not None
            victim = own if fault != "kill-zk-leader" else await asyncio.to_thread(zk.leader)
            assert victim is not None
            proc = zk.members[victim].proc
            assert proc is not None
            if fault.startswith("freeze"):
                proc.send_signal(signal.SIGSTOP)
                frozen = victim
            else:
                zk.members[victim].kill()
            last_ok, longest, failures = time.monotonic(), 0.0, 0
            end = last_ok + 3 * kv.session_ttl
            while time.monotonic() < end:
                sent = time.monotonic()
                try:
                    await kv.keepalive()  # SessionExpired fails the test
                except DCSError:
                    failures += 1
                else:
                    longest, last_ok = max(longest, sent - last_ok), sent
                await asyncio.sleep(0.25)
            print(f"\n{fault}: {failures} keep-alives failed; longest gap between successful "
                  f"ones {longest:.2f}s (session {kv.session_ttl:.2f}s)")
            assert kv.session_id == session
            view = await store.load()
            assert view.leader is not None and view.leader.name == "a"
            now_on = await asyncio.to_thread(zk.server_of, os.getpid())
            assert now_on is not None and now_on != victim
        finally:
            stopped = None if frozen is None else zk.members[frozen].proc
            if stopped is not None:
                with contextlib.suppress(ProcessLookupError):
                    stopped.send_signal(signal.SIGCONT)
            await kv.close()


def _read_only(m: MemberProc) -> bool:
    return psql(m, "SELECT pg_is_in_recovery()", timeout=5) == "t"


def _roles(cluster: LocalCluster) -> dict[str, tuple[str, int]]:
    return {n: (status(m)["role"], status(m)["timeline"]) for n, m in cluster.procs.items()}


def _agent_server(zk: ZooKeeperEnsemble, m: MemberProc) -> int:
    """Index of the ensemble member the agent ``m`` is a client of (waits for one)."""
    assert m.proc is not None
    pid = m.proc.pid
    found = wait_until(lambda: [i for i in [zk.server_of(pid)] if i is not None], 10,
                       f"{m.name}'s ZooKeeper connection")
    return found[0]


def _stays_primary(leader: MemberProc, seconds: float) -> list[str]:
    """Watch ``leader`` for ``seconds``; every moment it was not a writable primary."""
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _read_only(leader):
            problems.append(f"{time.monotonic():.2f}: read-only")
        elif not is_primary(leader):
            problems.append(f"{time.monotonic():.2f}: /primary not 200")
        time.sleep(0.2)
    return problems


@pytest.fixture
def probes() -> Iterator[list[WritableProbe]]:
    started: list[WritableProbe] = []
    yield started
    for p in started:
        p.stop.set()


def test_zookeeper_server_loss_changes_nothing_and_quorum_loss_demotes(
        tmp_path: Path, probes: list[WritableProbe], request: pytest.FixtureRequest) -> None:
    reason = zookeeper_unavailable()
    if reason:
        pytest.skip(reason)
    with ZooKeeperEnsemble(3) as zk:
        hosts = [f"{h}:{p}" for h, p in zk.hosts]
        cluster = new_cluster(tmp_path / "c", dcs_section={"zookeeper": {"hosts": hosts}},
                              ttl=TTL, loop_wait=1, retry_timeout=1)
        with cluster:
            cluster.start_all(stagger=0.3)
            try:
                leader = wait_healthy(cluster, timeout=180)
                probe = WritableProbe(list(cluster.procs.values()))
                probes.append(probe)
                probe.run_in_thread()
                wait_until(lambda: probe.samples > 10, 10, "probe running")
                before = _roles(cluster)

                # 1. the server the leader agent talks to
                victim = _agent_server(zk, leader)
                print(f"\nleader agent {leader.name} on zk{victim + 1}; "
                      f"ZooKeeper leader zk{(zk.leader() or 0) + 1}")
                zk.members[victim].kill()
                assert _stays_primary(leader, QUIET) == []
                assert primary_of(cluster) is leader
                assert _roles(cluster) == before
                assert _agent_server(zk, leader) != victim

                # 2. the ZooKeeper leader (an election under the cluster)
                zk.members[victim].start()
                zk_leader = wait_until(lambda: [i for i in [zk.leader()] if i is not None], 30,
                                       "a ZooKeeper leader")[0]
                print(f"leader agent on zk{_agent_server(zk, leader) + 1}; "
                      f"killing ZooKeeper leader zk{zk_leader + 1}")
                zk.members[zk_leader].kill()
                assert _stays_primary(leader, QUIET) == []
                assert primary_of(cluster) is leader
                assert _roles(cluster) == before

                # 3. a second server: quorum lost
                second = next(i for i, m in enumerate(zk.members) if m.running)
                zk.members[second].kill()
                wait_until(lambda: _read_only(leader), TTL + 10, "the primary read-only")
                time.sleep(2)
                for m in cluster.procs.values():
                    assert _read_only(m), f"{m.name} accepts writes without a ZooKeeper quorum"

                # 4. quorum back
                zk.members[zk_leader].start(wait=False)
                zk.members[second].start(wait=False)
                for server in zk.members:
                    server.wait_ready()
                wait_healthy(cluster, timeout=120)
                probe.stop.set()
                time.sleep(0.2)
                assert probe.overlaps == [], probe.overlaps[:5]
            finally:
                rep = getattr(request.node, "rep_call", None)
                if rep is None or rep.failed:
                    dump_logs(cluster)
