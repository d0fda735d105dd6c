"""A short seeded run of benchmarks/scale.py (2 pgha clusters on one etcd, 10 s idle): the
JSON it writes is complete and sane. No timing assertions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.support.etcd import etcd_available
from tests.support.postgres import postgres_available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not (etcd_available() and postgres_available()),
    reason="needs etcd and PostgreSQL (run as an unprivileged user)")]


def test_scale_bench_writes_sane_json(tmp_path: Path) -> None:
    from benchmarks.scale import main

    path = main(["--agent", "pgha", "--clusters", "2", "--seconds", "10", "--settle", "2",
                 "--out", str(tmp_path)])
    data = json.loads(path.read_text())
    window = data["window"]
    assert window["members"] == 6
    assert sorted(window["agents"]) == sorted(f"bench{c}/pg{m}" for c in range(2)
                                              for m in range(1, 4))
    for figures in window["agents"].values():
        assert figures["rss_mib"] > 0
        assert figures["threads"] >= 1
        assert figures["cpu_s"] >= 0
    assert sum(window["etcd"]["calls_by_method"].values()) > 0
    assert data["summary"]["etcd_calls_per_member_per_min"] > 0
    assert data["failover"]["new_leader"] != data["failover"]["old_leader"]
