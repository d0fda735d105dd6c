"""Idle DCS request rate: a fresh three-member cluster on its own etcd, left idle; the etcd
requests of the whole cluster over a window, per gRPC method, from the deltas of etcd's
``grpc_server_handled_total`` (its /metrics on the client URL), divided per member per minute.
A LeaseKeepAlive is a stream message: etcd counts it in ``grpc_server_msg_received_total``.

Run as an unprivileged user (PostgreSQL refuses root), for example:
    runuser -u postgres -- /opt/pgha/venv/bin/python benchmarks/dcs_requests.py --ttl 20 \
        --loop-wait 2 --retry-timeout 3 --window 60
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.cluster import new_cluster, wait_healthy

_SAMPLE = re.compile(r'^(grpc_server_handled_total|grpc_server_msg_received_total)\{([^}]*)\}'
                     r'\s+([0-9.e+]+)$')


def counts(endpoint: str) -> dict[str, float]:
    """``method`` -> requests (unary: handled calls; streams: messages received)."""
    with urllib.request.urlopen(endpoint.rstrip("/") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in m.group(2).split(","))
        method = labels.get("grpc_method", "").strip('"')
        stream = labels.get("grpc_type", "").strip('"') != "unary"
        if (m.group(1) == "grpc_server_msg_received_total") == stream:
            out[method] = out.get(method, 0.0) + float(m.group(3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ttl", type=float, default=20)
    ap.add_argument("--loop-wait", type=float, default=2)
    ap.add_argument("--retry-timeout", type=float, default=3)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--settle", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = new_cluster(Path(tmp), ttl=args.ttl, loop_wait=args.loop_wait,
                              retry_timeout=args.retry_timeout)
        with cluster:
            cluster.start_all(stagger=0.3)
            wait_healthy(cluster, timeout=180)
            time.sleep(args.settle)
            assert cluster.etcd is not None
            endpoint = "http://" + cluster.etcd.endpoint
            before = counts(endpoint)
            time.sleep(args.window)
            after = counts(endpoint)
    scale = 60.0 / args.window / 3
    per = {k: round((after[k] - before.get(k, 0.0)) * scale, 1) for k in after
           if after[k] - before.get(k, 0.0) > 0}
    print(json.dumps({"per_member_per_minute": per,
                      "total": round(sum(per.values()), 1)}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
