"""Resident memory added by each module group the agent imports, in import order (a fresh
interpreter; /proc/self/status VmRSS, Linux only).

Run: ``PYTHONPATH=src python benchmarks/footprint_imports.py [module ...]``
"""

from __future__ import annotations

import importlib
import sys

GROUPS = ["ssl", "yaml", "pydantic", "aiohttp", "aiohttp.web", "asyncpg", "pgha.config",
          "pgha.pg.postgres", "pgha.agent.lifecycle", "pgha.api.server", "pgha.dcs.etcd"]


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(modules: list[str]) -> None:
    """Import ``modules`` one after the other, printing what each adds."""
    previous = rss_mib()
    print(f"{'python':28s} {previous:6.1f} MiB")
    for name in modules:
        importlib.import_module(name)
        now = rss_mib()
        print(f"+ {name:26s} {now - previous:6.1f} MiB  (total {now:.1f}, "
              f"{len(sys.modules)} modules)")
        previous = now


if __name__ == "__main__":
    main(sys.argv[1:] or GROUPS)
