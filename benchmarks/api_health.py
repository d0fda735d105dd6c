"""REST health-check throughput and latency: wrk against the real aiohttp app.

The app (``pgha.api.server.build_app``) runs in a child process with a fake status source that
looks like a leader of a three-member cluster; a publisher task replaces the status snapshot
every ``--publish-interval`` seconds, as the agent's decision loop does. wrk (Debian package
``wrk``) then loads each path with 1 thread and 10 keep-alive connections (by default) as fast
as the server answers (saturating: latency then includes queueing behind the other
connections), and the first path once more paced at about ``--rate`` requests/s (the target
load). Prints a table and writes JSON with the machine description to ``benchmarks/results/``.

    python benchmarks/api_health.py                      # /primary, /replica, /patroni
    python benchmarks/api_health.py --path /primary --duration 30 --repeat 5
    python benchmarks/api_health.py --no-cache           # serialize the status per request
    python benchmarks/api_health.py --live               # a real leader agent (3 members,
                                                         # ttl 20, loop_wait 2; non-root)

Target (issue 4): GET /primary on the leader >= 3,000 requests/s with p99 < 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# --------------------------------------------------------------------------- server side


def leader_status() -> Any:
    """A representative leader status: three members, tags, PostgreSQL details."""
    from pgha.core.model import (
        ClusterView,
        ControlState,
        DataState,
        HaSettings,
        Leader,
        Member,
        PgRole,
        PgState,
        Tags,
    )
    from pgha.core.status import AgentStatus

    pos = 0x3_5000_0000
    members = {
        f"pg{i}": Member(f"pg{i}", conn_url=f"postgres://10.0.0.{i}:5432/postgres",
                         api_url=f"http://10.0.0.{i}:8008/patroni",
                         role="primary" if i == 1 else "replica", state="running",
                         replication_state=None if i == 1 else "streaming",
                         xlog_location=pos - (i - 1) * 4096, timeline=3)
        for i in (1, 2, 3)}
    view = ClusterView(initialize="7123456789012345678", settings=HaSettings(),
                       config={"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
                       leader=Leader("pg1"), members=members, optime=pos)
    return AgentStatus(
        name="pg1", scope="demo", tags=Tags(custom={"zone": "eu-1"}),
        conn_url="postgres://10.0.0.1:5432/postgres", api_url="http://10.0.0.1:8008/patroni",
        pg=PgState(data=DataState.VALID, running=True, accepting=True, role=PgRole.PRIMARY,
                   sysid="7123456789012345678", timeline=3, wal_position=pos,
                   control_state=ControlState.IN_PRODUCTION),
        pg_details={"postmaster_start_time": "2026-11-25 10:00:00.000000+00:00",
                    "server_version": 150018, "xlog": {"location": pos},
                    "replication": [{"usename": "replicator", "application_name": f"pg{i}",
                                     "client_addr": f"10.0.0.{i}", "state": "streaming",
                                     "sync_state": "async", "sync_priority": 0}
                                    for i in (2, 3)]},
        view=view, holds_lock=True, dcs_last_seen=time.time(), heartbeat=time.monotonic(),
        reason="leader_healthy", message="holding the leader lock as a running primary")


class FakeAgent:
    def __init__(self) -> None:
        self.status = leader_status()
        self.metrics = None

    def accept_failsafe(self, name: str) -> tuple[int, str]:
        return 502, "failsafe_mode is off"

    async def submit(self, command: Any) -> Any:
        from pgha.core.commands import Outcome
        return Outcome(503, "benchmark")


async def serve(port: int, publish_interval: float, no_cache: bool) -> None:
    from aiohttp import web

    from pgha.api import handlers
    from pgha.api.server import build_app

    if no_cache:
        def uncached(self: Any, status: Any) -> bytes:
            return handlers.dumps(status.to_patroni_json()).encode()
        handlers.StatusJson.body = uncached  # type: ignore[method-assign]
    agent = FakeAgent()
    runner = web.AppRunner(build_app(agent), access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    try:
        while True:  # the decision loop publishes a new snapshot every cycle
            await asyncio.sleep(publish_interval)
            agent.status = replace(agent.status, heartbeat=time.monotonic(),
                                   dcs_last_seen=time.time())
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- load side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, threads: int, connections: int, duration: float,
            pause_ms: float = 0.0) -> dict[str, Any]:
    """One wrk run. ``pause_ms`` > 0 makes each connection wait that long (on average: wrk's
    Lua ``delay()`` counts whole milliseconds, so fractions are carried over) after each
    answer before its next request, for a paced load instead of a saturating one."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
           "--timeout", "5s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if pause_ms > 0:
            script.write(f"local carry = 0\nfunction delay()\n  carry = carry + {pause_ms:.4f}\n"
                         "  local whole = math.floor(carry)\n  carry = carry - whole\n"
                         "  return whole\nend\n")
            script.flush()
            cmd += ["-s", script.name]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                             timeout=duration + 30).stdout
    latency = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency["50"], "p75_ms": latency["75"], "p90_ms": latency["90"],
        "p99_ms": latency["99"], "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def machine() -> dict[str, Any]:
    import aiohttp

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "wrk": wrk.strip(),
            "loadavg_at_start": os.getloadavg()}


@contextlib.contextmanager
def api_server(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """The API under test: ``(base URL, pid of the serving process)``."""
    if args.live:
        sys.path.insert(0, str(ROOT))
        from tests.support.cluster import new_cluster, wait_healthy

        with tempfile.TemporaryDirectory(prefix="pgha-api-bench-") as tmp:
            cluster = new_cluster(Path(tmp) / "c", ttl=20, loop_wait=2, retry_timeout=3)
            with cluster:
                cluster.start_all(stagger=0.3)
                leader = wait_healthy(cluster, timeout=180)
                assert leader.proc is not None
                yield leader.api, leader.proc.pid
        return
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(port),
           "--publish-interval", str(args.publish_interval), "--nice", str(args.nice)] + (
               ["--no-cache"] if args.no_cache else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            sys.exit("the API server did not start")
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", action="append",
                        help="path to load (repeatable; default /primary /replica /patroni)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--publish-interval", type=float, default=1.0,
                        help="seconds between status snapshots (the agent's cycles)")
    parser.add_argument("--rate", type=float, default=3000.0,
                        help="also load the first path paced at about this many requests/s "
                             "(0: only saturating runs)")
    parser.add_argument("--no-cache", action="store_true",
                        help="serialize the status JSON on every request (comparison)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the server process (negative needs root): a "
                             "diagnostic that shields it from other load on a busy machine")
    parser.add_argument("--live", action="store_true",
                        help="load the leader of a real three-member cluster (PostgreSQL 15, "
                             "etcd, ttl 20, loop_wait 2) instead of the app with a fake status")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.nice:
            os.nice(args.nice)
        asyncio.run(serve(args.serve, args.publish_interval, args.no_cache))
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk (scripts/setup installs it)")
    paths = args.path or ["/primary", "/replica", "/patroni"]
    loads = [(p, 0.0) for p in paths] + ([(paths[0], args.rate)] if args.rate > 0 else [])
    rows: list[dict[str, Any]] = []
    with api_server(args) as (base, pid):
        run_wrk(base + paths[0], args.threads, args.connections, 2.0)  # warm-up
        for path, rate in loads:
            pause = 0.0
            if rate:  # pace: connections / rate per request (5% over), less the answer time
                sat = [r["p50_ms"] for r in rows if r["path"] == path and not r["paced_rate"]]
                pause = max(0.0, args.connections * 1000 / (1.05 * rate)
                            - (min(sat) if sat else 0.0))
            for _ in range(args.repeat):
                cpu0 = cpu_seconds(pid)
                result = run_wrk(base + path, args.threads, args.connections, args.duration,
                                 pause)
                result["server_cpu_pct"] = round(
                    100 * (cpu_seconds(pid) - cpu0) / args.duration, 1)
                rows.append({"path": path, "paced_rate": rate, **result})
    summary = []
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
          f"{args.repeat} runs per path{' (no cache)' if args.no_cache else ''}"
          f"{f' (server nice {args.nice})' if args.nice else ''}"
          f"{' against a live leader agent' if args.live else ''}; load average at the end "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| path | load | req/s (median) | req/s (min) | p50 ms | p99 ms (median) | p99 ms (max) "
          "| server CPU % | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for path, rate in loads:
        runs = [r for r in rows if (r["path"], r["paced_rate"]) == (path, rate)]
        s = {"path": path, "paced_rate": rate,
             "rps_median": statistics.median(r["requests_per_s"] for r in runs),
             "rps_min": min(r["requests_per_s"] for r in runs),
             "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
             "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
             "p99_ms_max": max(r["p99_ms"] for r in runs),
             "server_cpu_pct_median": statistics.median(r["server_cpu_pct"] for r in runs),
             "non_2xx": sum(r["non_2xx"] for r in runs)}
        summary.append(s)
        load = f"paced ~{rate:.0f}/s" if rate else "saturating"
        print(f"| {path} | {load} | {s['rps_median']:.0f} | {s['rps_min']:.0f} | "
              f"{s['p50_ms_median']:.2f} | {s['p99_ms_median']:.2f} | {s['p99_ms_max']:.2f} | "
              f"{s['server_cpu_pct_median']:.0f} | {s['non_2xx']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    suffix = ("-live" if args.live else "") + ("-nocache" if args.no_cache else "") + (
        f"-nice{args.nice}" if args.nice else "")
    out = RESULTS / f"api_health-{stamp}{suffix}.json"
    out.write_text(json.dumps({
        "benchmark": "api_health", "recorded": stamp, "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "serve"},
        "loadavg_at_end": os.getloadavg(),
        "summary": summary, "runs": rows}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
