"""The REST API fuzz run against a live agent (one member on real PostgreSQL 15 and etcd).

Requests are generated from ``/openapi.json`` as in ``tests/unit/test_api_fuzz.py`` (valid
bodies, arbitrary JSON and raw bytes; query parameters from their schemas), but answered by the
real agent: its decision loop, DCS and PostgreSQL. Properties: every answer's code is one the
document lists for that operation, no 500 unless documented, HEAD/OPTIONS have no body, and
the agent still serves a running PostgreSQL afterwards.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from tests.support.cluster import dump_logs, http_get, new_cluster, status, wait_until
from tests.unit.test_api_fuzz import READS, WRITES, Request, requests

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

LIVE = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemberProc]:
    base: Path = tmp_path_factory.mktemp("fuzz") / "c"
    cluster: LocalCluster = new_cluster(base, members=1)
    with cluster:
        cluster.start_all()
        m = cluster.procs["pg1"]
        try:
            wait_until(lambda: http_get(f"{m.api}/primary", timeout=1)[0] == 200, 120,
                       "a primary")
            yield m
            # the agent survived the run and still serves PostgreSQL
            wait_until(lambda: status(m).get("state") == "running", 120, "PostgreSQL running")
        except BaseException:
            dump_logs(cluster)
            raise


def send(m: MemberProc, request: Request) -> tuple[int, bytes]:
    path, method, _op, query, body, _outcome = request
    url = f"{m.api}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = body if method not in ("GET", "HEAD", "OPTIONS") else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def check(m: MemberProc, request: Request) -> None:
    path, method, op, query, body, _ = request
    code, payload = send(m, request)
    documented = {int(c) for c in op["responses"]}
    assert code in documented, (method, path, query, body, code, payload[:200])
    if method in ("HEAD", "OPTIONS"):
        assert payload == b""


@settings(LIVE, max_examples=80)
@given(request=requests(READS))
def test_live_reads_answer_only_documented_codes(member: MemberProc, request: Request) -> None:
    check(member, request)


@settings(LIVE, max_examples=60)
@given(request=requests(WRITES))
def test_live_writes_answer_only_documented_codes(member: MemberProc,
                                                  request: Request) -> None:
    check(member, request)


def test_live_agent_still_leads(member: MemberProc) -> None:
    code, body = http_get(f"{member.api}/patroni")
    assert code == 200 and isinstance(body, dict)
    assert body["role"] == "primary"
