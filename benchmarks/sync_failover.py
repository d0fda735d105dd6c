"""Synchronous replication failover benchmark: the leader's node dies (agent, postmaster and
every PostgreSQL child SIGKILLed at once) under a steady write load, with
``synchronous_mode`` off, on and quorum, on a fresh local cluster (real PostgreSQL, one etcd)
per run.

Several writers (threads, one asyncpg connection per member each) insert sequence-tagged rows
into whichever member accepts writes; a write counts as acknowledged when its COMMIT returned
(``synchronous_commit`` is PostgreSQL's default ``on``: with synchronous standbys named, the
commit waits for their flush). Per run it records:
  * ``acked``: acknowledged writes; ``lost``: acknowledged rows missing on the primary once the
    cluster has settled (2 s after the first write acknowledged by the new primary);
  * ``failover_s``: seconds from the kill to the first write acknowledged by another member;
  * the winner, and whether the ``sync`` key named it a synchronous standby (``on``) or a voter
    (``quorum``) when the leader died; the key, ``synchronous_standby_names`` and
    ``pg_stat_replication`` at the kill, and every change of the ``leader`` and ``sync`` keys
    (sampled every 0.1 s) with its time relative to the kill.
The runs of the modes are interleaved (run i of every mode, then run i + 1), with the same
seeded fault phase within the lease keep-alive period for run i of each mode, so that load from
other processes on the machine falls on all modes alike. Timings are reported, never asserted.

Exit status: 1 when a run with ``synchronous_mode`` on or quorum lost an acknowledged write (a
correctness failure: the promise of synchronous replication is broken), else 0 - also when a
failover did not complete (reported in the table and the JSON).

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/sync_failover.py --ttl 20 \\
        --loop-wait 2 --retry-timeout 3 --repeat 20
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import (
    ROOT,
    machine,
    psql_rows,
    save_logs,
    start_bench_cluster,
    timing_of,
    timing_parser,
)
from tests.support.cluster import Timeout as WaitTimeout
from tests.support.cluster import new_cluster, primary_of, psql, wait_until
from tests.support.writer import Writer

from pgha.cli.localcluster import LocalCluster, MemberProc
from pgha.dcs.codec import sync_from_json

MODES = ("off", "on", "quorum")


def etcd_get(endpoint: str, key: str) -> Any:
    """The value of ``key`` through etcd's v3 JSON gateway (JSON-decoded when it is JSON);
    None when absent. Raises OSError or ValueError when etcd does not answer."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    req = urllib.request.Request(f"{url}/v3/kv/range", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=2) as resp:
        kvs = json.loads(resp.read()).get("kvs") or []
    if not kvs:
        return None
    raw = base64.b64decode(kvs[0]["value"]).decode()
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class KeySampler:
    """Reads the cluster's ``leader`` and ``sync`` keys every ``interval`` seconds in a thread
    and records each change as ``(monotonic time, key, value)``; a failed read is skipped."""

    def __init__(self, cluster: LocalCluster, interval: float = 0.1) -> None:
        assert cluster.etcd is not None
        self.endpoint = cluster.etcd.endpoint
        self.prefix = f"/service/{cluster.scope}/"
        self.interval = interval
        self.changes: list[tuple[float, str, Any]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KeySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: dict[str, Any] = {}
        while not self.stop.is_set():
            for key in ("leader", "sync"):
                try:
                    value = etcd_get(self.endpoint, self.prefix + key)
                except (OSError, ValueError):
                    continue
                if key not in last or last[key] != value:
                    last[key] = value
                    self.changes.append((time.monotonic(), key, value))
            self.stop.wait(self.interval)

    def value_at(self, key: str, t: float) -> Any:
        """The last value of ``key`` recorded before ``t`` (None when none was)."""
        values = [v for at, k, v in self.changes if k == key and at < t]
        return values[-1] if values else None

    def timeline(self, t0: float) -> list[dict[str, Any]]:
        return [{"t": round(at - t0, 3), "key": k, "value": v} for at, k, v in self.changes]


def voters_of(sync_key: Any) -> list[str]:
    if not isinstance(sync_key, dict):
        return []
    with contextlib.suppress(ValueError):
        return sorted(sync_from_json(sync_key).sync_standby)
    return []


def wait_sync_ready(cluster: LocalCluster, leader: MemberProc, mode: str) -> float:
    """Wait (60 s at most) until the ``sync`` key is the leader's and names as many voters as
    the steady state has (``on``: 1, ``quorum``: every replica); return the seconds waited.
    Raises tests.support.cluster.Timeout."""
    assert cluster.etcd is not None
    endpoint, key = cluster.etcd.endpoint, f"/service/{cluster.scope}/sync"
    want = len(cluster.procs) - 1 if mode == "quorum" else 1
    start = time.monotonic()

    def ready() -> bool:
        value = etcd_get(endpoint, key)
        return isinstance(value, dict) and value.get("leader") == leader.name \
            and len(voters_of(value)) >= want

    wait_until(ready, 60, f"a sync key of {leader.name} with {want} voter(s)")
    return time.monotonic() - start


def kill_node_hard(cluster: LocalCluster, name: str) -> None:
    """Node death: SIGKILL to the agent's process group and to the postmaster's (the postmaster
    and all its children) back to back, then LocalCluster.kill_node's reaping and waiting."""
    m = cluster.procs[name]
    pid = m.postmaster_pid()
    groups = [m.proc.pid] if m.proc is not None and m.proc.poll() is None else []
    if pid is not None:
        with contextlib.suppress(OSError):
            groups.append(os.getpgid(pid))
    for group in groups:
        if group != os.getpgrp():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    cluster.kill_node(name)


def replication_state(m: MemberProc) -> dict[str, Any]:
    """The primary's ``synchronous_standby_names``, ``synchronous_commit`` and
    ``pg_stat_replication`` (application_name: sync_state)."""
    names = psql(m, "SHOW synchronous_standby_names")
    commit = psql(m, "SHOW synchronous_commit")
    rows = psql(m, "SELECT application_name || ':' || sync_state FROM pg_stat_replication")
    return {"synchronous_standby_names": names, "synchronous_commit": commit,
            "pg_stat_replication": dict(r.split(":", 1) for r in rows.split() if ":" in r)}


def first_ack_elsewhere(writers: list[Writer], t0: float, old: str) -> float | None:
    times = [t for w in writers if (t := w.unavailable_after(t0, old)) is not None]
    return min(times) if times else None


def run_once(mode: str, base: Path, dynamic: dict[str, Any], members: int, n_writers: int,
             interval: float, commit_timeout: float, phase: float) -> dict[str, Any]:
    """One leader node death under load, on a fresh cluster in ``base``."""
    dyn = dict(dynamic) if mode == "off" else {**dynamic, "synchronous_mode": mode}
    result: dict[str, Any] = {"mode": mode, "fault_phase_s": round(phase, 3)}
    with new_cluster(base, members=members, **dyn) as cluster:
        leader = start_bench_cluster(cluster)
        result["old_leader"] = leader.name
        if mode != "off":
            result["sync_ready_after_s"] = round(wait_sync_ready(cluster, leader, mode), 2)
        procs = list(cluster.procs.values())
        writers = [Writer(procs, interval=interval, seq_start=i, seq_step=n_writers,
                          timeout=commit_timeout) for i in range(n_writers)]
        with KeySampler(cluster) as sampler:
            threads = [w.run_in_thread() for w in writers]
            # steady state, then a phase within the keep-alive period (every ttl/4)
            time.sleep(2.0 + phase)
            result["at_kill"] = replication_state(leader)
            result["loadavg_at_kill"] = round(os.getloadavg()[0], 2)
            t0 = time.monotonic()
            kill_node_hard(cluster, leader.name)
            deadline = t0 + 120
            while time.monotonic() < deadline and \
                    first_ack_elsewhere(writers, t0, leader.name) is None:
                time.sleep(0.1)
            time.sleep(2.0)
            for w in writers:
                w.stop.set()
            for t in threads:
                t.join(10)
            result["failover_s"] = first_ack_elsewhere(writers, t0, leader.name)
            try:
                new = wait_until(lambda: primary_of(cluster), 60, "a primary")
            except WaitTimeout:
                new = None
        sync_at_kill = sampler.value_at("sync", t0)
        result["sync_key_at_kill"] = sync_at_kill
        result["key_changes"] = sampler.timeline(t0)
        writes = [x for w in writers for x in w.writes]
        acked = {x.seq for x in writes if x.acked is not None}
        result["writes_attempted"] = len(writes)
        result["acked"] = len(acked)
        result["acked_after_kill"] = sum(1 for x in writes
                                         if x.acked is not None and x.acked >= t0)
        steady = [x.acked - x.started for x in writes if x.acked is not None and x.acked < t0]
        result["commit_ms_median"] = round(1000 * statistics.median(steady), 2) if steady \
            else None
        result["new_leader"] = new.name if new is not None else None
        result["winner_in_sync_key"] = (new.name in voters_of(sync_at_kill)
                                        if new is not None and mode != "off" else None)
        result["lost"] = len(acked - psql_rows(new)) if new is not None else None
    return result


def nearest_rank(values: list[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (the smallest value with at least ``q`` of the values
    at or below it); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rs = [r for r in runs if r["mode"] == mode]
    done = [r for r in rs if "error" not in r]
    times = [r["failover_s"] for r in done if r.get("failover_s") is not None]
    commit = [r["commit_ms_median"] for r in done if r.get("commit_ms_median") is not None]
    return {"mode": mode, "runs": len(rs), "errors": len(rs) - len(done),
            "failovers": len(times),
            "median_s": statistics.median(times) if times else float("nan"),
            "p90_s": nearest_rank(times, 0.9), "max_s": max(times, default=float("nan")),
            "acked_total": sum(r["acked"] for r in done),
            "lost_total": sum(r["lost"] or 0 for r in done),
            "lost_unknown": sum(1 for r in done if r["lost"] is None),
            "winner_in_sync_key": sum(1 for r in done if r.get("winner_in_sync_key")),
            "commit_ms_median": statistics.median(commit) if commit else float("nan")}


def main() -> int:
    ap = timing_parser(__doc__)
    ap.add_argument("--repeat", type=int, default=20, help="runs per mode")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: off,on,quorum")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--writers", type=int, default=4, help="writer threads")
    ap.add_argument("--interval", type=float, default=0.05,
                    help="seconds between one writer's inserts")
    ap.add_argument("--commit-timeout", type=float, default=1.0,
                    help="seconds one write attempt (connect + INSERT) may take")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--seed", type=int, default=1, help="seeds the fault phase")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"--modes: unknown {','.join(bad)} (off, on, quorum)")
    if args.members < 3:
        ap.error("--members: at least 3 (a quorum failover needs two surviving voters)")
    dynamic = timing_of(args)
    rng = random.Random(args.seed)
    phases = [rng.uniform(0, args.ttl / 4) for _ in range(args.repeat)]
    runs: list[dict[str, Any]] = []
    host = {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    with contextlib.suppress(OSError):
        host["postgresql"] = subprocess.run(
            ["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True,
            text=True, timeout=10, check=False).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="pgha-syncbench-") as tmp:
        for i, phase in enumerate(phases):
            for mode in modes:
                base = Path(tmp) / f"{mode}-{i}"
                try:
                    r = run_once(mode, base, dynamic, args.members, args.writers, args.interval,
                                 args.commit_timeout, phase)
                except Exception as exc:  # a run that could not be set up: recorded, go on
                    r = {"mode": mode, "fault_phase_s": round(phase, 3),
                         "error": f"{type(exc).__name__}: {exc}"}
                r["run"] = i + 1
                save_logs(base, args.out / "logs" / f"sync-ttl{args.ttl:g}-{mode}-{i + 1}")
                runs.append(r)
                if "error" in r:
                    print(f"  {mode:6} #{i + 1}: ERROR {r['error']}", flush=True)
                    continue
                fo = r["failover_s"]
                print(f"  {mode:6} #{i + 1}: failover "
                      f"{'none' if fo is None else f'{fo:.2f}s'}, acked {r['acked']}, "
                      f"lost {r['lost']}, {r['old_leader']} -> {r['new_leader']}"
                      f"{' (in sync key)' if r['winner_in_sync_key'] else ''}", flush=True)
    summary = [summarise(mode, runs) for mode in modes]
    print(f"\npgha sync failover benchmark: leader node death, etcd, {args.members} members, "
          f"ttl={args.ttl:g} loop_wait={args.loop_wait:g} retry_timeout={args.retry_timeout:g}, "
          f"{args.repeat} runs per mode, {args.writers} writers every {args.interval:g} s")
    print(f"{'mode':7} {'runs':>4} {'failed over':>11} {'median s':>8} {'p90 s':>6} "
          f"{'max s':>6} {'acked':>7} {'lost':>5} {'winner in sync':>14} {'commit ms':>9}")
    for s in summary:
        print(f"{s['mode']:7} {s['runs']:4d} {s['failovers']:11d} {s['median_s']:8.2f} "
              f"{s['p90_s']:6.2f} {s['max_s']:6.2f} {s['acked_total']:7d} {s['lost_total']:5d} "
              f"{s['winner_in_sync_key'] if s['mode'] != 'off' else '-':>14} "
              f"{s['commit_ms_median']:9.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sync-failover-etcd-ttl{args.ttl:g}-m{args.members}.json"
    path.write_text(json.dumps({
        "settings": {**dynamic, "dcs": "etcd", "members": args.members, "modes": modes,
                     "repeat": args.repeat, "writers": args.writers,
                     "writer_interval_s": args.interval, "commit_timeout_s": args.commit_timeout,
                     "seed": args.seed, "fault": "leader node death"},
        "machine": host, "summary": summary, "runs": runs}, indent=2))
    print(f"\nwrote {path}")
    broken = [s["mode"] for s in summary if s["mode"] != "off" and s["lost_total"]]
    if broken:
        print(f"FAIL: acknowledged writes lost with synchronous_mode {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
