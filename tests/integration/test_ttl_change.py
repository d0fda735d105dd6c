"""End to end: a ``ttl`` change (PATCH /config) on a running three-member cluster on etcd
reaches every member's real etcd lease, and the leader stays leader (no failover, no
demotion) while its leader key moves to the new lease.

No timing is asserted; waits only bound how long the test may take.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aetcd
import pytest
from tests.support.cluster import (
    primary_of,
    running_cluster,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

PREFIX = "/service/demo/"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "c", request) as c:
        yield c


def leases(cluster: LocalCluster) -> dict[str, tuple[str, int, int]]:
    """Key (``leader``, ``members/<name>``) -> (value, lease id, the lease's granted TTL)."""

    async def read() -> dict[str, tuple[str, int, int]]:
        assert cluster.etcd is not None
        host, port = cluster.etcd.endpoint.split(":")
        async with aetcd.Client(host, int(port), timeout=5) as client:
            result = await client.get_prefix(PREFIX.encode())
            out: dict[str, tuple[str, int, int]] = {}
            for kv in result.kvs:
                key = bytes(kv.key).decode()[len(PREFIX):]
                if key == "leader" or key.startswith("members/"):
                    lease = int(kv.lease)
                    granted = int((await client.get_lease_info(lease)).grantedTTL) if lease else 0
                    out[key] = (bytes(kv.value).decode()[:40], lease, granted)
            return out

    return asyncio.run(read())


def patch_config(m: MemberProc, body: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{m.api}/config", data=json.dumps(body).encode(),
                                 method="PATCH", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def test_ttl_change_reaches_the_leases_without_a_failover(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    timeline = status(leader)["timeline"]
    before = leases(cluster)
    assert before["leader"][0] == leader.name and before["leader"][2] == 4  # floor(5 - 0.5)

    other_primaries: list[str] = []
    for ttl, granted in ((12, 11), (6, 5)):
        patch_config(leader, {"ttl": ttl})

        def followed(granted: int = granted) -> dict[str, tuple[str, int, int]] | None:
            primary = primary_of(cluster)
            if primary is not None and primary is not leader:
                other_primaries.append(primary.name)
            now = leases(cluster)
            keys = ["leader", *(f"members/{n}" for n in cluster.procs)]
            if all(k in now and now[k][2] == granted for k in keys):
                return now
            return None

        after = wait_until(followed, 60, f"every lease granted for ttl {ttl}")
        assert after["leader"][0] == leader.name
        assert after["leader"][1] == after[f"members/{leader.name}"][1]  # one session
        assert after["leader"][1] != before["leader"][1]
        before = after

    assert other_primaries == []
    st = status(leader)
    assert st["role"] == "primary" and st["timeline"] == timeline  # no failover happened
    log = dict(cluster.iter_logs())[leader.name]
    assert "DCS session renewed with ttl 12 (was 5)" in log
    assert "DCS session renewed with ttl 6 (was 12)" in log
    # the leader never saw its key bound to another session, nor demoted
    for bad in ("decision leader_rebind", "decision lease_unconfirmed", "Demote"):
        assert bad not in log, bad
