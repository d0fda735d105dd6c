"""HAProxy benchmark: the shipped configs/haproxy.cfg (local addresses and ports swapped in) in
front of a fresh three-member cluster (synchronous_mode on) per run; one client writes through
the primary port every 50 ms, another reads through the replica port on a new connection every
50 ms, while the cluster goes through a planned switchover and then the death of the new
leader's node (tests/support/haproxy_campaign.py, the same campaign the integration test runs).

Per event it records (JSON):
  * ``write_gap_s``: the longest time between two acknowledged writes through HAProxy, from
    the event to the next one (what a client of the primary port sees);
  * ``haproxy_converged_after_s``: until HAProxy had only the new leader UP for writes and
    only the replicas UP for reads;
  * ``reads_on_primary_during_event``: reads through the replica port that landed on a
    primary (the promoted member stays UP for reads until its /replica checks fail);
  * ``lost``: acknowledged writes missing on the final primary (must be 0).

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/haproxy.py --ttl 20 \
        --loop-wait 2 --retry-timeout 3 --repeat 3
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import ROOT, machine, save_logs, timing_of, timing_parser
from tests.support.cluster import new_cluster
from tests.support.haproxy import HAProxy
from tests.support.haproxy_campaign import run_campaign

EVENTS = ("switchover", "node_death")


def run_once(base: Path, dynamic: dict[str, Any]) -> dict[str, Any]:
    cluster = new_cluster(base, synchronous_mode=True, **dynamic)
    with cluster:
        cluster.start_all(stagger=0.3)
        with HAProxy(base / "haproxy", list(cluster.procs.values())) as proxy:
            campaign = run_campaign(cluster, proxy)
    return {"events": {p.name: p.summary() for p in campaign.phases},
            "acked": len(campaign.acked), "lost": len(campaign.lost)}


def summarise(event: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r["events"][event] for r in runs if "events" in r]
    gaps = [e["write_gap_s"] for e in done if e["write_gap_s"] is not None]
    conv = [e["haproxy_converged_after_s"] for e in done]
    return {"event": event, "runs": len(done),
            "write_gap_median_s": round(statistics.median(gaps), 3) if gaps else None,
            "write_gap_max_s": max(gaps, default=None),
            "converged_median_s": round(statistics.median(conv), 3) if conv else None,
            "reads_on_primary_total": sum(e["reads_on_primary_during_event"] for e in done)}


def main() -> int:
    ap = timing_parser(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    dynamic = timing_of(args)
    host = {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pgha-haproxybench-") as tmp:
        for i in range(args.repeat):
            base = Path(tmp) / f"run-{i + 1}"
            try:
                r = run_once(base, dynamic)
            except Exception as exc:  # a run that could not be set up: recorded, go on
                r = {"error": f"{type(exc).__name__}: {exc}"}
                save_logs(base, args.out / "logs" / f"haproxy-ttl{args.ttl:g}-{i + 1}")
            r["run"] = i + 1
            runs.append(r)
            if "error" in r:
                print(f"  #{i + 1}: ERROR {r['error']}", flush=True)
                continue
            ev = r["events"]
            print(f"  #{i + 1}: " + ", ".join(
                f"{e} gap {ev[e]['write_gap_s']}s (HAProxy converged "
                f"{ev[e]['haproxy_converged_after_s']}s, {ev[e]['reads_on_primary_during_event']}"
                " reads on a primary)" for e in EVENTS) + f"; acked {r['acked']}, lost {r['lost']}",
                flush=True)
    summary = [summarise(e, runs) for e in EVENTS]
    print(f"\npgha through HAProxy (configs/haproxy.cfg), etcd, 3 members, synchronous_mode on, "
          f"ttl={args.ttl:g} loop_wait={args.loop_wait:g} retry_timeout={args.retry_timeout:g}")
    for s in summary:
        print(f"  {s['event']:10} runs {s['runs']}: write gap median {s['write_gap_median_s']}s "
              f"max {s['write_gap_max_s']}s; HAProxy converged median "
              f"{s['converged_median_s']}s; reads on a primary {s['reads_on_primary_total']}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"haproxy-etcd-ttl{args.ttl:g}.json"
    path.write_text(json.dumps({
        "settings": {**dynamic, "dcs": "etcd", "members": 3, "synchronous_mode": True,
                     "repeat": args.repeat, "writer_interval_s": 0.05,
                     "reader_interval_s": 0.05, "config": "configs/haproxy.cfg"},
        "machine": host, "summary": summary, "runs": runs}, indent=2))
    print(f"\nwrote {path}")
    lost = sum(r.get("lost", 0) for r in runs)
    if lost:
        print(f"FAIL: {lost} acknowledged writes lost")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
