"""Median wall time of ``pgha list`` / ``pgha --help`` against ``patronictl`` (interleaved runs).

Run: ``python benchmarks/cli_startup.py CTL_CONFIG [RUNS]`` from the repository root; CTL_CONFIG
names a DCS both tools can read (e.g. ``scope: x`` and ``etcd3: {hosts: 127.0.0.1:2379}``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PGHA = [sys.executable, "-m", "pgha.cli.entry"]
PATRONICTL = os.environ.get("PATRONICTL", "/opt/pgha/patroni-venv/bin/patronictl")


def main(config: str, runs: int) -> None:
    """Print the median and minimum wall time of each command over ``runs`` runs."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    commands = {
        "pgha list": [*PGHA, "-c", config, "list"],
        "patronictl list": [PATRONICTL, "-c", config, "list"],
        "pgha --help": [*PGHA, "--help"],
        "patronictl --help": [PATRONICTL, "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:18s} median {statistics.median(values):.3f} s  min {min(values):.3f} s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 9)
