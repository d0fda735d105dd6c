"""The chaos campaign, long form (issue 11): a seeded series of faults against a real cluster on
one DCS topology, judged by writers, a split-brain probe and convergence checks that do not ask
pgha anything. The short seeded form of the same code runs in ``tests/chaos/test_campaign.py``.

Prints, per ``synchronous_mode`` phase: faults by kind, split-brain instants, overlapping
commits, acknowledged and lost writes, failovers, members needing an operator, and the longest
write gap around each kind of fault (median, p95, max). Writes the JSON (configuration,
machine, summary, every fault with its target, hold, note, states before and after, lost rows)
to ``benchmarks/results/chaos-<backend>.json`` unless ``--json`` says otherwise.

Exit status 1 when a split-brain instant was seen, an acknowledged write was lost in a
synchronous phase (``on`` / ``quorum``), or a lost write is named by no discarded-WAL report;
else 0.

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/chaos.py --backend etcd3 \\
        --faults 70 --modes off,on,quorum --seed 1
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT), str(ROOT / "src")]

from failover import machine  # noqa: E402
from tests.support.chaos.campaign import Campaign, CampaignConfig  # noqa: E402
from tests.support.chaos.dcs import TOPOLOGIES  # noqa: E402
from tests.support.chaos.faults import BY_NAME  # noqa: E402
from tests.support.chaos.mutant import MUTATIONS  # noqa: E402


def table(campaign: Campaign) -> str:
    summary = campaign.summary()
    lines = []
    head = (f"{'mode':7} {'faults':>6} {'pairs':>5} {'split':>5} {'ovl':>4} {'acked':>7} "
            f"{'lost':>5} {'unexpl':>6} {'rejoin':>6} {'disc.max':>9} {'fo':>4} {'oper':>4} "
            f"{'restart':>7} {'err':>4}")
    lines += [head, "-" * len(head)]
    for mode, s in summary.items():
        lines.append(f"{mode:7} {s['faults']:>6} {s['overlapping_pairs']:>5} "
                     f"{s['split_brain_instants']:>5} {s['overlapping_commits']:>4} "
                     f"{s['acked']:>7} {s['lost']:>5} {s['lost_unexplained']:>6} "
                     f"{s['rejoins_reported']:>6} {s['discarded_bytes']['max']!s:>9} "
                     f"{s['failovers']:>4} {s['needs_operator']:>4} {s['agent_restarts']:>7} "
                     f"{s['errors']:>4}")
    lines += ["split: split-brain instants; ovl: commits on two members in overlapping windows;",
              "lost: acknowledged writes missing; unexpl: of them, named by no discard report;",
              "rejoin: rewinds/re-clones reported; disc.max: largest discarded WAL (bytes);",
              "fo: leader changes; oper: members needing an operator; restart: agent exits"]
    lines += ["", f"{'mode':7} {'fault kind':20} {'n':>3} {'gap median':>10} {'p95':>7} "
                  f"{'max':>7}"]
    for mode, s in summary.items():
        for kind, g in s["write_gap_s"].items():
            lines.append(f"{mode:7} {kind:20} {g['n']:>3} {g['median']!s:>10} "
                         f"{g['p95']!s:>7} {g['max']!s:>7}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=TOPOLOGIES, default="etcd")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--faults", type=int, default=20, help="faults per mode")
    ap.add_argument("--modes", default="off,on,quorum",
                    help="synchronous_mode phases, in order (comma-separated)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default="", help=f"only these: {', '.join(BY_NAME)}")
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--mutation", choices=MUTATIONS)
    ap.add_argument("--dir", type=Path, help="keep the cluster's data and logs here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C: every server and agent the campaign started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = args.dir or Path(tempfile.mkdtemp(prefix="pgha-chaos-"))
    cfg = CampaignConfig(
        base_dir=base, backend=args.backend, members=args.members, faults=args.faults,
        seed=args.seed, modes=tuple(m for m in args.modes.split(",") if m),
        kinds=tuple(k for k in args.kinds.split(",") if k), overlap=args.overlap,
        mutation=args.mutation)
    out = args.json or ROOT / "benchmarks" / "results" / f"chaos-{args.backend}.json"
    cfg.progress_json = out
    started = time.time()
    campaign = Campaign(cfg)
    campaign.extra = {"machine": machine(), "command": " ".join(sys.argv)}
    try:
        campaign.run()
    finally:
        campaign.extra["wall_s"] = round(time.time() - started, 1)
        campaign.write_json(out)
        print(table(campaign))
        print(f"\n{campaign.extra['wall_s']} s; data and logs in {base}; JSON in {out}")
    summary = campaign.summary()
    bad = any(s["split_brain_instants"] or s["lost_unexplained"] for s in summary.values()) \
        or any(s["lost"] for mode, s in summary.items() if mode != "off")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
