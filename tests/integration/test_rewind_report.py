"""End to end, real PostgreSQL 15 and real agents: a leader writes transactions its replicas
never receive (its WAL senders are stopped), dies, a replica takes over, and the old leader is
rewound when it comes back. The report of what the rewind threw away must name exactly those
transactions (by xid) with their row counts on the table, survive an agent restart, and show
in ``GET /history`` and ``pgha history -e``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import (
    SRC,
    http_get,
    primary_of,
    psql,
    running_cluster,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc
from pgha.pg.waldump import committed_xids, format_lsn, reports_in_history

pytestmark = pytest.mark.integration

TABLE = "postgres/public.bench"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request) as c:
        yield c


def xid_of(member: MemberProc, sql: str) -> int:
    """Run ``sql`` (one statement) in its own transaction; its xid."""
    out = psql(member, f"WITH w AS ({sql} RETURNING 1) "
                       "SELECT pg_current_xact_id() FROM w LIMIT 1")
    return int(out) % (1 << 32)


def reports_of(member: MemberProc) -> list[dict[str, Any]]:
    code, body = http_get(f"{member.api}/history")
    assert code == 200 and isinstance(body, list)
    return reports_in_history(body)


def test_rewound_leader_reports_the_transactions_it_lost(cluster: LocalCluster) -> None:
    old = wait_healthy(cluster)
    psql(old, "CREATE TABLE bench (id int PRIMARY KEY, v text) "
              "WITH (autovacuum_enabled = off)")
    psql(old, "INSERT INTO bench VALUES (1, 'common')")
    replicas = [m for m in cluster.procs.values() if m is not old]
    for m in replicas:
        wait_until(lambda m=m: psql(m, "SELECT count(*) FROM bench") == "1", 30,
                   f"bench on {m.name}")

    # the replicas receive nothing from now on: the leader's WAL senders are stopped
    senders = [int(p) for p in psql(old, "SELECT pid FROM pg_stat_replication").split()]
    assert len(senders) == len(replicas)
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    try:
        # an abort record is not flushed: the commits after it make sure it is on disk
        aborted = psql(old, "BEGIN; INSERT INTO bench VALUES (12, 'rolled back'); "
                            "SELECT pg_current_xact_id(); ROLLBACK")
        lost = {
            xid_of(old, "INSERT INTO bench VALUES (10, 'lost'), (11, 'lost')"),
            xid_of(old, "UPDATE bench SET v = 'changed' WHERE id = 1"),
            xid_of(old, "DELETE FROM bench WHERE id = 10"),
        }
        for m in replicas:
            assert psql(m, "SELECT count(*) FROM bench") == "1"
        cluster.kill_node(old.name)
    finally:
        for pid in senders:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert len(lost) == 3

    new = wait_until(lambda: (p := primary_of(cluster)) is not None and p is not old and p,
                     90, "a new primary")
    psql(new, "INSERT INTO bench VALUES (100, 'after failover')")

    cluster.start(old.name)
    wait_until(lambda: status(old).get("role") == "replica"
               and status(old).get("state") == "running", 120, "the old leader rewound")
    wait_until(lambda: psql(old, "SELECT count(*) FROM bench") == "2", 60, "rewound data")
    assert "pg_rewind from" in old.log_path.read_text()

    reports = wait_until(lambda: reports_of(old), 30, "the report in GET /history")
    assert len(reports) == 1
    report = reports[0]
    assert (report["member"], report["timeline"], report["method"], report["leader"]) == (
        old.name, 1, "rewind", new.name)
    assert report["complete"], report["reason"]
    # the divergence point is where the DCS history says timeline 1 ended
    code, rows = http_get(f"{old.api}/history")
    assert code == 200
    row = next(r for r in rows if r[0] == 1)
    assert report["from_lsn"] == format_lsn(row[1])
    assert report["bytes"] > 0

    on_bench = {tx["xid"]: tx for tx in report["transactions"] if TABLE in tx["relations"]}
    committed = {x for x, tx in on_bench.items() if tx["status"] == "committed"}
    assert committed == lost
    assert lost <= committed_xids(report)
    assert on_bench[int(aborted) % (1 << 32)]["status"] == "aborted"
    rows_by_op: dict[str, int] = {}
    for xid in lost:
        for op, n in on_bench[xid]["relations"][TABLE].items():
            rows_by_op[op] = rows_by_op.get(op, 0) + n
    assert rows_by_op == {"insert": 2, "update": 1, "delete": 1}
    assert all(on_bench[x]["commit_time"] for x in lost)

    # kept beside the data directory; an agent restart serves it again
    kept = json.loads((old.data_dir.parent / f"{old.name}-pgha-discarded.json").read_text())
    assert kept == [report]
    cluster.stop(old.name)
    cluster.start(old.name)
    assert wait_until(lambda: reports_of(old), 60, "the report after a restart") == [report]

    out = subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(new.config_path), "history", "-e"],
        capture_output=True, text=True, timeout=60, check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}).stdout
    assert "Discarded" in out
    assert f"{old.name}: {report['from_lsn']}..{report['to_lsn']} ({report['bytes']} bytes), " \
           f"{report['counts']['committed']} committed transactions" in out
