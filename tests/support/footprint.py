"""Footprint sampling for the idle and scale benchmarks: one process's RSS, threads and CPU
time from /proc, and etcd's Prometheus counters and latency histogram from its ``/metrics``.

Contracts: :func:`proc_sample` reads one process only (no children); CPU seconds are
utime + stime. :func:`scrape_etcd` returns the raw samples needed by :func:`grpc_calls` (calls
handled per gRPC method, ``grpc_server_handled_total``) and :func:`unary_p99` (the 99th
percentile of ``grpc_server_handling_seconds`` over unary calls; the histogram exists only
when etcd runs with ``--metrics extensive``). Streams (Watch, LeaseKeepAlive) count once per
stream opened and closed, not per message: their message counts are given separately from
``grpc_server_msg_received_total``.
"""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ProcSample:
    rss_mib: float
    threads: int
    cpu_s: float


def proc_sample(pid: int) -> ProcSample:
    """VmRSS and Threads of ``/proc/PID/status``, utime+stime of ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"].strip())
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    after = stat.rsplit(")", 1)[1].split()
    # fields 14 and 15 of stat(5); after[0] is field 3
    cpu = (int(after[11]) + int(after[12])) / _TICK
    return ProcSample(round(rss_kib / 1024, 1), threads, cpu)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_etcd(client_url: str, timeout: float = 5.0) -> Samples:
    """Every ``grpc_server_*`` sample of etcd's ``/metrics``: (name, labels) -> value."""
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for line in text.splitlines():
        if not line.startswith("grpc_server_"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def _by_method(before: Samples, after: Samples, name: str) -> dict[str, int]:
    calls: dict[str, int] = {}
    for (metric, labels), value in after.items():
        if metric != name:
            continue
        delta = value - before.get((metric, labels), 0.0)
        method = dict(labels).get("grpc_method", "?")
        calls[method] = calls.get(method, 0) + round(delta)
    return {k: v for k, v in sorted(calls.items()) if v}


def grpc_calls(before: Samples, after: Samples) -> dict[str, int]:
    """Calls handled (finished) per gRPC method between two scrapes."""
    return _by_method(before, after, "grpc_server_handled_total")


def grpc_messages(before: Samples, after: Samples) -> dict[str, int]:
    """Messages received per gRPC method between two scrapes (counts stream messages such as
    each lease keep-alive)."""
    return _by_method(before, after, "grpc_server_msg_received_total")


def grpc_messages_sent(before: Samples, after: Samples) -> dict[str, int]:
    """Messages sent per gRPC method between two scrapes (e.g. watch responses delivered on
    streams opened before the window, which ``grpc_calls`` does not see)."""
    return _by_method(before, after, "grpc_server_msg_sent_total")


def unary_p99(before: Samples, after: Samples, q: float = 0.99) -> float | None:
    """The ``q`` quantile (upper bucket bound, seconds) of unary call handling time between
    two scrapes; None without the histogram or without calls."""
    buckets: dict[float, float] = {}
    for (metric, labels), value in after.items():
        lab = dict(labels)
        if metric != "grpc_server_handling_seconds_bucket" or lab.get("grpc_type") != "unary":
            continue
        le = float(lab["le"])
        buckets[le] = buckets.get(le, 0.0) + value - before.get((metric, labels), 0.0)
    if not buckets:
        return None
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None
