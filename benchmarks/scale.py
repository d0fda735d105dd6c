"""Scale benchmark: ``--clusters N`` three-member clusters (real PostgreSQL, small settings)
on ONE etcd (``--metrics extensive``), all run by ``--agent pgha|patroni``.

After every cluster is healthy and ``--settle`` seconds have passed, an idle window of
``--seconds``: etcd calls per member per minute (``grpc_server_handled_total`` by method; the
HTTP JSON gateway shows up as gRPC methods too), etcd CPU s/min and RSS, etcd p99 of unary
call handling time (``grpc_server_handling_seconds``), agents' total RSS and CPU (agent
processes only). Then one cluster's leader dies (agent and postmaster SIGKILLed) while the
others idle: seconds until another member accepts a write.

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/scale.py --agent pgha \
        --clusters 10 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.failover import machine  # noqa: E402
from tests.support.fleet import SMALL_PG, Fleet  # noqa: E402


def parse(argv: list[str] | None = None, clusters: int = 10) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", choices=("pgha", "patroni"), default="pgha")
    p.add_argument("--clusters", type=int, default=clusters)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--ttl", type=float, default=20)
    p.add_argument("--loop-wait", type=float, default=2)
    p.add_argument("--retry-timeout", type=float, default=3)
    p.add_argument("--tag", default="", help="suffix of the JSON file name (e.g. run2)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"agent": args.agent, "clusters": args.clusters, "members_per_cluster": 3,
            "idle_s": args.seconds, "settle_s": args.settle, "ttl": args.ttl,
            "loop_wait": args.loop_wait, "retry_timeout": args.retry_timeout,
            "postgresql": SMALL_PG, "etcd_flags": ["--metrics", "extensive"]}


def summarize(window: dict[str, Any]) -> dict[str, Any]:
    agents = window["agents"].values()
    n = max(1, len(window["agents"]))
    per_min = 60.0 / window["window_s"]
    return {
        "members": window["members"],
        "etcd_calls_per_member_per_min": window["etcd"]["calls_per_member_per_min"],
        "etcd_cpu_s_per_min": window["etcd"]["cpu_s_per_min"],
        "etcd_unary_p99_ms": (None if window["etcd"]["unary_p99_s"] is None
                              else round(window["etcd"]["unary_p99_s"] * 1000, 2)),
        "agents_rss_mib_total": round(sum(a["rss_mib"] for a in agents), 1),
        "agent_rss_mib_mean": round(sum(a["rss_mib"] for a in agents) / n, 1),
        "agents_cpu_s_per_min_total": round(sum(a["cpu_s"] for a in agents) * per_min, 3),
        "agent_cpu_s_per_min_mean": round(sum(a["cpu_s"] for a in agents) * per_min / n, 3),
        "agent_threads_mean": round(sum(a["threads"] for a in agents) / n, 1),
    }


def print_window(title: str, summary: dict[str, Any], window: dict[str, Any]) -> None:
    print(f"\n{title}")
    for k, v in summary.items():
        print(f"  {k:32} {v}")
    print(f"  {'etcd calls/member/min by method':32} "
          f"{window['etcd']['calls_per_member_per_min_by_method']}")
    print(f"  {'etcd msgs received (window)':32} "
          f"{window['etcd']['stream_messages_by_method']}")
    print(f"  {'etcd msgs sent (window)':32} "
          f"{window['etcd']['messages_sent_by_method']}")


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    dynamic = {"ttl": args.ttl, "loop_wait": args.loop_wait, "retry_timeout": args.retry_timeout}
    with tempfile.TemporaryDirectory(prefix="pgha-scale-") as tmp, \
            Fleet(Path(tmp), args.clusters, args.agent, dynamic) as fleet:
        t0 = time.monotonic()
        fleet.start()
        started = round(time.monotonic() - t0, 1)
        time.sleep(args.settle)
        window = fleet.idle_window(args.seconds)
        failover = fleet.node_death_failover(0)
    summary = summarize(window)
    title = (f"{args.agent}: {args.clusters} x 3 members on one etcd, idle {window['window_s']}s "
             f"(ttl {args.ttl:g}, loop_wait {args.loop_wait:g}); all healthy after {started}s")
    print_window(title, summary, window)
    print(f"  {'node-death failover (s)':32} {failover['failover_s']}")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    path: Path = args.out / f"scale-{args.agent}-{args.clusters}c{tag}.json"
    path.write_text(json.dumps({"settings": settings(args), "machine": machine(),
                                "startup_s": started, "summary": summary,
                                "failover": failover, "window": window}, indent=2))
    print(f"\nwrote {path}")
    return path


if __name__ == "__main__":
    main()
