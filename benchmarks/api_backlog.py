"""What ``restapi.request_queue_size`` (the listen backlog) does to a burst of connections.

The real :class:`pgha.api.server.ApiServer` (fake leader status, as in ``api_health.py``) runs
in a child process with each backlog in turn; this process opens ``--burst`` connections at
once, sends ``GET /primary`` on each and reads the answer. A connection whose SYN found the
accept queue full waits for the kernel's SYN retransmission (1 s, then 3 s, ...). Prints, per
backlog, the median and worst time and how many took 0.9 s or more or failed; ``--threaded``
also runs a thread-per-request ``http.server`` with the same backlog (how Patroni serves).
Writes JSON to ``benchmarks/results/api-backlog.json``.

    python benchmarks/api_backlog.py                          # backlogs 5 and 128, burst 20
    python benchmarks/api_backlog.py --backlog 5 16 128 --burst 20 50 --repeat 5 --threaded
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SLOW = 0.9


async def serve_pgha(backlog: int, port: int) -> None:
    from api_health import FakeAgent

    from pgha.api.server import ApiServer
    from pgha.config import parse_config

    config = parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                           "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                           "restapi": {"listen": f"127.0.0.1:{port}",
                                       "request_queue_size": backlog}}, {})
    async with ApiServer(FakeAgent(), config):  # type: ignore[arg-type]
        print("ready", flush=True)
        await asyncio.Event().wait()


def serve_threaded(backlog: int, port: int) -> None:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = backlog

    server = Server(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


async def burst(port: int, count: int) -> list[float | None]:
    """Seconds per connection (connect, request, full answer); None: it failed."""
    async def one() -> float | None:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /primary HTTP/1.0\r\nHost: x\r\n\r\n")
            await reader.read()
            writer.close()
        except OSError:
            return None
        return time.monotonic() - start
    return await asyncio.gather(*(one() for _ in range(count)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(kind: str, backlog: int, bursts: list[int], repeat: int,
            port: int) -> list[dict[str, Any]]:
    port = port or free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(backlog),
                              str(port)], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for count in bursts:
            times: list[float] = []
            failed = 0
            for _ in range(repeat):
                result = asyncio.run(burst(port, count))
                times += [t for t in result if t is not None]
                failed += sum(t is None for t in result)
                time.sleep(0.5)
            row = {"server": kind, "backlog": backlog, "burst": count, "repeat": repeat,
                   "median_s": round(statistics.median(times), 4) if times else None,
                   "max_s": round(max(times), 3) if times else None,
                   "slow": sum(t >= SLOW for t in times), "failed": failed,
                   "connections": count * repeat}
            rows.append(row)
            print(f"{kind:8s} backlog {backlog:4d} burst {count:4d}: median "
                  f"{row['median_s']} s, max {row['max_s']} s, >= {SLOW} s: "
                  f"{row['slow']}/{row['connections']}, failed {failed}", flush=True)
    finally:
        child.kill()
        child.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, nargs="+", default=[5, 128])
    parser.add_argument("--burst", type=int, nargs="+", default=[20])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threaded", action="store_true")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, backlog, port = args.serve[0], int(args.serve[1]), int(args.serve[2])
        if kind == "pgha":
            asyncio.run(serve_pgha(backlog, port))
        else:
            serve_threaded(backlog, port)
        return
    rows = []
    for kind in ["pgha", "threaded"] if args.threaded else ["pgha"]:
        for backlog in args.backlog:
            rows += measure(kind, backlog, args.burst, args.repeat, args.port)
    out = ROOT / "benchmarks" / "results" / "api-backlog.json"
    out.write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
