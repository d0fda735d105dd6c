"""``pgha restart``, ``reload`` and ``reinit`` against an in-memory DCS and scripted member
REST APIs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cli_env import AUTH, BASIC, CliEnv
from tests.support.fake_api import FakeApis

from pgha.cli import members


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> CliEnv:
    monkeypatch.setattr(members, "POLL_INTERVAL", 0.01)
    return CliEnv(tmp_path, monkeypatch, apis, auth=AUTH)


# ----------------------------------------------------------------------------- restart


def test_restart_all_members_in_order(env: CliEnv) -> None:
    fakes = env.cluster()
    for f in fakes.values():
        f.script("POST", "/restart", 200, "restarted successfully")
    result = env.invoke("restart", input="\ny\n\n")  # patronictl's order: when, sure?, version
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("+ Cluster: demo")  # the table first
    assert "When should the restart take place" in result.stdout
    assert "Restart if the PostgreSQL version is less than provided" in result.stdout
    assert "Are you sure you want to restart members pg1, pg2, pg3?" in result.stdout
    for name in ("pg1", "pg2", "pg3"):
        assert f"Success: restart on member {name}" in result.stdout
        [call] = fakes[name].calls("POST", "/restart")
        assert call.body == {}
        assert call.authorization == BASIC


def test_restart_options_make_the_body(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/restart", 202, "restart scheduled")
    fakes["pg3"].script("POST", "/restart", 202, "restart scheduled")
    result = env.invoke("restart", "demo", "-r", "replica", "--pending", "--pg-version", "15.6",
                        "--timeout", "30", "--scheduled", "2099-05-01T10:00:00+02:00", "--force")
    assert result.exit_code == 0, result.output
    assert not fakes["pg1"].requests  # the leader is not a replica
    body = fakes["pg2"].calls("POST", "/restart")[0].body
    assert body == {"restart_pending": True, "role": "replica", "postgres_version": "15.6",
                    "timeout": 30.0, "schedule": "2099-05-01T10:00:00+02:00"}
    assert "Success: restart scheduled on member pg3" in result.stdout


@pytest.mark.parametrize("role", ["primary", "master", "leader"])
def test_restart_primary_role_aliases(env: CliEnv, role: str) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/restart", 200, "ok")
    result = env.invoke("restart", "-r", role, "--force")
    assert result.exit_code == 0, result.output
    assert fakes["pg1"].calls("POST", "/restart")[0].body == {"role": "primary"}
    assert not fakes["pg2"].requests and not fakes["pg3"].requests


def test_restart_any_picks_one_member(env: CliEnv) -> None:
    fakes = env.cluster()
    for f in fakes.values():
        f.script("POST", "/restart", 200, "ok")
    result = env.invoke("restart", "--any", "--force")
    assert result.exit_code == 0, result.output
    assert sum(len(f.calls("POST", "/restart")) for f in fakes.values()) == 1


def test_restart_failures_reported_like_patronictl(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("POST", "/restart", 409, "Failed: another restart is already scheduled")
    fakes["pg2"].script("POST", "/restart", 503, "restart conditions are not satisfied")
    result = env.invoke("restart", "demo", "pg1", "pg2", "--force")
    assert result.exit_code == 0  # patronictl: the member's refusal is on its line, exit 0
    lines = result.stdout.splitlines()
    assert "Failed: another restart is already scheduled on member pg1" in lines
    assert ("Failed: restart for member pg2, status code=503, (restart conditions are not "
            "satisfied)") in lines
    env.member("pg3", api=False, api_url="http://127.0.0.1:9/patroni")
    unreachable = env.invoke("restart", "demo", "pg3", "--force")
    assert unreachable.exit_code == 1
    assert "Failed: restart for member pg3, POST http://127.0.0.1:9/restart" in \
        unreachable.stdout


def test_restart_usage_errors(env: CliEnv) -> None:
    fakes = env.cluster(config={"pause": True})
    bad_role = env.invoke("restart", "-r", "boss", "--force")
    assert bad_role.exit_code == 2
    assert "unknown role 'boss'" in bad_role.stderr
    bad_version = env.invoke("restart", "--pg-version", "fifteen", "--force")
    assert bad_version.exit_code == 2
    paused = env.invoke("restart", "--scheduled", "2099-01-01T00:00+00:00", "--force")
    assert paused.exit_code == 1
    assert "Can't schedule restart in the paused state" in paused.stderr
    assert not any(f.calls("POST") for f in fakes.values())


def test_restart_declined(env: CliEnv) -> None:
    fakes = env.cluster()
    result = env.invoke("restart", "pg2", "--scheduled", "now", "--pg-version", "16",
                        input="n\n")
    assert result.exit_code == 1
    assert "Are you sure you want to restart members pg2?" in result.stdout
    assert "Error: Aborted restart" in result.stderr
    assert not fakes["pg2"].calls("POST")


# ----------------------------------------------------------------------------- reload


def test_reload_by_role(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/reload", 202, "reload scheduled")
    fakes["pg3"].script("POST", "/reload", 200, "nothing to do")
    result = env.invoke("reload", "-r", "replica", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Are you sure you want to reload members pg2, pg3?" in result.stdout
    assert ("Reload request received for member pg2 and will be processed within 10 seconds"
            in result.stdout)
    assert "No changes to apply on member pg3" in result.stdout
    assert fakes["pg2"].calls("POST", "/reload")[0].authorization == BASIC
    assert not fakes["pg1"].requests


def test_reload_unreachable_member_fails(env: CliEnv) -> None:
    fakes = env.cluster()
    env.member("pg3", api=False, api_url="http://127.0.0.1:9/patroni")
    fakes["pg1"].script("POST", "/reload", 202, "reload scheduled")
    result = env.invoke("reload", "pg1", "pg3", "--force")
    assert result.exit_code == 1
    assert "Reload request received for member pg1" in result.stdout
    assert "Failed: reload for member pg3, POST http://127.0.0.1:9/reload" in result.stdout


def test_reload_no_match(env: CliEnv) -> None:
    env.cluster()
    result = env.invoke("reload", "-r", "standby-leader", "--force")
    assert result.exit_code == 1
    assert "No standby-leader among the members of cluster demo" in result.stderr
    leader = env.invoke("reload", "demo", "pg1", "-r", "replica", "--force")
    assert leader.exit_code == 1
    assert "Error: No replica among provided members" in leader.stderr


# ----------------------------------------------------------------------------- reinit


def test_reinit_member(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/reinitialize", 200, "reinitialize started")
    result = env.invoke("reinit", "demo", "pg2", "--from-leader", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Are you sure you want to reinitialize members pg2?" in result.stdout
    assert "Success: reinitialize for member pg2" in result.stdout
    [call] = fakes["pg2"].calls("POST", "/reinitialize")
    assert call.body == {"force": False, "from_leader": True}
    assert call.authorization == BASIC


def test_reinit_in_progress_asks_to_cancel(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/reinitialize", [
        (503, "reinitialize already in progress"), (200, "reinitialize started")])
    result = env.invoke("reinit", "pg2", input="y\ny\n")
    assert result.exit_code == 0, result.output
    assert "Do you want to cancel it and reinitialize anyway?" in result.stdout
    bodies = [c.body for c in fakes["pg2"].calls("POST", "/reinitialize")]
    assert bodies == [{"force": False, "from_leader": False},
                      {"force": True, "from_leader": False}]


def test_reinit_refused(env: CliEnv) -> None:
    fakes = env.cluster()
    leader = env.invoke("reinit", "demo", "pg1", "--force")  # replicas only, as patronictl
    assert leader.exit_code == 1
    assert "Error: No replica among provided members" in leader.stderr
    assert not fakes["pg1"].calls("POST")
    fakes["pg2"].script("POST", "/reinitialize", 503, "reinitialize failed: no leader")
    result = env.invoke("reinit", "demo", "pg2", "--force")
    assert result.exit_code == 0  # reported on the member's line, as patronictl
    assert ("Failed: reinitialize for member pg2, status code=503, (reinitialize failed: no "
            "leader)") in result.stdout.splitlines()
    assert fakes["pg2"].calls("POST")[0].body == {"force": True, "from_leader": False}


def test_reinit_prompts_for_member_and_needs_one_with_force(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg3"].script("POST", "/reinitialize", 200, "reinitialize started")
    result = env.invoke("reinit", input="pg3\ny\n")
    assert result.exit_code == 0, result.output
    assert "Which member do you want to reinitialize [pg2, pg3]?" in result.stdout
    forced = env.invoke("reinit", "--force")
    assert forced.exit_code == 2


def test_reinit_wait_until_running_again(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/reinitialize", 200, "reinitialize started")
    status = {"role": "replica", "patroni": {"version": "1"}}
    fakes["pg2"].script("GET", "/patroni", [
        (200, {**status, "state": "running", "postmaster_start_time": "t0"}),  # before
        (200, {**status, "state": "running", "postmaster_start_time": "t0"}),  # not begun
        (200, {**status, "state": "creating replica"}),
        (200, {**status, "state": "starting"}),
        (200, {**status, "state": "running", "postmaster_start_time": "t1"}),
    ])
    result = env.invoke("reinit", "pg2", "--wait", "--force")
    assert result.exit_code == 0, result.output
    assert "Waiting for reinitialize to complete on: pg2" in result.stdout
    assert "Reinitialize is completed on: pg2" in result.stdout
    assert len(fakes["pg2"].calls("GET", "/patroni")) == 5


def test_reinit_wait_reports_a_failed_start(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg2"].script("POST", "/reinitialize", 200, "reinitialize started")
    fakes["pg2"].script("GET", "/patroni", [
        (200, {"state": "running", "postmaster_start_time": "t0"}),
        (200, {"state": "creating replica"}),
        (200, {"state": "start failed"}),
    ])
    result = env.invoke("reinit", "pg2", "--wait", "--force")
    assert result.exit_code == 1
    assert "Reinitialize failed on: pg2 (state start failed)" in result.stdout
