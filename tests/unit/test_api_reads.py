"""REST API reads: /history, /config, /cluster extras, /openapi.json (generated from the route
table, checked against the live router), and the per-status JSON cache."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from tests.unit.api_support import (
    HISTORY,
    Source,
    api,
    call,
    cluster_view,
    primary_status,
    replica_status,
)

from pgha.api.openapi import build_openapi
from pgha.api.routes import ROUTES, responses_of
from pgha.api.server import build_app
from pgha.core.status import AgentStatus

# --------------------------------------------------------------------------- /history


async def test_history_lists_timeline_switches() -> None:
    status = replica_status(view=cluster_view(history=HISTORY))
    code, body = await call(status, "/history")
    assert code == 200
    assert json.loads(body) == [
        [1, 0x3000060, "no recovery target specified", "2024-06-01T10:00:00+00:00", "pg1"],
        [2, 0x4000000, "switchover", "2024-06-02T11:00:00+00:00", "pg2"],
    ]


async def test_history_attaches_what_this_member_discarded() -> None:
    """Patroni's five elements stay as they are; a sixth (an object) only on the rows of
    timelines this member discarded WAL of."""
    status = replica_status(view=cluster_view(history=HISTORY))
    report = {"member": "pg3", "timeline": 1, "from_lsn": "0/3000060", "to_lsn": "0/3001000",
              "bytes": 4000, "transactions": [{"xid": 740, "status": "committed"}]}
    elsewhere = {**report, "timeline": 7}  # its row was trimmed from the DCS history
    source = Source(status, discarded=[report, elsewhere])
    async with api(source) as client:
        resp = await client.get("/history")
        body = await resp.json()
    assert body == [
        [1, 0x3000060, "no recovery target specified", "2024-06-01T10:00:00+00:00", "pg1",
         {"discarded": [report]}],
        [2, 0x4000000, "switchover", "2024-06-02T11:00:00+00:00", "pg2"],
    ]
    # a client that indexes the five fields it knows reads every row as before
    assert [row[:5] for row in body] == json.loads((await call(status, "/history"))[1])


@pytest.mark.parametrize("status", [replica_status(), replica_status(view=None)],
                         ids=["no-history", "no-view"])
async def test_history_empty(status: AgentStatus) -> None:
    assert await call(status, "/history") == (200, b"[]")


# --------------------------------------------------------------------------- /config


async def test_config_is_the_raw_dcs_config() -> None:
    config = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}},
              "custom_key": [1, 2]}
    code, body = await call(primary_status(view=cluster_view(config=config)), "/config")
    assert code == 200
    assert json.loads(body) == config


@pytest.mark.parametrize("status", [primary_status(), primary_status(view=None)],
                         ids=["no-config-key", "no-view"])
async def test_config_502_without_a_config(status: AgentStatus) -> None:
    code, body = await call(status, "/config")
    assert code == 502
    assert b"no configuration" in body


# --------------------------------------------------------------------------- /cluster


async def test_cluster_scheduled_switchover() -> None:
    failover = {"leader": "pg1", "member": "pg2", "scheduled_at": "2030-01-01T03:00:00+00:00"}
    _, body = await call(replica_status(view=cluster_view(failover=failover)), "/cluster")
    assert json.loads(body)["scheduled_switchover"] == {
        "at": "2030-01-01T03:00:00+00:00", "from": "pg1", "to": "pg2"}


@pytest.mark.parametrize("failover", [None, {"leader": "pg1", "member": "pg2"}],
                         ids=["none", "immediate"])
async def test_cluster_without_scheduled_switchover(failover: dict[str, Any] | None) -> None:
    _, body = await call(replica_status(view=cluster_view(failover=failover)), "/cluster")
    assert "scheduled_switchover" not in json.loads(body)


async def test_cluster_switchover_scheduled_without_candidate_has_no_to() -> None:
    failover = {"leader": "pg1", "scheduled_at": "2030-01-01T03:00:00+00:00"}
    _, body = await call(replica_status(view=cluster_view(failover=failover)), "/cluster")
    assert json.loads(body)["scheduled_switchover"] == {
        "at": "2030-01-01T03:00:00+00:00", "from": "pg1"}


async def test_cluster_pending_and_scheduled_restart() -> None:
    view = cluster_view()
    view = replace(view, members={**view.members,
                                  "pg3": replace(view.members["pg3"], pending_restart=True)})
    schedule = {"schedule": "2030-01-01T03:00:00+00:00", "postmaster_start_time": "x"}
    status = replica_status(view=view, scheduled_restart=schedule)
    _, body = await call(status, "/cluster")
    members = {m["name"]: m for m in json.loads(body)["members"]}
    assert [members[n]["pending_restart"] for n in ("pg1", "pg2", "pg3")] == [False, False, True]
    assert members["pg2"]["scheduled_restart"] == schedule  # this member's own
    assert "scheduled_restart" not in members["pg1"]


async def test_patroni_pending_and_scheduled_restart() -> None:
    status = primary_status(pending_restart=True,
                            pending_restart_reason={"shared_buffers": {
                                "old_value": "128MB", "new_value": "256MB"}},
                            scheduled_restart={"schedule": "2030-01-01T03:00:00+00:00"})
    _, body = await call(status, "/patroni")
    data = json.loads(body)
    assert data["pending_restart"] is True
    assert data["pending_restart_reason"]["shared_buffers"]["new_value"] == "256MB"
    assert data["scheduled_restart"] == {"schedule": "2030-01-01T03:00:00+00:00"}
    assert status.to_member_json()["pending_restart"] is True


# --------------------------------------------------------------------------- /openapi.json


def router_operations(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for resource in app.router.resources():
        path = resource.canonical
        if "{" in path:
            continue  # the catch-all for unknown paths
        for route in resource:
            out.add((route.method.lower(), path))
    return out


async def test_openapi_document_served_and_describes_every_route() -> None:
    async with api(Source(primary_status())) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        doc = await resp.json()
    assert doc == build_openapi()
    assert doc["openapi"].startswith("3.0")
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert documented == router_operations(build_app(Source(primary_status())))


def test_openapi_lists_every_code_of_the_table() -> None:
    doc = build_openapi()
    for route in ROUTES:
        for path in route.paths:
            op = doc["paths"][path][route.method.lower()]
            assert set(op["responses"]) == {str(c) for c in responses_of(route)}
            assert ("requestBody" in op) == (route.body is not None)
            if route.unsafe:
                assert {"401", "403"} <= set(op["responses"])
            if route.body is not None:
                assert "400" in op["responses"]


def test_openapi_operation_ids_are_unique_and_refs_resolve() -> None:
    doc = build_openapi()
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    text = json.dumps(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text
    refs = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs <= set(doc["components"]["schemas"])


def test_openapi_documents_the_filters() -> None:
    doc = build_openapi()
    names = {p["name"] for p in doc["paths"]["/replica"]["get"]["parameters"]}
    assert names == {"lag", "tags", "replication_state"}
    names = {p["name"] for p in doc["paths"]["/readiness"]["get"]["parameters"]}
    assert names == {"lag", "mode"}
    body = doc["paths"]["/switchover"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["leader"]


# --------------------------------------------------------------------------- status JSON cache


async def test_status_json_is_serialized_once_per_status_object(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = AgentStatus.to_patroni_json

    def counting(self: AgentStatus) -> dict[str, Any]:
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(AgentStatus, "to_patroni_json", counting)
    source = Source(primary_status())
    async with api(source) as client:
        bodies = [await (await client.get(p)).read()
                  for p in ("/primary", "/replica", "/patroni", "/health", "/nothing")]
        assert len(set(bodies)) == 1
        assert calls == ["pg1"]
        source.status = replace(source.status, holds_lock=False)  # a new snapshot
        resp = await client.get("/primary")
        assert resp.status == 503
        assert json.loads(await resp.read())["pgha"]["holds_lock"] is False
        assert calls == ["pg1", "pg1"]


def test_cluster_reports_receive_and_replay_positions() -> None:
    from pgha.api.cluster import cluster_json
    from pgha.core.model import ClusterView, Leader, Member
    from pgha.dcs.codec import member_from_json, member_to_json

    head = 0x3000000
    replica = member_from_json("pg2", {"conn_url": "postgres://h2:5432/postgres",
                                       "role": "replica", "state": "running",
                                       "xlog_location": head - 100, "receive_lsn": head - 100,
                                       "replay_lsn": head - 4096})
    assert member_to_json(replica)["replay_lsn"] == head - 4096
    view = ClusterView(leader=Leader("pg1"), members={
        "pg1": Member("pg1", role="primary", state="running", xlog_location=head),
        "pg2": replica, "pg3": Member("pg3")})
    items = {m["name"]: m for m in cluster_json(view, "demo")["members"]}
    assert items["pg2"]["receive_lsn"] == "0/2FFFF9C" and items["pg2"]["receive_lag"] == 100
    assert items["pg2"]["replay_lsn"] == "0/2FFF000" and items["pg2"]["replay_lag"] == 4096
    assert items["pg3"]["replay_lag"] == "unknown"
    assert "receive_lsn" not in items["pg1"]
