"""``pgha switchover``, ``failover`` and ``flush`` against an in-memory DCS and scripted
member REST APIs: request method, path, JSON body and auth header, output and exit code."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

import pytest
from tests.support.cli_env import AUTH, BASIC, CliEnv
from tests.support.fake_api import FakeApis


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> CliEnv:
    return CliEnv(tmp_path, monkeypatch, apis, auth=AUTH)


# ----------------------------------------------------------------------------- switchover


def test_switchover_forced_posts_to_leader_with_auth(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", 200, 'Successfully switched over to "pg2"')
    result = env.invoke("switchover", "--candidate", "pg2", "--force")
    assert result.exit_code == 0, result.output
    [call] = fakes["pg1"].calls("POST", "/switchover")
    assert call.body == {"leader": "pg1", "candidate": "pg2"}
    assert call.authorization == BASIC
    assert 'Successfully switched over to "pg2"' in result.stdout
    assert "+ Cluster: demo" in result.stdout  # the table after a done switchover
    assert not fakes["pg2"].requests


def test_switchover_prompts_name_members_and_confirm(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", 200, 'Successfully switched over to "pg3"')
    result = env.invoke("switchover", input="\npg3\nnow\ny\n")
    assert result.exit_code == 0, result.output
    assert "Primary [pg1]:" in result.stdout
    assert "Candidate ['pg2', 'pg3'] []:" in result.stdout
    assert "When should the switchover take place" in result.stdout
    assert "Are you sure you want to switchover cluster demo, demoting current leader pg1?" \
        in result.stdout
    assert result.stdout.startswith("Current cluster topology\n+ Cluster: demo")
    [call] = fakes["pg1"].calls("POST", "/switchover")
    assert call.body == {"leader": "pg1", "candidate": "pg3"}


def test_switchover_without_candidate_lets_the_leader_choose(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", 200, 'Successfully switched over to "pg2"')
    result = env.invoke("switchover", input="\n\n\ny\n")
    assert result.exit_code == 0, result.output
    assert fakes["pg1"].calls("POST")[0].body == {"leader": "pg1"}


def test_switchover_declined_sends_nothing(env: CliEnv) -> None:
    fakes = env.cluster()
    result = env.invoke("switchover", "--candidate", "pg2", "--scheduled", "now", input="\nn\n")
    assert result.exit_code == 1
    assert "Error: Aborting switchover" in result.stderr
    assert not fakes["pg1"].calls("POST")


def test_switchover_scheduled_202(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", 202, "Switchover scheduled")
    result = env.invoke("switchover", "--candidate", "pg2", "--scheduled",
                        "2099-01-02T03:04:05+00:00", "--force")
    assert result.exit_code == 0, result.output
    body = fakes["pg1"].calls("POST")[0].body
    assert body["scheduled_at"] == "2099-01-02T03:04:05+00:00"
    assert datetime.fromisoformat(body["scheduled_at"]).tzinfo is not None
    assert "Switchover scheduled" in result.stdout


def test_switchover_naive_timestamp_gets_local_timezone(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", 202, "Switchover scheduled")
    result = env.invoke("switchover", "--candidate", "pg2", "--scheduled", "2099-01-02T03:04",
                        "--force")
    assert result.exit_code == 0, result.output
    sent = datetime.fromisoformat(fakes["pg1"].calls("POST")[0].body["scheduled_at"])
    assert sent.tzinfo is not None
    assert sent == datetime(2099, 1, 2, 3, 4).astimezone()


@pytest.mark.parametrize(("code", "text"), [
    (412, "no good candidates have been found"),
    (503, "Switchover status unknown"),
    (400, "Can't schedule switchover in the paused state"),
])
def test_switchover_refused_prints_details_like_patronictl(env: CliEnv, code: int,
                                                           text: str) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/switchover", code, text)
    result = env.invoke("switchover", "--candidate", "pg2", "--force")
    # patronictl 4.1 prints the member's refusal on stdout, then the table, and exits 0
    assert result.exit_code == 0
    assert f"Switchover failed, details: {code}, {text}\n+ Cluster: demo" in result.stdout


def test_switchover_without_auth_gets_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          apis: FakeApis) -> None:
    env = CliEnv(tmp_path, monkeypatch, apis)  # no credentials in the config
    fakes = env.cluster()
    fakes["pg1"].auth = AUTH  # but the API demands them
    result = env.invoke("switchover", "--candidate", "pg2", "--force")
    assert result.exit_code == 0
    assert "Switchover failed, details: 401" in result.stdout
    assert fakes["pg1"].calls("POST")[0].authorization is None


def test_switchover_ctl_authentication_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           apis: FakeApis) -> None:
    env = CliEnv(tmp_path, monkeypatch, apis, auth=AUTH, extra_yaml=(
        "ctl:\n  authentication:\n    username: ops\n    password: other\n"))
    fakes = env.cluster()
    fakes["pg1"].auth = ("ops", "other")
    fakes["pg1"].script("POST", "/switchover", 200, "Successfully switched over")
    result = env.invoke("switchover", "--candidate", "pg2", "--force")
    assert result.exit_code == 0, result.output
    expected = "Basic " + base64.b64encode(b"ops:other").decode()
    assert fakes["pg1"].calls("POST")[0].authorization == expected


def test_switchover_checks_leader_and_candidate(env: CliEnv) -> None:
    env.cluster()
    wrong = env.invoke("switchover", "--leader", "pg2", "--candidate", "pg3", "--force")
    assert wrong.exit_code == 1
    assert "Member pg2 is not the leader of cluster demo" in wrong.stderr
    same = env.invoke("switchover", "--primary", "pg1", "--candidate", "pg1", "--force")
    assert same.exit_code == 1
    assert "Error: Member pg1 is already the leader of cluster demo" in same.stderr
    unknown = env.invoke("switchover", "--candidate", "pg9", "--force")
    assert unknown.exit_code == 1
    assert "Member pg9 does not exist in cluster demo or is tagged as nofailover" in \
        unknown.stderr


def test_switchover_no_candidates(env: CliEnv) -> None:
    env.cluster(replicas=0)
    env.member("pg2", tags={"nofailover": True}, api=False)
    result = env.invoke("switchover", "--force")
    assert result.exit_code == 1
    assert "No candidates found to switchover to" in result.stderr


def test_switchover_without_leader(env: CliEnv) -> None:
    env.cluster()
    env.delete("leader")
    result = env.invoke("switchover", "--force")
    assert result.exit_code == 1
    assert "Error: This cluster has no leader" in result.stderr


def test_switchover_scheduled_in_pause_refused_locally(env: CliEnv) -> None:
    fakes = env.cluster(config={"pause": True})
    result = env.invoke("switchover", "--candidate", "pg2", "--scheduled",
                        "2099-01-01T00:00+00:00", "--force")
    assert result.exit_code == 1
    assert "Can't schedule switchover in the paused state" in result.stderr
    assert not fakes["pg1"].calls("POST")


def test_switchover_bad_timestamps_exit_2(env: CliEnv) -> None:
    env.cluster()
    bad = env.invoke("switchover", "--candidate", "pg2", "--scheduled", "tomorrow", "--force")
    assert bad.exit_code == 2
    assert "cannot parse the switchover time" in bad.stderr
    past = env.invoke("switchover", "--candidate", "pg2", "--scheduled",
                      "2001-01-01T00:00+00:00", "--force")
    assert past.exit_code == 2
    assert "in the past" in past.stderr


def test_switchover_leader_unreachable(env: CliEnv) -> None:
    env.cluster()
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    result = env.invoke("switchover", "--candidate", "pg2", "--force")
    assert "cannot reach pg1" in result.stderr
    assert "Switchover failed, details: 500" in result.stdout  # pg2 was asked instead
    env.member("pg2", api=False, api_url="http://127.0.0.1:9/patroni")
    env.member("pg3", api=False, api_url="http://127.0.0.1:9/patroni")
    nobody = env.invoke("switchover", "--candidate", "pg2", "--force")
    assert nobody.exit_code == 1
    assert "Switchover failed: no member could be reached" in nobody.stderr


# ----------------------------------------------------------------------------- failover


def test_failover_posts_candidate_to_leader(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/failover", 200, 'Successfully failed over to "pg3"')
    result = env.invoke("failover", "--candidate", "pg3", "--force")
    assert result.exit_code == 0, result.output
    [call] = fakes["pg1"].calls("POST", "/failover")
    assert call.body == {"candidate": "pg3"}
    assert call.authorization == BASIC
    assert 'Successfully failed over to "pg3"' in result.stdout


def test_failover_without_leader_goes_to_candidate(env: CliEnv) -> None:
    fakes = env.cluster()
    env.delete("leader")
    fakes["pg2"].script("POST", "/failover", 200, 'Successfully failed over to "pg2"')
    result = env.invoke("failover", "--candidate", "pg2", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Are you sure you want to failover cluster demo?" in result.stdout
    assert fakes["pg2"].calls("POST", "/failover")[0].body == {"candidate": "pg2"}
    assert not fakes["pg1"].calls("POST")


def test_failover_prompts_for_candidate(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/failover", 503, "Failover failed")
    result = env.invoke("failover", input="pg2\ny\n")
    assert "Candidate ['pg2', 'pg3'] []:" in result.stdout
    assert "Are you sure you want to failover cluster demo, demoting current leader pg1?" \
        in result.stdout
    assert result.exit_code == 0
    assert "Failover failed, details: 503, Failover failed" in result.stdout


def test_failover_needs_a_candidate(env: CliEnv) -> None:
    env.cluster()
    forced = env.invoke("failover", "--force")
    assert forced.exit_code == 1
    assert "Error: Failover could be performed only to a specific candidate" in forced.stderr
    empty = env.invoke("failover", input="\n")
    assert empty.exit_code == 1
    assert "only to a specific candidate" in empty.stderr
    same = env.invoke("failover", "--candidate", "pg1", "--force")
    assert same.exit_code == 1
    assert "Error: Member pg1 is already the leader of cluster demo" in same.stderr


# ----------------------------------------------------------------------------- flush


def test_flush_switchover_via_rest(env: CliEnv) -> None:
    fakes = env.cluster()
    env.put("failover", {"leader": "pg1", "scheduled_at": "2099-01-01T00:00:00+00:00"})
    fakes["pg1"].script("DELETE", "/switchover", 200, "scheduled switchover deleted")
    result = env.invoke("flush", "switchover")
    assert result.exit_code == 0, result.output
    assert "Success: scheduled switchover deleted" in result.stdout
    assert fakes["pg1"].calls("DELETE", "/switchover")[0].authorization == BASIC
    assert env.get("failover") is not None  # the agent deletes it, not the CLI


def test_flush_switchover_falls_back_to_the_dcs(env: CliEnv) -> None:
    env.cluster(replicas=0)
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    env.put("failover", {"leader": "pg1", "scheduled_at": "2099-01-01T00:00:00+00:00"})
    result = env.invoke("flush", "demo", "switchover")  # leading cluster name accepted
    assert result.exit_code == 0, result.output
    assert "in the DCS: no member's REST API answered" in result.stdout
    assert env.get("failover") is None


def test_flush_switchover_nothing_scheduled(env: CliEnv) -> None:
    fakes = env.cluster()
    result = env.invoke("flush", "switchover")
    assert result.exit_code == 0
    assert "No pending scheduled switchover found" in result.stdout
    assert not fakes["pg1"].requests


def test_flush_switchover_conflict(env: CliEnv) -> None:
    fakes = env.cluster()
    env.put("failover", {"leader": "pg1", "scheduled_at": "2099-01-01T00:00:00+00:00"})
    fakes["pg1"].script("DELETE", "/switchover", 409, "lost a race")
    result = env.invoke("flush", "switchover")
    assert result.exit_code == 1
    assert "status code=409" in result.stderr


def test_flush_restart_per_member(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("DELETE", "/restart", 200, "scheduled restart deleted")
    fakes["pg2"].script("DELETE", "/restart", 404, "no scheduled restart")
    fakes["pg3"].script("DELETE", "/restart", 500, "boom")
    result = env.invoke("flush", "pg1", "pg2", "pg3", "restart", input="y\n")
    assert ("Are you sure you want to flush scheduled restarts of members pg1, pg2, pg3?"
            in result.stdout)
    assert "Success: flush scheduled restart for member pg1" in result.stdout
    assert "No scheduled restart for member pg2" in result.stdout
    assert "Failed: flush scheduled restart for member pg3, status code=500, (boom)" in \
        result.stdout
    assert result.exit_code == 1
    assert fakes["pg2"].calls("DELETE", "/restart")[0].authorization == BASIC


def test_flush_usage_errors(env: CliEnv) -> None:
    env.cluster()
    bad = env.invoke("flush", "pg1", "everything")
    assert bad.exit_code == 2
    assert "restart or switchover" in bad.stderr
    # as in patronictl the first argument names the cluster (unless it is a member of the
    # configured one): an unknown name is a cluster without members
    unknown = env.invoke("flush", "pg7", "restart", "--force")
    assert unknown.exit_code == 1
    assert "Error: pg7 cluster doesn't have any members" in unknown.stderr
    not_member = env.invoke("flush", "demo", "pg7", "restart", "--force")
    assert not_member.exit_code == 1
    assert "Error: pg7 is not a member of cluster" in not_member.stderr


def test_switchover_asks_another_member_when_the_leader_is_unreachable(env: CliEnv) -> None:
    fakes = env.cluster()
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    fakes["pg2"].script("POST", "/switchover", 200, 'Successfully switched over to "pg3"')
    result = env.invoke("switchover", "--candidate", "pg3", "--force")
    assert result.exit_code == 0, result.output
    assert "cannot reach pg1" in result.stderr
    sent = fakes["pg2"].calls("POST")
    assert len(sent) == 1 and sent[0].body == {"leader": "pg1", "candidate": "pg3"}
