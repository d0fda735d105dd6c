"""``pgha show-config``, ``edit-config``, ``pause`` and ``resume`` against an in-memory DCS
and scripted member REST APIs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from tests.support.cli_env import AUTH, BASIC, CliEnv
from tests.support.fake_api import FakeApis

from pgha.cli import common, dynamic
from pgha.core.model import ClusterView

BASE = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "postgresql": {"parameters": {"max_connections": 100}}}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> CliEnv:
    monkeypatch.setattr(dynamic, "POLL_INTERVAL", 0.01)
    return CliEnv(tmp_path, monkeypatch, apis, auth=AUTH)


def test_show_config(env: CliEnv) -> None:
    env.cluster(config=BASE)
    result = env.invoke("show-config")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == BASE
    assert result.stdout.startswith("loop_wait: 10\n")  # sorted block YAML


def test_show_config_without_key(env: CliEnv) -> None:
    result = env.invoke("show-config")
    assert result.exit_code == 0
    assert result.stdout.strip() == "{}"


# ----------------------------------------------------------------------------- edit-config


def test_edit_config_set_and_pg_with_diff_and_confirm(env: CliEnv) -> None:
    env.cluster(config=BASE)
    result = env.invoke("edit-config", "-s", "ttl=20", "-s", "synchronous_mode=true",
                        "-s", "postgresql.use_pg_rewind=yes", "-p", "max_connections=200",
                        "-p", "work_mem='8MB'", input="y\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "--- \n+++ \n@@ " in out  # patronictl's unified diff: no file names
    lines = out.splitlines()
    for line in ("-ttl: 30", "+ttl: 20", "+synchronous_mode: true", "+  use_pg_rewind: true",
                 "-    max_connections: 100", "+    max_connections: 200",
                 "+    work_mem: 8MB", " loop_wait: 10"):
        assert line in lines, out
    assert "Apply these changes?" in out
    assert "Configuration changed" in out
    stored = env.get("config")
    assert stored["ttl"] == 20 and stored["synchronous_mode"] is True
    assert stored["postgresql"] == {"use_pg_rewind": True,
                                    "parameters": {"max_connections": 200, "work_mem": "8MB"}}


def test_edit_config_null_deletes_and_quiet(env: CliEnv) -> None:
    env.cluster(config={**BASE, "pause": True})
    result = env.invoke("edit-config", "-s", "pause=null", "-p", "max_connections=",
                        "-q", "--force")
    assert result.exit_code == 0, result.output
    assert "---" not in result.stdout
    # as patronictl: a mapping left empty goes too
    assert env.get("config") == {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}


def test_edit_config_declined_writes_nothing(env: CliEnv) -> None:
    env.cluster(config=BASE)
    before = env.revision("config")
    result = env.invoke("edit-config", "-s", "ttl=40", input="n\n")
    assert result.exit_code == 0  # patronictl: a "no" writes nothing and says nothing more
    assert result.stdout.rstrip().endswith("Apply these changes? [y/N]: n")
    assert env.revision("config") == before


def test_edit_config_not_changed_quiet_and_stdin_needs_force(env: CliEnv) -> None:
    env.cluster(config=BASE)
    quiet = env.invoke("edit-config", "-s", "ttl=30", "-q", "--force")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    before = env.revision("config")
    stdin = env.invoke("edit-config", "--apply", "-", input="ttl: 40\n")
    assert stdin.exit_code == 0
    assert "+ttl: 40" in stdin.stdout.splitlines()
    assert stdin.stdout.rstrip().endswith("Use --force option to apply changes")
    assert env.revision("config") == before


def test_edit_config_dotted_parameter_names(env: CliEnv) -> None:
    env.cluster(config=BASE)
    result = env.invoke("edit-config", "-p", "pg_stat_statements.max=500",
                        "-s", "postgresql.parameters.auto_explain.log_min_duration=10", "--force")
    assert result.exit_code == 0, result.output
    assert env.get("config")["postgresql"]["parameters"] == {
        "max_connections": 100, "pg_stat_statements.max": 500,
        "auto_explain.log_min_duration": 10}


def test_edit_config_not_changed(env: CliEnv) -> None:
    env.cluster(config=BASE)
    result = env.invoke("edit-config", "-s", "ttl=30", "--force")
    assert result.exit_code == 0
    assert result.stdout.strip() == "Not changed"


def test_edit_config_apply_file_and_stdin(env: CliEnv, tmp_path: Path) -> None:
    env.cluster(config=BASE)
    patch = tmp_path / "patch.yml"
    patch.write_text("loop_wait: 5\npostgresql:\n  parameters:\n    max_connections: null\n")
    result = env.invoke("edit-config", "--apply", str(patch), "--force")
    assert result.exit_code == 0, result.output
    assert env.get("config") == {"ttl": 30, "loop_wait": 5, "retry_timeout": 10,
                                 "postgresql": {"parameters": {}}}
    stdin = env.invoke("edit-config", "--apply", "-", "--force", input="check_timeline: true\n")
    assert stdin.exit_code == 0, stdin.output
    assert env.get("config")["check_timeline"] is True


def test_edit_config_replace(env: CliEnv, tmp_path: Path) -> None:
    env.cluster(config=BASE)
    new = tmp_path / "new.yml"
    new.write_text("ttl: 60\nloop_wait: 10\nretry_timeout: 20\n")
    result = env.invoke("edit-config", "--replace", str(new), "--force")
    assert result.exit_code == 0, result.output
    assert env.get("config") == {"ttl": 60, "loop_wait": 10, "retry_timeout": 20}


def test_edit_config_needs_the_config_key(env: CliEnv) -> None:
    result = env.invoke("edit-config", "-s", "ttl=25", "--force")
    assert result.exit_code == 1
    assert "Error: The config key does not exist in the cluster demo" in result.stderr
    assert env.get("config") is None


def test_edit_config_invalid_values_exit_2(env: CliEnv) -> None:
    env.cluster(config=BASE)
    before = env.revision("config")
    result = env.invoke("edit-config", "-s", "ttl=abc", "-s", "loop_wait=0", "--force")
    assert result.exit_code == 2
    assert "nothing was written" in result.stderr
    assert "ttl:" in result.stderr and "loop_wait:" in result.stderr
    assert env.revision("config") == before
    bad = env.invoke("edit-config", "-s", "ttl", "--force")
    assert bad.exit_code == 1
    assert "Error: Invalid parameter setting ttl" in bad.stderr
    bad_yaml = env.invoke("edit-config", "-s", "tags=[1, 2", "--force")
    assert bad_yaml.exit_code == 2
    assert "cannot parse" in bad_yaml.stderr


@pytest.mark.parametrize(("setting", "error"), [
    ("ttl=0", "  ttl: must be >= 5"), ("retry_timeout=0", "  retry_timeout: must be >= 1")])
def test_edit_config_refuses_timings_below_the_minimum(env: CliEnv, setting: str,
                                                       error: str) -> None:
    env.cluster(config=BASE)
    before = env.revision("config")
    result = env.invoke("edit-config", "-s", setting, "--force")
    assert result.exit_code == 2
    assert error in result.stderr.splitlines()  # the key and the valid range, one line
    assert env.revision("config") == before


def test_edit_config_lost_race(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.cluster(config=BASE)
    real_load = common.load_view

    async def racing_load(config: object, timeout: float = 5.0) -> ClusterView:
        view = await real_load(config, timeout)  # type: ignore[arg-type]
        env_store = common.kv_factory(config, timeout)  # type: ignore[arg-type]
        async with env_store as kv:  # someone else writes right after our read
            await kv.put("/service/demo/config", b'{"ttl": 45}')
        return view

    monkeypatch.setattr(common, "load_view", racing_load)
    result = env.invoke("edit-config", "-s", "ttl=20", "--force")
    assert result.exit_code == 1
    assert "Error: Config modification aborted due to concurrent changes" in result.stderr
    assert env.get("config") == {"ttl": 45}


def test_edit_config_with_editor(env: CliEnv, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    env.cluster(config=BASE)
    script = tmp_path / "editor.py"
    script.write_text("import sys\np = sys.argv[1]\n"
                      "text = open(p).read().replace('ttl: 30', 'ttl: 35')\n"
                      "open(p, 'w').write(text)\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    result = env.invoke("edit-config", "--force")
    assert result.exit_code == 0, result.output
    assert "-ttl: 30\n+ttl: 35" in result.stdout
    assert env.get("config")["ttl"] == 35


def test_edit_config_failing_editor(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.cluster(config=BASE)
    monkeypatch.setenv("EDITOR", "false")
    before = env.revision("config")
    result = env.invoke("edit-config", "--force")
    assert result.exit_code == 1
    assert "exited with code 1" in result.stderr
    assert env.revision("config") == before


# ----------------------------------------------------------------------------- pause / resume


def test_pause_patches_the_leader(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("PATCH", "/config", 200, {"pause": True})
    result = env.invoke("pause")
    assert result.exit_code == 0, result.output
    assert "Success: cluster management is paused" in result.stdout
    [call] = fakes["pg1"].calls("PATCH", "/config")
    assert call.body == {"pause": True}
    assert call.authorization == BASIC


def test_pause_tries_the_next_member(env: CliEnv) -> None:
    fakes = env.cluster()
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    fakes["pg2"].script("PATCH", "/config", 200, {"pause": True})
    result = env.invoke("pause")
    assert result.exit_code == 0, result.output
    assert fakes["pg2"].calls("PATCH", "/config")[0].body == {"pause": True}
    assert not fakes["pg3"].requests


def test_pause_falls_back_to_the_dcs(env: CliEnv) -> None:
    env.cluster(replicas=0, config=BASE)
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    result = env.invoke("pause")
    assert result.exit_code == 0, result.output
    assert "changing the DCS config directly" in result.stderr
    assert env.get("config") == {**BASE, "pause": True}


def test_pause_refused_by_the_api(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("PATCH", "/config", 409, "config changed concurrently")
    result = env.invoke("pause")
    assert result.exit_code == 1
    assert "status code=409" in result.stderr


def test_pause_already_paused(env: CliEnv) -> None:
    fakes = env.cluster(config={"pause": True})
    result = env.invoke("pause")
    assert result.exit_code == 1
    assert "Cluster is already paused" in result.stderr
    assert not fakes["pg1"].requests


def test_pause_wait_until_every_member_reports_it(env: CliEnv) -> None:
    fakes = env.cluster()
    fakes["pg1"].script("PATCH", "/config", 200, {"pause": True})
    fakes["pg1"].script("GET", "/patroni", 200, {"state": "running", "pause": True})
    fakes["pg2"].script("GET", "/patroni", 200, {"state": "running", "pause": True})
    fakes["pg3"].script("GET", "/patroni", [(200, {"state": "running"}),
                                            (200, {"state": "running"}),
                                            (200, {"state": "running", "pause": True})])
    result = env.invoke("pause", "--wait")
    assert result.exit_code == 0, result.output
    assert "'pause' request sent, waiting until it is recognized by all nodes" in result.stdout
    assert result.stdout.strip().endswith("Success: cluster management is paused")
    assert len(fakes["pg3"].calls("GET", "/patroni")) == 3


def test_resume(env: CliEnv) -> None:
    fakes = env.cluster(config={"pause": True})
    fakes["pg1"].script("PATCH", "/config", 200, {})
    fakes["pg1"].script("GET", "/patroni", 200, {"state": "running"})
    fakes["pg2"].script("GET", "/patroni", [(200, {"state": "running", "pause": True}),
                                            (200, {"state": "running"})])
    result = env.invoke("resume", "--wait")
    assert result.exit_code == 0, result.output
    assert fakes["pg1"].calls("PATCH", "/config")[0].body == {"pause": False}
    assert "Success: cluster management is resumed" in result.stdout


def test_resume_not_paused(env: CliEnv) -> None:
    env.cluster()
    result = env.invoke("resume")
    assert result.exit_code == 1
    assert "Cluster is not paused" in result.stderr


@pytest.mark.parametrize(("option", "key"), [
    ("max_connections=lots", "postgresql.parameters.max_connections"),
    ("wal_level=hot", "postgresql.parameters.wal_level"),
    ("shared_buffers=8kB", "postgresql.parameters.shared_buffers"),  # below 128kB
])
def test_edit_config_refuses_a_value_postgresql_would_reject(env: CliEnv, option: str,
                                                             key: str) -> None:
    env.cluster(config=BASE)
    result = env.invoke("edit-config", "-p", option, "--force")
    assert result.exit_code == 2, result.output
    assert "nothing was written" in result.stderr and key in result.stderr
    assert env.get("config") == BASE
