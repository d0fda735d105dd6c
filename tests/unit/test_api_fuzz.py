"""Property-based fuzzing of the REST API from its own OpenAPI document.

Every operation of ``/openapi.json`` is called with query parameters and bodies generated from
its schemas (valid ones, arbitrary JSON and raw bytes) against the in-process app, over a set of
statuses, with the fake agent answering a documented outcome. Properties: every answer's code is
documented for that operation; a 5xx only ever comes from the agent's scripted outcome or is a
documented read answer (503 of a failing health check, 502 without config/failsafe); a 400
submits nothing; HEAD and OPTIONS answer without a body. Bounded by ``max_examples``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tests.unit.api_support import (
    HISTORY,
    STOPPED,
    Source,
    cluster_view,
    primary_status,
    replica_status,
    with_pg,
)

from pgha.api.openapi import build_openapi, operation_id
from pgha.api.routes import ROUTES, Route
from pgha.api.server import build_app
from pgha.core.commands import Outcome
from pgha.core.model import HaSettings

DOC = build_openapi()
OPERATIONS = sorted((path, method.upper(), op) for path, item in DOC["paths"].items()
                    for method, op in item.items())
ROUTE_OF: dict[str, Route] = {
    operation_id(m, p): r for r in ROUTES for p in r.paths
    for m in ((r.method, "HEAD", "OPTIONS") if r.method == "GET" else (r.method,))}

STATUSES = [
    primary_status(view=cluster_view(config={"ttl": 30, "synchronous_mode": True},
                                     sync={"leader": "pg1", "sync_standby": "pg2"},
                                     history=HISTORY)),
    replica_status(view=cluster_view(config={"ttl": 30, "failsafe_mode": True},
                                     failsafe={"pg1": "http://10.0.0.1:8008/patroni"},
                                     failover={"leader": "pg1",
                                               "scheduled_at": "2099-01-01T00:00:00Z"})),
    replica_status(view=replace(cluster_view(), settings=HaSettings(failsafe_mode=True))),
    with_pg(primary_status(), **STOPPED),
    replica_status(view=None),
]

def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for the JSON-schema subset the route table uses (object with properties
    and required keys, string with enum/pattern/minLength/date-time, boolean, number with
    exclusiveMinimum, oneOf); any JSON value for anything else."""
    if "oneOf" in schema:
        return st.one_of(*(from_schema(s) for s in schema["oneOf"]))
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "boolean":
        return st.booleans()
    if kind == "number":
        low = schema.get("exclusiveMinimum")
        return st.floats(min_value=low, exclude_min=low is not None, allow_nan=False,
                         allow_infinity=False)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=10)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {k: from_schema(v) for k, v in props.items() if k in required}
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    return json_values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)


def _param_values(param: dict[str, Any]) -> st.SearchStrategy[list[tuple[str, str]]]:
    if param["name"] == "tags":
        return st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6),
                               max_size=2).map(lambda d: [(f"tag_{k}", v) for k, v in d.items()])
    values = from_schema(param["schema"]) | st.text(max_size=10)
    return values.map(lambda v: [(param["name"], str(v))])


def _query(op: dict[str, Any]) -> st.SearchStrategy[list[tuple[str, str]]]:
    parts = [st.one_of(st.just([]), _param_values(p)) for p in op.get("parameters", [])]
    return st.tuples(*parts).map(lambda lists: [kv for part in lists for kv in part])


def _body(op: dict[str, Any]) -> st.SearchStrategy[bytes]:
    arbitrary = st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                          st.binary(max_size=24), st.just(b""))
    body = op.get("requestBody")
    if body is None:
        return arbitrary
    schema = body["content"]["application/json"]["schema"]
    valid = from_schema(schema).map(lambda v: json.dumps(v).encode())
    return st.one_of(valid, valid, arbitrary)


def _outcome(route: Route) -> st.SearchStrategy[Outcome]:
    codes = sorted(c for c in route.responses if c not in (400, 401, 403))
    return st.builds(Outcome, st.sampled_from(codes), st.text(max_size=10),
                     st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                          st.integers(), max_size=2)))


AppClient = tuple[asyncio.AbstractEventLoop, TestClient[Any, Any], Source]
Request = tuple[str, str, dict[str, Any], list[tuple[str, str]], bytes, Outcome]
READS = [o for o in OPERATIONS if o[1] in ("GET", "HEAD", "OPTIONS")]
WRITES = [o for o in OPERATIONS if o[1] not in ("GET", "HEAD", "OPTIONS")]


def requests(operations: list[tuple[str, str, dict[str, Any]]]) -> st.SearchStrategy[Request]:
    @st.composite
    def draw_request(draw: st.DrawFn) -> Request:
        path, method, op = draw(st.sampled_from(operations))
        route = ROUTE_OF[op["operationId"]]
        return path, method, op, draw(_query(op)), draw(_body(op)), draw(_outcome(route))

    return draw_request()


@pytest.fixture(scope="module")
def app_client() -> Iterator[AppClient]:
    loop = asyncio.new_event_loop()
    source = Source(STATUSES[0])
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(source)), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield loop, client, source
    finally:
        loop.run_until_complete(client.close())
        loop.close()


FUZZ = settings(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_answer(app_client: AppClient, request: Request, status_index: int) -> None:
    """Send ``request`` with status ``status_index`` and the scripted outcome; assert the
    properties of the module docstring."""
    loop, client, source = app_client
    path, method, op, query, body, outcome = request
    source.status = STATUSES[status_index]
    source.default = outcome
    source.failsafe_answer = (outcome.code if outcome.code in (200, 500, 502) else 200, "x")
    source.commands.clear()
    source.failsafe_calls.clear()

    async def run() -> tuple[int, bytes]:
        resp = await client.request(method, path, params=query, data=body)
        return resp.status, await resp.read()

    code, payload = loop.run_until_complete(run())
    submitted = bool(source.commands or source.failsafe_calls)
    event(f"{method} {code}{' submitted' if submitted else ''}")
    documented = {int(c) for c in op["responses"]}
    assert code in documented, (method, path, query, body, code, payload[:200])
    route = ROUTE_OF[op["operationId"]]
    if code >= 500:
        scripted = submitted and code in (outcome.code, source.failsafe_answer[0])
        read_answer = not route.unsafe and code in route.responses
        assert scripted or read_answer, (method, path, body, code, payload[:200])
    if code == 400:
        assert not submitted
    if method in ("HEAD", "OPTIONS"):
        assert payload == b""


@settings(FUZZ, max_examples=150)
@given(request=requests(READS), status_index=st.integers(0, len(STATUSES) - 1))
def test_reads_answer_only_documented_codes(app_client: AppClient, request: Request,
                                            status_index: int) -> None:
    check_answer(app_client, request, status_index)


@settings(FUZZ, max_examples=300)
@given(request=requests(WRITES), status_index=st.integers(0, len(STATUSES) - 1))
def test_writes_answer_only_documented_codes(app_client: AppClient, request: Request,
                                             status_index: int) -> None:
    check_answer(app_client, request, status_index)
