"""Exhaustive exploration benchmark (tests/sim/explore.py, the long form of
tests/sim/test_explore.py): how many abstract states of a three-member cluster the explorer
covers, how fast, and how it compares with the seeded random simulation at finding a
deliberately broken rule.

Part 1, coverage: for the asynchronous cluster and synchronous_mode on and quorum, every event
sequence of the full menu up to ``--depth`` events (no violation expected; exit status 1 if
one is found): distinct abstract states per depth, transitions, states per second.

Part 2, mutations (the wrappers of tests/sim/test_mutations.py around the real ``decide``; no
watchdog device, which would reset the node a broken rule fails to fence):
the explorer searches breadth-first with the full menu until the first violation (at most
``--mutation-depth`` events) and reports the states and seconds it needed and the shortest
sequence; the random simulation runs the seeds of tests/sim/test_sim.py (600 simulated seconds
with random faults each, same parameters as there) until the first violation, at most
``--seeds`` seeds. Timings depend on the machine's load (reported, with the load average,
never asserted).

    /opt/pgha/venv/bin/python benchmarks/explore.py --depth 4 --mutation-depth 4 --seeds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.sim.cluster import InvariantViolation, Sim  # noqa: E402
from tests.sim.explore import SETUP, Explorer, Menu  # noqa: E402
from tests.sim.test_mutations import (  # noqa: E402
    key_names_every_standby,
    no_fail_closed,
    race_ignores_sync_key,
)

VARIANTS = {"async": "", "sync_on": "sync=on", "quorum": "sync=quorum"}

# name -> (the mutated decide, the explorer's cluster options, the random Sim's sync_mode)
MUTATIONS: dict[str, tuple[Callable[..., Any], str, str | None]] = {
    "no_fail_closed": (no_fail_closed, "", None),
    "sync_race_ignores_key": (race_ignores_sync_key, "sync=on", "on"),
    "sync_voter_joins_key_first": (key_names_every_standby, "sync=on", "on"),
}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def coverage(depth: int, max_states: int | None) -> dict[str, Any]:
    out = {}
    for name, opts in VARIANTS.items():
        report = Explorer(SETUP.format(opts=opts), Menu()).run(depth, max_states=max_states)
        out[name] = report.summary()
        print(f"{name:8} depth {report.depth_reached}: {report.distinct} distinct states "
              f"(per depth {report.per_depth}), {report.transitions} transitions, "
              f"{report.seconds:.1f} s, {out[name]['states_per_second']} states/s"
              + (f"  VIOLATION {report.violation}" if report.violation else ""), flush=True)
    return out


def random_seeds(fn: Callable[..., Any], sync_mode: str | None, cap: int) -> dict[str, Any]:
    """Seeds of tests/sim/test_sim.py's runs (same parameters) until the first violation."""
    started = time.perf_counter()
    for seed in range(cap):
        if sync_mode is None:
            fast = seed % 2 == 0
            sim = Sim(seed, n=3 + seed % 3, ttl=5.0 if fast else 10.0,
                      loop_wait=1.0 if fast else 2.0, decide_fn=fn, watchdog="off")
        else:
            sim = Sim(seed, n=3 + seed % 3, sync_mode=sync_mode, decide_fn=fn, watchdog="off")
        try:
            sim.run(until=600.0)
        except InvariantViolation as e:
            return {"found": True, "seeds": seed + 1, "seconds": round(
                time.perf_counter() - started, 2), "simulated_s": round(sim.now(), 1),
                "message": str(e).splitlines()[0]}
    return {"found": False, "seeds": cap, "seconds": round(time.perf_counter() - started, 2)}


def mutations(depth: int, cap: int, max_states: int | None) -> dict[str, Any]:
    out = {}
    for name, (fn, opts, sync_mode) in MUTATIONS.items():
        explorer = Explorer(SETUP.format(opts=opts), Menu(), decide_fn=fn, watchdog="off")
        report = explorer.run(depth, max_states=max_states)
        found = report.violation
        rnd = random_seeds(fn, sync_mode, cap)
        out[name] = {"explorer": report.summary(), "random": rnd}
        print(f"{name}: explorer {'found' if found else 'did not find'} it after "
              f"{report.distinct} states / {report.transitions} transitions, "
              f"{report.seconds:.1f} s: {list(found.events) if found else '-'}; random: "
              f"{'seed ' + str(rnd['seeds']) if rnd['found'] else 'not in ' + str(cap)} "
              f"seeds, {rnd['seconds']} s", flush=True)
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| cluster | depth | distinct states (per depth) | transitions | s | states/s |",
             "|---|---:|---|---:|---:|---:|"]
    for name, r in result["coverage"].items():
        lines.append(f"| {name} | {r['depth_reached']} | {r['distinct_states']} "
                     f"({', '.join(map(str, r['per_depth']))}) | {r['transitions']} | "
                     f"{r['seconds']} | {r['states_per_second']} |")
    lines += ["", "| mutation | explorer: states, transitions, s | shortest sequence | "
              "random: seeds, s |", "|---|---|---|---|"]
    for name, r in result["mutations"].items():
        e, rnd = r["explorer"], r["random"]
        seq = "; ".join(e["violation"]["events"]) if e["violation"] else "not found"
        seeds = f"{rnd['seeds']}, {rnd['seconds']}" if rnd["found"] else \
            f"none of {rnd['seeds']}, {rnd['seconds']}"
        lines.append(f"| {name} | {e['distinct_states']}, {e['transitions']}, {e['seconds']} "
                     f"| {seq} | {seeds} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--max-states", type=int, default=None,
                    help="stop a coverage run after this many distinct states")
    ap.add_argument("--mutation-depth", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=60, help="random seeds at most per mutation")
    ap.add_argument("--skip-coverage", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/explore.json")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {"setup": SETUP.strip().splitlines(), "menu": {
            "steps": list(Menu().steps), "kinds": sorted(Menu().kinds),
            "write": Menu().write, "fault_for": Menu().fault_for},
            "depth": args.depth, "max_states": args.max_states,
            "mutation_depth": args.mutation_depth, "seeds": args.seeds},
        "coverage": {} if args.skip_coverage else coverage(args.depth, args.max_states),
        "mutations": mutations(args.mutation_depth, args.seeds, None),
    }
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    violated = any(r["violation"] for r in result["coverage"].values())
    return 1 if violated else 0


if __name__ == "__main__":
    sys.exit(main())
