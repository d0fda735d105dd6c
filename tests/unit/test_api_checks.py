"""REST API health checks beyond /primary and /replica: standby leader, sync/async/quorum
(derived from a DCS ``sync`` key), replication_state filter, readiness modes, liveness, and
the HEAD/OPTIONS/GET contract of every health path."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
from tests.unit.api_support import (
    HEAD_POS,
    MB,
    STOPPED,
    call,
    cluster_view,
    code,
    primary_status,
    replica_status,
    with_pg,
)

from pgha.api.checks import HEALTH_CHECKS
from pgha.core.model import ClusterView, HaSettings, PgRole, SyncKey
from pgha.core.status import AgentStatus, sync_state


def synced(status: AgentStatus, standbys: Any = "pg2", mode: Any = True,
           leader: str = "pg1") -> AgentStatus:
    view = cluster_view(sync={"leader": leader, "sync_standby": standbys},
                        config={"synchronous_mode": mode})
    return replace(status, view=view)


# --------------------------------------------------------------------------- every path


@pytest.mark.parametrize("path", sorted(HEALTH_CHECKS))
@pytest.mark.parametrize("status", [primary_status(), replica_status(),
                                    with_pg(replica_status(), **STOPPED)],
                         ids=["primary", "replica", "stopped"])
async def test_every_health_path_answers_200_or_503_with_the_status_json(
        path: str, status: AgentStatus) -> None:
    code_, body = await call(status, path)
    assert code_ in (200, 503)
    assert json.loads(body)["patroni"]["name"] == status.name
    assert await call(status, path, "HEAD") == (code_, b"")
    assert await call(status, path, "OPTIONS") == (code_, b"")


# --------------------------------------------------------------------------- standby leader


@pytest.mark.parametrize("path", ["/standby-leader", "/standby_leader"])
@pytest.mark.parametrize("status", [primary_status(), replica_status(),
                                    replica_status(holds_lock=True)],
                         ids=["primary", "replica", "replica-with-lock-no-standby-cluster"])
async def test_standby_leader_503_without_a_standby_cluster(path: str,
                                                            status: AgentStatus) -> None:
    assert await code(status, path) == 503


async def test_standby_leader_200_in_a_standby_cluster_holding_the_lock() -> None:
    view = cluster_view(leader="pg2", config={"standby_cluster": {"host": "10.1.0.1"}})
    status = replica_status(holds_lock=True, view=view)
    assert await code(status, "/standby-leader") == 200
    assert await code(status, "/standby_leader") == 200
    assert await code(status, "/leader") == 200
    assert await code(status, "/primary") == 503
    assert await code(status, "/read-only") == 200
    assert await code(replica_status(view=view), "/standby-leader") == 503


# --------------------------------------------------------------------------- replication_state


@pytest.mark.parametrize(("query", "expected"), [
    ("replication_state=streaming", 200),
    ("replication_state=in%20archive%20recovery", 503),
    ("replication_state=", 503),
])
async def test_replica_replication_state_filter(query: str, expected: int) -> None:
    assert await code(replica_status(), f"/replica?{query}") == expected


async def test_replication_state_filter_archive_recovery() -> None:
    status = replica_status(pg_details={"replication_state": "in archive recovery"})
    assert await code(status, "/replica?replication_state=in%20archive%20recovery") == 200
    assert await code(status, "/replica?replication_state=streaming") == 503


# --------------------------------------------------------------------------- sync / async


def test_sync_state_is_unknown_without_a_sync_key_or_mode() -> None:
    assert sync_state(None) is None
    assert sync_state(cluster_view()) is None  # no sync key
    assert sync_state(synced(replica_status(), mode=False).view) is None
    assert sync_state(synced(replica_status(), leader="pg3").view) is None  # stale key
    assert sync_state(cluster_view(leader=None, sync={"leader": "pg1"})) is None


@pytest.mark.parametrize(("standbys", "mode", "names", "quorum"), [
    ("pg2", True, {"pg2"}, False),
    ("pg2, pg3", "on", {"pg2", "pg3"}, False),
    (["pg3"], True, {"pg3"}, False),
    ("pg1,pg2", "quorum", {"pg2"}, True),
    (None, True, set(), False),
])
def test_sync_state_parses_the_key(standbys: Any, mode: Any, names: set[str],
                                   quorum: bool) -> None:
    state = sync_state(synced(replica_status(), standbys, mode).view)
    assert state is not None
    assert (set(state.standbys), state.quorum) == (names, quorum)


@pytest.mark.parametrize(("status", "expected"), [
    (synced(replica_status()), {"/sync": 200, "/synchronous": 200, "/async": 503,
                                "/asynchronous": 503, "/read-only-sync": 200,
                                "/read-only-synchronous": 200, "/quorum": 503,
                                "/read-only-quorum": 503}),
    (synced(replica_status(), standbys="pg3"), {"/sync": 503, "/async": 200,
                                                "/read-only-sync": 503}),
    (replica_status(), {"/sync": 503, "/async": 200, "/read-only-sync": 503, "/quorum": 503}),
    (synced(replica_status(), mode="quorum"), {"/quorum": 200, "/read-only-quorum": 200,
                                               "/sync": 503, "/async": 503}),
    (synced(primary_status()), {"/sync": 503, "/async": 503, "/read-only-sync": 200,
                                "/read-only-quorum": 200}),
    (synced(with_pg(replica_status(), **STOPPED)), {"/sync": 503, "/async": 503,
                                                    "/read-only-sync": 503}),
], ids=["listed", "not-listed", "unknown", "quorum-voter", "primary", "listed-but-stopped"])
async def test_sync_checks(status: AgentStatus, expected: dict[str, int]) -> None:
    got = {path: await code(status, path) for path in expected}
    assert got == expected


async def test_sync_and_async_apply_the_replica_filters() -> None:
    status = synced(replica_status())
    assert await code(status, "/sync?lag=1MB") == 503  # 2 MB behind
    assert await code(status, "/sync?lag=4MB") == 200
    assert await code(replace(status, view=cluster_view()), "/async?lag=1MB") == 503
    assert await code(replace(status, view=cluster_view()), "/async?lag=4MB") == 200
    assert await code(status, "/sync?tag_zone=x") == 503


async def test_sync_standby_flags_in_patroni_and_cluster() -> None:
    _, body = await call(synced(replica_status()), "/patroni")
    assert json.loads(body)["sync_standby"] is True
    _, body = await call(synced(replica_status(), mode="quorum"), "/patroni")
    assert json.loads(body)["quorum_standby"] is True
    _, body = await call(replica_status(), "/patroni")
    assert "sync_standby" not in json.loads(body)
    _, body = await call(synced(replica_status(), standbys="pg2,pg3"), "/cluster")
    roles = {m["name"]: m["role"] for m in json.loads(body)["members"]}
    assert roles == {"pg1": "leader", "pg2": "sync_standby", "pg3": "sync_standby"}


def test_sync_key_as_decoded_by_the_store() -> None:
    config = {"synchronous_mode": True}
    view = ClusterView(leader=cluster_view().leader, members=cluster_view().members,
                       config=config, settings=HaSettings.from_config(config),
                       sync=SyncKey(leader="pg1", sync_standby=frozenset({"pg2"})))
    state = sync_state(view)
    assert state is not None and state.standbys == {"pg2"}


# --------------------------------------------------------------------------- readiness


def lagging(received: int, replayed: int, **kw: Any) -> AgentStatus:
    status = replica_status(wal=max(received, replayed), **kw)
    return replace(status, pg_details={
        "replication_state": "streaming",
        "xlog": {"received_location": received, "replayed_location": replayed}})


@pytest.mark.parametrize(("query", "expected"), [
    ("", 503),  # replay 4 MB behind > maximum_lag_on_failover (1 MB)
    ("mode=apply", 503),
    ("mode=write", 200),  # received only 0.5 MB behind
    ("lag=5MB", 200),
    ("lag=3MB", 503),
    ("lag=3MB&mode=write", 200),
    ("lag=100kB&mode=write", 503),
    ("mode=fast", 503),
    ("lag=garbage", 503),
])
async def test_readiness_modes_and_lag(query: str, expected: int) -> None:
    status = lagging(HEAD_POS - MB // 2, HEAD_POS - 4 * MB)
    assert await code(status, f"/readiness?{query}") == expected


@pytest.mark.parametrize(("status", "expected"), [
    (primary_status(), 200),
    (with_pg(primary_status(), **STOPPED), 503),
    (replica_status(wal=HEAD_POS), 200),
    (replica_status(wal=HEAD_POS, pg_details={"replication_state": "in archive recovery"}),
     503),
    (replica_status(wal=HEAD_POS, view=None), 503),
    (with_pg(replica_status(wal=HEAD_POS), role=PgRole.PRIMARY), 503),
], ids=["leader", "leader-pg-down", "streaming", "archive-recovery", "no-view",
        "primary-without-lock"])
async def test_readiness(status: AgentStatus, expected: int) -> None:
    assert await code(status, "/readiness") == expected


# --------------------------------------------------------------------------- liveness


@pytest.mark.parametrize(("holds_lock", "age", "pause", "expected"), [
    (True, 1.0, False, 200),
    (True, 31.0, False, 503),  # leader: within ttl (30 s)
    (False, 31.0, False, 200),  # replica: within 2 * ttl
    (False, 61.0, False, 503),
    (False, 1000.0, True, 200),  # paused
])
async def test_liveness(holds_lock: bool, age: float, pause: bool, expected: int) -> None:
    base = primary_status() if holds_lock else replica_status()
    view = replace(cluster_view(), settings=HaSettings(pause=pause))
    status = replace(base, view=view, heartbeat=time.monotonic() - age)
    assert await code(status, "/liveness") == expected
