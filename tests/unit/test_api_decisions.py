"""``GET /decisions``: the agent's decision records (real DecisionLog, real explanation), newest
last, ``?limit=N``, bad limits refused with one line; read-only like every GET; ``/history``
keeps Patroni's shape."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tests.unit.api_support import HISTORY, Source, api, primary_status, restapi
from tests.unit.test_core_race import race_view
from tests.unit.test_decide import MB, NOW, POS, local, replica_pg

from pgha.api.openapi import build_openapi
from pgha.core.decide import decide
from pgha.core.decision import Reason, decision
from pgha.core.explain import explain

T0 = 1_800_000_000.0


def source_with_records() -> Source:
    source = Source(primary_status())
    v = race_view()
    loc = local(replica_pg(wal_position=POS - 3 * MB), peers={"pg2": None, "pg3": None})
    refusal = decide(v, loc, NOW)
    for i in range(3):
        source.records.note(refusal, acted=False, wall=T0 + i, role="replica", timeline=1,
                            position=POS - 3 * MB, lag=3 * MB, leader=None,
                            standings=explain(v, loc, refusal))
    source.records.note(decision(Reason.REPLICA_HEALTHY, "streaming from pg2"), acted=False,
                        wall=T0 + 10, role="replica", timeline=2, position=POS, lag=0,
                        leader="pg2")
    return source


async def test_decisions_newest_last_with_inputs() -> None:
    async with api(source_with_records()) as client:
        resp = await client.get("/decisions")
        assert resp.status == 200 and resp.content_type == "application/json"
        data = await resp.json()
    assert [r["reason"] for r in data] == ["race_refused_lag", "replica_healthy"]
    refusal = data[0]
    assert refusal["count"] == 3 and refusal["lag"] == 3 * MB and refusal["leader"] is None
    assert refusal["time"].startswith("2027-01-15T08:00:00")
    assert [(s["name"], s["code"]) for s in refusal["standings"]] == [
        ("pg1", "lag"), ("pg2", "unreachable"), ("pg3", "unreachable")]
    assert refusal["standings"][0]["limit"] == MB
    assert refusal["standings"][0]["summary"] == "lag 3 MB > 1 MB"
    assert data[1]["standings"] == [] and data[1]["leader"] == "pg2"


@pytest.mark.parametrize(("limit", "reasons"), [
    ("1", ["replica_healthy"]), ("2", ["race_refused_lag", "replica_healthy"]),
    ("50", ["race_refused_lag", "replica_healthy"]), ("0", [])])
async def test_limit(limit: str, reasons: list[str]) -> None:
    async with api(source_with_records()) as client:
        resp = await client.get("/decisions", params={"limit": limit})
        assert resp.status == 200
        assert [r["reason"] for r in await resp.json()] == reasons


@pytest.mark.parametrize("limit", ["-1", "x", "1.5", "", "²"])
async def test_bad_limit_is_400_naming_the_parameter(limit: str) -> None:
    async with api(source_with_records()) as client:
        resp = await client.get("/decisions", params={"limit": limit})
        text = await resp.text()
    assert resp.status == 400
    assert text.startswith("limit: ") and "\n" not in text


async def test_decisions_is_a_read_open_like_the_other_gets() -> None:
    config = restapi(authentication={"username": "a", "password": "b"})
    async with api(source_with_records(), config) as client:
        resp = await client.get("/decisions")
        assert resp.status == 200
        # no write method on it: unknown methods answer like any unknown route
        assert (await client.post("/decisions")).status == 503


def test_openapi_describes_decisions() -> None:
    op = build_openapi()["paths"]["/decisions"]["get"]
    assert set(op["responses"]) == {"200", "400"}
    assert [p["name"] for p in op["parameters"]] == ["limit"]
    schema = build_openapi()["components"]["schemas"]["Decisions"]
    assert "standings" in schema["items"]["properties"]


async def test_history_keeps_patronis_shape() -> None:
    status = primary_status(view=replace(primary_status().view, history=HISTORY))
    source = Source(status, records=source_with_records().records)  # records change nothing
    async with api(source) as client:
        data = json.loads(await (await client.get("/history")).text())
    assert data == [[1, 0x3000060, "no recovery target specified",
                     "2024-06-01T10:00:00+00:00", "pg1"],
                    [2, 0x4000000, "switchover", "2024-06-02T11:00:00+00:00", "pg2"]]
