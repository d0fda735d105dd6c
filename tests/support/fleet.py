"""A fleet: ``n`` three-member clusters of one agent kind (pgha from this checkout, or
Patroni 4.1) with real PostgreSQL, all on ONE etcd started with ``--metrics extensive``.

Each cluster is a :class:`~tests.support.patroni.MixedCluster` (one Patroni-format YAML per
member, read by either agent) with small PostgreSQL settings so that many fit on a small host.
:meth:`Fleet.idle_window` measures the agents (RSS, threads, CPU; agent processes only,
PostgreSQL excluded) and etcd (calls per gRPC method, CPU, unary p99) over an idle window;
:meth:`Fleet.node_death_failover` kills one cluster's leader (agent and postmaster) and times
until another member accepts a write. Everything is stopped on leaving the ``with`` block.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pgha.cli.localcluster import MemberProc
from tests.support.cluster import PG_BIN, primary_of, wait_healthy, wait_until
from tests.support.etcd import EtcdServer
from tests.support.footprint import (
    grpc_calls,
    grpc_messages,
    grpc_messages_sent,
    proc_sample,
    scrape_etcd,
    unary_p99,
)
from tests.support.patroni import Kind, MixedCluster

SMALL_PG = {"max_connections": 25, "shared_buffers": "16MB", "wal_keep_size": "32MB",
            "max_wal_senders": 5, "max_replication_slots": 5, "max_worker_processes": 4}


class Fleet:
    def __init__(self, base: Path, clusters: int, kind: Kind, dynamic: dict[str, Any]) -> None:
        self.base = base
        self.kind = kind
        self.etcd = EtcdServer(base_dir=str(base / "etcd"), extra_args=("--metrics", "extensive"))
        (base / "etcd").mkdir(parents=True, exist_ok=True)
        dyn = {**dynamic, "postgresql": {"parameters": dict(SMALL_PG)}}
        hosts = [f"127.0.0.1:{self.etcd.client_port}"]
        self.clusters = [
            MixedCluster(base / f"c{i}", scope=f"bench{i}", members=3, first_pg_port=None,
                         first_api_port=None, etcd_port=None, dynamic=dyn, etcd_hosts=hosts)
            for i in range(clusters)
        ]
        for c in self.clusters:
            c.kinds = {f"pg{j}": kind for j in range(1, 4)}

    def __enter__(self) -> Self:
        self.etcd.start()
        for c in self.clusters:
            c.prepare()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for c in self.clusters:
            with contextlib.suppress(Exception):
                c.stop_all()
        self.etcd.stop()

    def start(self, timeout: float = 300.0) -> None:
        """Bootstrap every cluster (first member, then the others) and wait until each has a
        primary and streaming replicas."""
        for c in self.clusters:
            c.start("pg1")
        for c in self.clusters:
            wait_until(functools.partial(primary_of, c), timeout, f"{c.scope} to bootstrap")
            c.start_all(stagger=0.3)
        for c in self.clusters:
            wait_healthy(c, timeout=timeout)

    def members(self) -> list[tuple[str, MemberProc]]:
        return [(f"{c.scope}/{n}", m) for c in self.clusters for n, m in c.procs.items()
                if m.alive]

    def idle_window(self, seconds: float) -> dict[str, Any]:
        """Sample agents and etcd, sleep ``seconds``, sample again; the figures per member."""
        members = self.members()
        assert self.etcd.proc is not None
        etcd_pid = self.etcd.proc.pid
        before = {k: proc_sample(m.proc.pid) for k, m in members if m.proc is not None}
        etcd0 = proc_sample(etcd_pid)
        m0 = scrape_etcd(self.etcd.client_url)
        t0 = time.monotonic()
        time.sleep(seconds)
        m1 = scrape_etcd(self.etcd.client_url)
        elapsed = time.monotonic() - t0
        etcd1 = proc_sample(etcd_pid)
        after = {k: proc_sample(m.proc.pid) for k, m in members if m.proc is not None}
        per_min = 60.0 / elapsed
        agents = {k: {"rss_mib": after[k].rss_mib, "threads": after[k].threads,
                      "cpu_s": round(after[k].cpu_s - before[k].cpu_s, 3)} for k in after}
        calls = grpc_calls(m0, m1)
        n = len(agents)
        return {
            "window_s": round(elapsed, 2),
            "members": n,
            "agents": agents,
            "etcd": {
                "calls_by_method": calls,
                "stream_messages_by_method": grpc_messages(m0, m1),
                "messages_sent_by_method": grpc_messages_sent(m0, m1),
                "calls_per_member_per_min": round(sum(calls.values()) / n * per_min, 2),
                "calls_per_member_per_min_by_method": {
                    k: round(v / n * per_min, 2) for k, v in calls.items()},
                "cpu_s_per_min": round((etcd1.cpu_s - etcd0.cpu_s) * per_min, 3),
                "rss_mib": etcd1.rss_mib,
                "unary_p99_s": unary_p99(m0, m1),
            },
        }

    def node_death_failover(self, index: int = 0, timeout: float = 120.0) -> dict[str, Any]:
        """SIGKILL cluster ``index``'s leader agent and postmaster; seconds until another
        member runs a write (``SELECT txid_current()``)."""
        c = self.clusters[index]
        leader = primary_of(c)
        assert leader is not None, f"{c.scope} has no primary"
        t0 = time.monotonic()
        c.kill_node(leader.name)
        others = [m for m in c.procs.values() if m is not leader]

        def writable() -> MemberProc | None:
            for m in others:
                if _accepts_write(m):
                    return m
            return None

        new = wait_until(writable, timeout, f"a new primary in {c.scope}", interval=0.1)
        return {"cluster": c.scope, "old_leader": leader.name, "new_leader": new.name,
                "failover_s": round(time.monotonic() - t0, 2)}


def _accepts_write(m: MemberProc) -> bool:
    out = subprocess.run(
        [str(PG_BIN / "psql"), "-h", str(m.data_dir.parent), "-p", str(m.pg_port), "-U",
         "postgres", "-d", "postgres", "-XAtq", "-c", "SELECT txid_current()"],
        capture_output=True, text=True, timeout=5, check=False)
    return out.returncode == 0
