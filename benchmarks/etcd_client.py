"""Idle cost of the two etcd clients: each, in a fresh Python process with aiohttp already
imported (as in the agent), holds a lease (keep-alive every ``ttl/3`` s) and a prefix watch for
``--seconds`` against a throwaway etcd; reported: RSS growth over the aiohttp baseline (MiB),
threads, CPU seconds used during the idle period.

Run: ``PYTHONPATH=src:. python benchmarks/etcd_client.py [--seconds 60]``. Prints a table and
writes JSON to ``benchmarks/results/etcd_client.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import asyncio, json, os, resource, sys, threading, time
import aiohttp  # noqa: F401  (the agent imports it anyway)

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def main(kind, host, port, seconds):
    base = rss()
    if kind == "grpc":
        from pgha.dcs.etcd import EtcdStore as Store
    else:
        from pgha.dcs.etcd_http import EtcdHttpStore as Store
    async with Store([(host, port)], ttl=30, timeout=5) as kv:
        await kv.put("/bench/leader", b"x", ephemeral=True)
        snap = await kv.get_prefix("/bench/")
        async def watch():
            async for _ in kv.watch("/bench/", snap.revision):
                pass
        task = asyncio.create_task(watch())
        await asyncio.sleep(1)
        c0, t0 = cpu(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(10)
            await kv.keepalive()
        used = cpu() - c0
        out = {"client": kind, "rss_mib": round(rss() - base, 2), "rss_total_mib": round(rss(), 2),
               "threads": threading.active_count(),
               "os_threads": len(os.listdir("/proc/self/task")),
               "cpu_s": round(used, 3), "seconds": seconds}
        task.cancel()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    from tests.support.etcd import EtcdServer

    server = EtcdServer()
    server.start()
    rows = []
    try:
        host, port = server.endpoints[0]
        for kind in ("http", "grpc"):
            out = subprocess.run([sys.executable, "-c", CHILD, kind, host, str(port),
                                  str(args.seconds)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.close()
    print(f"{'client':8} {'+RSS MiB':>9} {'RSS MiB':>8} {'OS threads':>10} {'CPU s':>7}")
    for r in rows:
        print(f"{r['client']:8} {r['rss_mib']:9.2f} {r['rss_total_mib']:8.2f} "
              f"{r['os_threads']:10d} {r['cpu_s']:7.3f}")
    path = Path(__file__).parent / "results" / "etcd_client.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"seconds": args.seconds, "rows": rows}, indent=2) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
