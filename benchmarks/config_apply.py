"""Dynamic configuration latency: how long after ``PATCH /config`` a reload-only PostgreSQL
parameter is visible (``SHOW``) on every member of a local three-member cluster.

Each run patches ``work_mem`` to a new value through the leader's REST API and polls
``SHOW work_mem`` on every member every 5 ms over open connections. Prints a table and writes
JSON with the machine description to ``benchmarks/results/``.

Target (issue 4): visible on every member within ``loop_wait + 1 s``.

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/config_apply.py --repeat 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.failover import machine  # noqa: E402
from tests.support.cluster import new_cluster, wait_healthy  # noqa: E402

from pgha.cli.localcluster import MemberProc  # noqa: E402


def patch_config(m: MemberProc, body: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{m.api}/config", data=json.dumps(body).encode(),
                                 method="PATCH", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


async def measure(members: list[MemberProc], leader: MemberProc, value: str) -> dict[str, float]:
    """Seconds from sending the patch until each member's ``SHOW work_mem`` is ``value``."""
    conns = {m.name: await asyncpg.connect(host=str(m.data_dir.parent), port=m.pg_port,
                                           user="postgres", database="postgres")
             for m in members}
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(patch_config, leader,
                                {"postgresql": {"parameters": {"work_mem": value}}})
        seen: dict[str, float] = {}
        while len(seen) < len(members) and time.monotonic() - t0 < 60:
            for name, conn in conns.items():
                if name not in seen and await conn.fetchval("SHOW work_mem") == value:
                    seen[name] = time.monotonic() - t0
            await asyncio.sleep(0.005)
        return seen
    finally:
        for conn in conns.values():
            await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ttl", type=float, default=20)
    ap.add_argument("--loop-wait", type=float, default=2)
    ap.add_argument("--retry-timeout", type=float, default=3)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    dynamic = {"ttl": args.ttl, "loop_wait": args.loop_wait, "retry_timeout": args.retry_timeout}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pgha-bench-") as tmp:
        cluster = new_cluster(Path(tmp) / "c", **dynamic)
        with cluster:
            cluster.start_all(stagger=0.3)
            leader = wait_healthy(cluster, timeout=180)
            members = list(cluster.procs.values())
            for i in range(args.repeat):
                value = f"{5 + i}MB"
                seen = asyncio.run(measure(members, leader, value))
                slowest = max(seen.values()) if len(seen) == len(members) else None
                runs.append({"value": value, "per_member_s": seen, "all_members_s": slowest})
                print(f"  #{i + 1}: work_mem={value} on every member after "
                      f"{slowest if slowest is not None else float('nan'):.3f}s", flush=True)
                time.sleep(0.5)
    done = [r["all_members_s"] for r in runs if r["all_members_s"] is not None]
    summary = {"median_s": statistics.median(done) if done else None,
               "max_s": max(done) if done else None, "runs": len(runs),
               "missed": len(runs) - len(done), "target_s": args.loop_wait + 1}
    print(f"\npgha dynamic configuration: ttl={args.ttl:g} loop_wait={args.loop_wait:g} "
          f"retry_timeout={args.retry_timeout:g}, {args.repeat} changes of work_mem")
    print(f"{'metric':44} {'median':>7} {'max':>7} {'target':>7}")
    print(f"{'seconds until SHOW shows it on every member':44} "
          f"{summary['median_s'] or float('nan'):7.3f} {summary['max_s'] or float('nan'):7.3f} "
          f"{summary['target_s']:7.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"config_apply-ttl{args.ttl:g}.json"
    path.write_text(json.dumps({"settings": {**dynamic, "members": 3}, "machine": machine(),
                                "summary": summary, "runs": runs}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
