"""Idle benchmark: one three-member cluster (real PostgreSQL, one etcd with
``--metrics extensive``) run by ``--agent pgha|patroni``; once healthy and settled, an idle
window of ``--seconds``: per agent RSS (VmRSS, agent process only), threads, CPU seconds
(utime+stime delta); etcd calls per member per minute by gRPC method. Then the wall-clock
time of ``pgha list`` / ``patronictl list`` (median of ``--cli-runs``).

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/idle.py --agent patroni
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.failover import machine  # noqa: E402
from benchmarks.scale import parse, print_window, settings, summarize  # noqa: E402
from tests.support.fleet import Fleet  # noqa: E402
from tests.support.patroni import patronictl, pgha_cli, write_ctl_config  # noqa: E402


def cli_times(ctl: Path, scope: str, runs: int) -> dict[str, float]:
    """Median wall-clock seconds of each ctl's ``list`` (both ctls run whatever the agent)."""
    out: dict[str, float] = {}
    for name, fn in (("pgha list", pgha_cli), ("patronictl list", patronictl)):
        times = []
        for _ in range(runs):
            t0 = time.monotonic()
            res = fn(ctl, "list", scope)
            times.append(time.monotonic() - t0)
            assert res.returncode == 0, res.stdout + res.stderr
        out[name] = round(statistics.median(times), 3)
    return out


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    runs = 5
    if "--cli-runs" in argv:
        i = argv.index("--cli-runs")
        runs = int(argv[i + 1])
        del argv[i:i + 2]
    args = parse(argv, clusters=1)
    dynamic = {"ttl": args.ttl, "loop_wait": args.loop_wait, "retry_timeout": args.retry_timeout}
    with tempfile.TemporaryDirectory(prefix="pgha-idle-") as tmp, \
            Fleet(Path(tmp), args.clusters, args.agent, dynamic) as fleet:
        fleet.start()
        time.sleep(args.settle)
        window = fleet.idle_window(args.seconds)
        ctl = write_ctl_config(Path(tmp) / "ctl.json",
                               [f"127.0.0.1:{fleet.etcd.client_port}"])
        cli = cli_times(ctl, fleet.clusters[0].scope, runs) if runs > 0 else {}
    summary = summarize(window)
    print_window(f"{args.agent}: idle {window['window_s']}s, {args.clusters} x 3 members "
                 f"(ttl {args.ttl:g}, loop_wait {args.loop_wait:g})", summary, window)
    print(f"  {'member':14} {'RSS MiB':>8} {'threads':>8} {'CPU s':>7}")
    for k, a in window["agents"].items():
        print(f"  {k:14} {a['rss_mib']:8.1f} {a['threads']:8d} {a['cpu_s']:7.2f}")
    for k, v in cli.items():
        print(f"  {k + ' (median s)':32} {v}")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    path: Path = args.out / f"idle-{args.agent}{tag}.json"
    path.write_text(json.dumps({"settings": {**settings(args), "cli_runs": runs},
                                "machine": machine(), "summary": summary, "cli_s": cli,
                                "window": window}, indent=2))
    print(f"\nwrote {path}")
    return path


if __name__ == "__main__":
    main()
