"""Failover benchmark: faults and a planned switchover against a local three-member cluster,
with a client writing every 50 ms.

For each scenario it prints and records (JSON):
  * ``unavailable_s``: seconds from the fault to the first acknowledged write on a primary
    (for a replica's postmaster crash: seconds until the new postmaster exists; for a planned
    switchover, requested with ``POST /switchover`` on the leader: the longest time between
    two consecutive acknowledged writes, i.e. how long writes were refused);
  * ``lost``: acknowledged writes missing on the primary once the cluster has settled.

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/failover.py --ttl 20 \
        --loop-wait 2 --retry-timeout 3 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.support.cluster import new_cluster, primary_of, wait_healthy, wait_until  # noqa: E402
from tests.support.dcs_servers import SERVERS, available  # noqa: E402
from tests.support.writer import Writer  # noqa: E402

from pgha.cli.localcluster import LocalCluster, MemberProc  # noqa: E402

SCENARIOS = ("leader_node_death", "leader_postmaster_crash", "leader_clean_stop",
             "replica_postmaster_crash", "planned_switchover")
# scenarios after which the old leader must not be the one acknowledging writes
_MOVES_LEADER = ("leader_node_death", "leader_clean_stop", "planned_switchover")


def request_switchover(leader: MemberProc, candidate: str, answer: dict[str, Any]) -> None:
    body = json.dumps({"leader": leader.name, "candidate": candidate}).encode()
    req = urllib.request.Request(f"{leader.api}/switchover", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer["code"] = resp.status
    except urllib.error.HTTPError as err:
        answer["code"] = err.code


def psql_rows(m: MemberProc) -> set[int]:
    out = subprocess.run(
        ["/usr/lib/postgresql/15/bin/psql", "-h", str(m.data_dir.parent), "-p", str(m.pg_port),
         "-U", "postgres", "-XAtq", "-c", "SELECT seq FROM bench"],
        capture_output=True, text=True, timeout=30, check=True)
    return {int(x) for x in out.stdout.split()}


def run_scenario(name: str, base: Path, dynamic: dict[str, Any], phase: float = 0.0,
                 dcs: str = "etcd") -> dict[str, Any]:
    """One fault against a fresh cluster on a fresh DCS server of kind ``dcs``."""
    if dcs == "etcd":
        return _run(name, new_cluster(base, **dynamic), phase)
    server = SERVERS[dcs][0]()
    try:
        return _run(name, new_cluster(base, dcs_section=server.config_section(), **dynamic),
                    phase)
    finally:
        server.close()


def start_bench_cluster(cluster: LocalCluster) -> MemberProc:
    """Start every member of the prepared ``cluster``, wait for a primary and streaming
    replicas, create the ``bench`` table the writers insert into; return the leader."""
    cluster.start_all(stagger=0.3)
    leader = wait_healthy(cluster, timeout=180)
    subprocess.run(
        ["/usr/lib/postgresql/15/bin/psql", "-h", str(leader.data_dir.parent), "-p",
         str(leader.pg_port), "-U", "postgres", "-XAtq", "-c",
         "CREATE TABLE bench (seq int PRIMARY KEY, at timestamptz DEFAULT now())"],
        check=True, capture_output=True, timeout=30)
    time.sleep(1.0)
    return leader


def save_logs(cluster_dir: Path, dest: Path) -> None:
    """Copy every member's logs under ``cluster_dir`` to ``dest`` (created when there is one)."""
    for log in cluster_dir.glob("*/*.log"):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, dest / f"{log.parent.name}-{log.name}")


def _run(name: str, cluster: LocalCluster, phase: float) -> dict[str, Any]:
    with cluster:
        leader = start_bench_cluster(cluster)
        writer = Writer(list(cluster.procs.values()))
        thread = writer.run_in_thread()
        # steady state, then a random phase within the keep-alive period (every ttl/4), so the
        # node-death figures cover the whole range from best to worst case
        time.sleep(2.0 + phase)
        replica = next(m for m in cluster.procs.values() if m is not leader)
        t0 = time.monotonic()
        result: dict[str, Any] = {"scenario": name, "old_leader": leader.name}
        if name == "leader_node_death":
            cluster.kill_node(leader.name)
        elif name == "leader_postmaster_crash":
            cluster.kill_postmaster(leader.name)
        elif name == "leader_clean_stop":
            threading.Thread(target=cluster.stop, args=(leader.name,), daemon=True).start()
        elif name == "planned_switchover":
            answer: dict[str, Any] = {}
            threading.Thread(target=request_switchover, args=(leader, replica.name, answer),
                             daemon=True).start()
        elif name == "replica_postmaster_crash":
            old_pid = cluster.kill_postmaster(replica.name)
            wait_until(lambda: replica.postmaster_pid() not in (None, old_pid), 30,
                       "replica restart", interval=0.005)
            result["unavailable_s"] = time.monotonic() - t0
            result["metric"] = "seconds to new postmaster"
        deadline = t0 + 120
        while time.monotonic() < deadline and writer.unavailable_after(
                t0, leader.name if name in _MOVES_LEADER else None) is None:
            time.sleep(0.1)
        time.sleep(2.0)
        writer.stop.set()
        thread.join(10)
        if name == "planned_switchover":
            result["unavailable_s"] = writer.longest_gap(t0)
            result["metric"] = "longest gap between acknowledged writes"
            result["api_code"] = answer.get("code")
        elif name != "replica_postmaster_crash":
            excl = leader.name if name in _MOVES_LEADER else None
            result["unavailable_s"] = writer.unavailable_after(t0, excl)
            result["metric"] = "seconds to first acknowledged write"
        new = wait_until(lambda: primary_of(cluster), 60, "a primary")
        result["new_leader"] = new.name
        acked = {w.seq for w in writer.writes if w.acked is not None}
        present = psql_rows(new)
        result["acked"] = len(acked)
        result["lost"] = len(acked - present)
        result["writes_attempted"] = len(writer.writes)
        return result


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[:1]
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "etcd": etcd[0] if etcd else "",
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1)}


def timing_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by ``doc`` with the cluster's timing options ``--ttl``,
    ``--loop-wait`` and ``--retry-timeout`` (see :func:`timing_of`)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ttl", type=float, default=20)
    ap.add_argument("--loop-wait", type=float, default=2)
    ap.add_argument("--retry-timeout", type=float, default=3)
    return ap


def timing_of(args: argparse.Namespace) -> dict[str, Any]:
    """The dynamic configuration's timing keys from :func:`timing_parser`'s options."""
    return {"ttl": args.ttl, "loop_wait": args.loop_wait, "retry_timeout": args.retry_timeout}


def main() -> None:
    ap = timing_parser(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--dcs", default="etcd", choices=sorted(SERVERS),
                    help="etcd (the cluster's own), zookeeper, consul-emulator, consul")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--seed", type=int, default=1, help="seeds the fault phase")
    args = ap.parse_args()
    reason = available(args.dcs)
    if reason:
        ap.error(f"--dcs {args.dcs}: {reason}")
    dynamic = timing_of(args)
    runs: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="pgha-bench-") as tmp:
        for scenario in args.scenarios.split(","):
            for i in range(args.repeat):
                phase = rng.uniform(0, args.ttl / 4)
                r = run_scenario(scenario, Path(tmp) / f"{scenario}-{i}", dynamic, phase,
                                 args.dcs)
                r["fault_phase_s"] = round(phase, 3)
                save_logs(Path(tmp) / f"{scenario}-{i}",
                          args.out / "logs" / f"{args.dcs}-ttl{args.ttl:g}-{scenario}-{i + 1}")
                print(f"  {scenario} #{i + 1}: {r['unavailable_s']:.2f}s, lost {r['lost']}",
                      flush=True)
                runs.append(r)
    summary = []
    print(f"\npgha failover benchmark: dcs={args.dcs} ttl={args.ttl:g} "
          f"loop_wait={args.loop_wait:g} retry_timeout={args.retry_timeout:g}, "
          f"{args.repeat} runs each, writer every 50 ms")
    print(f"{'scenario':26} {'metric':36} {'median':>7} {'max':>7} {'lost':>5}")
    for scenario in args.scenarios.split(","):
        rs = [r for r in runs if r["scenario"] == scenario]
        vals = [r["unavailable_s"] for r in rs if r["unavailable_s"] is not None]
        med = statistics.median(vals) if vals else float("nan")
        mx = max(vals) if vals else float("nan")
        lost = sum(r["lost"] for r in rs)
        summary.append({"scenario": scenario, "median_s": med, "max_s": mx, "lost_total": lost,
                        "runs": len(rs)})
        print(f"{scenario:26} {rs[0]['metric']:36} {med:7.2f} {mx:7.2f} {lost:5d}")
    args.out.mkdir(parents=True, exist_ok=True)
    subset = "" if args.scenarios == ",".join(SCENARIOS) else \
        "-" + args.scenarios.replace(",", "+")
    path = args.out / f"failover-{args.dcs}-ttl{args.ttl:g}{subset}.json"
    path.write_text(json.dumps({"settings": {**dynamic, "dcs": args.dcs, "members": 3,
                                             "writer_interval_s": 0.05},
                                "machine": machine(), "summary": summary,
                                "runs": [dict(r) for r in runs]}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
