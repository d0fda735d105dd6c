"""``pgha why``: invoked through Typer against an in-memory DCS and scripted member APIs that
answer ``GET /decisions`` with records made by the real DecisionLog from real decisions and
their real explanation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cli_env import CliEnv
from tests.support.fake_api import FakeApis
from tests.unit.test_core_race import race_view
from tests.unit.test_decide import MB, NOW, POS, local, peer, replica_pg

from pgha.agent.decisions import DecisionLog
from pgha.core.decide import decide
from pgha.core.explain import explain
from pgha.core.model import ClusterView, LocalState, Tags

T0 = 1_800_000_000.0
LAST_LEADER = ("pg0", "postgres://pg0.example:5432/postgres")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> CliEnv:
    return CliEnv(tmp_path, monkeypatch, apis)


def records(v: ClusterView, loc: LocalState, times: int = 1) -> list[dict[str, Any]]:
    """What the member ``loc.name`` would serve after deciding ``times`` cycles on ``v``."""
    log = DecisionLog()
    d = decide(v, loc, NOW)
    for i in range(times):
        log.note(d, acted=bool(d.actions), wall=T0 + i, role="replica", timeline=1,
                 position=loc.pg.wal_position, lag=None, leader=None,
                 standings=explain(v, loc, d))
    return log.to_json()


def leaderless(env: CliEnv) -> dict[str, Any]:
    """pg1 lags, pg2 is nofailover, pg3 does not answer; pg0 (the last leader) is gone."""
    env.put("initialize", b"7123456789012345678")
    fakes = {n: env.member(n, timeline=1) for n in ("pg1", "pg2")}
    env.member("pg3", api=False, api_url="http://127.0.0.1:9/patroni")
    v = replace(race_view(), status_leader=LAST_LEADER)
    lagging = local(replica_pg(wal_position=POS - 3 * MB), peers={
        "pg2": peer("pg2", tags=Tags(nofailover=True)), "pg3": None})
    assert fakes["pg1"] is not None and fakes["pg2"] is not None
    fakes["pg1"].script("GET", "/decisions", 200, records(v, lagging, times=4))
    nofailover = replace(local(replica_pg(), peers={"pg1": peer("pg1"), "pg3": None}),
                         name="pg2", tags=Tags(nofailover=True))
    fakes["pg2"].script("GET", "/decisions", 200, records(v, nofailover))
    return fakes


def test_no_leader_names_what_keeps_each_member_out(env: CliEnv) -> None:
    leaderless(env)
    result = env.invoke("why")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "no candidate: pg0 unreachable; pg1 lag 3 MB > 1 MB; pg2 nofailover; "
        "pg3 unreachable")
    data = json.loads(env.invoke("why", "-f", "json").stdout)
    assert data["leader"] is None
    assert data["members"]["pg3"] == {"reachable": False, "summary": "unreachable"}
    assert data["members"]["pg0"]["seen_by"] == "pg1"  # named in pg1's standings
    latest = data["members"]["pg1"]["latest"]
    assert latest["reason"] == "race_refused_lag" and latest["count"] == 4
    assert latest["standings"][0]["limit"] == MB
    assert yaml.safe_load(env.invoke("why", "-f", "yaml").stdout) == data


def test_leader_since_and_why(env: CliEnv) -> None:
    env.put("initialize", b"7123456789012345678")
    fakes = {n: env.member(n, timeline=1) for n in ("pg1", "pg2")}
    env.put("leader", b"pg1")
    env.put("history", [[1, 50331808, "no recovery target specified",
                         "2027-01-15T08:00:01+00:00", "pg1"]])
    v = replace(race_view(), status_leader=LAST_LEADER)
    won = records(v, local(replica_pg(), peers={"pg2": peer("pg2", wal=POS - 5 * MB),
                                                "pg3": None}))
    assert won[0]["reason"] == "race" and "AcquireLeader" in won[0]["actions"]
    assert fakes["pg1"] is not None and fakes["pg2"] is not None
    fakes["pg1"].script("GET", "/decisions", 200, [*won, {
        "time": "2027-01-15T08:00:02.000+00:00", "reason": "leader_healthy", "message": "ok",
        "actions": ["PublishStatus"], "count": 1, "standings": []}])
    fakes["pg2"].script("GET", "/decisions", 503, "starting")  # an error: unreachable
    result = env.invoke("why")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "leader pg1 since 2027-01-15T08:00:00.000+00:00: race: no leader and this member is "
        "the healthiest: taking the lock (compared: pg0 unreachable; pg2 lag 5 MB > 1 MB; "
        "pg3 unreachable)")
    assert lines[1] == "  timeline 2 since 2027-01-15T08:00:01+00:00 (no recovery target " \
                       "specified)"
    assert "  pg2: unreachable" in lines


def test_one_members_records(env: CliEnv) -> None:
    fakes = leaderless(env)
    result = env.invoke("why", "pg1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pg1: 1 recent decision(s), oldest first"
    assert lines[1].startswith("2027-01-15T08:00:00.000+00:00 race_refused_lag: lag ")
    assert lines[1].endswith("(x4, last 2027-01-15T08:00:03.000+00:00)")
    assert lines[2] == "    pg1 lag 3 MB > 1 MB; pg0 unreachable; pg2 nofailover; " \
                       "pg3 unreachable"
    assert fakes["pg2"].calls("GET", "/decisions") == []  # only the member asked
    data = json.loads(env.invoke("why", "pg1", "-f", "json", "-n", "3").stdout)
    assert data["member"] == "pg1" and data["records"][0]["count"] == 4
    gone = env.invoke("why", "pg3")
    assert gone.exit_code == 1 and "pg3: unreachable" in gone.stderr
    missing = env.invoke("why", "pg9")
    assert missing.exit_code == 1 and "pg9: not a member" in missing.stderr


def test_tsv_does_not_apply(env: CliEnv) -> None:
    result = env.invoke("why", "-f", "tsv")
    assert result.exit_code == 2 and "--format" in result.stderr
