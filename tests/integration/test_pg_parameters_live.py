"""PostgreSQL parameters judged against the real PostgreSQL 15 binary, end to end: three real
agents and a real etcd. A Patroni user's ``wal_keep_segments: 8`` in ``bootstrap.dcs`` brings
the cluster up (as ``wal_keep_size = 128MB``); ``PATCH /config`` refuses a value PostgreSQL
would reject and changes nothing; a bad value written straight into the DCS ``config`` key is
ignored with a warning by every member while a good one beside it is applied."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.cluster import dump_logs, http_get, new_cluster, psql, wait_healthy, wait_until

from pgha.cli.localcluster import LocalCluster, MemberProc
from pgha.config import load_config
from pgha.dcs.factory import open_kv
from pgha.dcs.store import ClusterStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARAMETERS = {"max_connections": 50, "shared_buffers": "32MB", "wal_keep_segments": 8}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = new_cluster(tmp_path_factory.mktemp("params") / "c",
                    postgresql={"parameters": PARAMETERS})
    with c:
        c.start_all(stagger=0.3)
        try:
            wait_healthy(c)
            yield c
        except BaseException:
            dump_logs(c)
            raise


def call(m: MemberProc, method: str, path: str, body: Any) -> tuple[int, str]:
    req = urllib.request.Request(f"{m.api}{path}", data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def dcs_config(m: MemberProc) -> dict[str, Any]:
    code, body = http_get(f"{m.api}/config")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def write_dcs_config(m: MemberProc, change: dict[str, Any]) -> None:
    """Merge ``change`` into ``postgresql.parameters`` of the DCS ``config`` key directly,
    bypassing the REST API and its checks (as another tool would)."""

    async def write() -> None:
        config = load_config(m.config_path, env={})
        async with open_kv(config, ttl=30, timeout=5) as kv:
            store = ClusterStore(kv, config.namespace, config.scope, "outsider")
            current, revision = await store.read_config()
            assert current is not None
            current["postgresql"]["parameters"].update(change)
            assert await store.write_config(current, if_revision=revision)

    asyncio.run(write())


def test_wal_keep_segments_brings_up_three_streaming_members(cluster: LocalCluster) -> None:
    wait_healthy(cluster)
    for m in cluster.procs.values():
        assert psql(m, "SHOW wal_keep_size") == "128MB", m.name
        conf = (m.data_dir / "postgresql.conf").read_text()
        assert "wal_keep_segments" not in conf and "wal_keep_size = '128MB'" in conf
    # the DCS keeps what the user wrote, each member translates it for its own major
    params = dcs_config(next(iter(cluster.procs.values())))["postgresql"]["parameters"]
    assert params["wal_keep_segments"] == 8


def test_patch_config_with_a_bad_value_answers_400_and_changes_nothing(
        cluster: LocalCluster) -> None:
    m = next(iter(cluster.procs.values()))
    before = dcs_config(m)
    code, text = call(m, "PATCH", "/config", {"postgresql": {"parameters": {
        "work_mem": "8MB", "checkpoint_timeout": "5 fortnights"}}})
    assert code == 400, text
    assert "postgresql.parameters.checkpoint_timeout" in text
    assert dcs_config(m) == before
    code, text = call(m, "PATCH", "/config", {"postgresql": {"parameters": {
        "huge_pages": "sometimes"}}})
    assert code == 400 and "postgresql.parameters.huge_pages" in text, text
    assert dcs_config(m) == before


def test_a_bad_value_in_the_dcs_is_ignored_while_a_good_one_is_applied(
        cluster: LocalCluster) -> None:
    first = next(iter(cluster.procs.values()))
    write_dcs_config(first, {"work_mem": "9MB", "maintenance_work_mem": "a lot"})
    for m in cluster.procs.values():
        wait_until(lambda m=m: psql(m, "SHOW work_mem") == "9MB", 60, f"work_mem on {m.name}")
        assert psql(m, "SHOW maintenance_work_mem") == "64MB"  # the default, unchanged
        wait_until(lambda m=m: "maintenance_work_mem = 'a lot' (expected an integer)"
                   in m.log_path.read_text(errors="replace"), 30, f"warning by {m.name}")
    wait_healthy(cluster)
    # a member restarted with the bad value in the DCS still starts
    name = next(n for n, m in cluster.procs.items() if psql(m, "SELECT pg_is_in_recovery()")
                == "t")
    cluster.stop(name)
    cluster.start(name)
    wait_healthy(cluster)
    assert psql(cluster.procs[name], "SHOW work_mem") == "9MB"
