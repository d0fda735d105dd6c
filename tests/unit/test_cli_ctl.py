"""patronictl habits of the operator commands: configuration files that hold only a DCS section
(plus ``ctl``, ``restapi`` credentials, ``scope``/``namespace``), patronictl's default path and
variables, ``-d/--dcs-url``, the CLUSTER argument, ``--group`` refused. Run through Typer against
the in-memory DCS and scripted member REST APIs of :mod:`tests.support.cli_env`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cli_env import AUTH, BASIC, SYSID, CliEnv
from tests.support.fake_api import FakeApis
from typer.testing import CliRunner, Result

from pgha.cli import common
from pgha.cli.main import app
from pgha.config import ClusterAccess, ConfigError, parse_cluster_access
from pgha.dcs.factory import open_kv
from pgha.dcs.memory import MemoryStore

DCS_SECTIONS = {
    "etcd3": "etcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\n",
    "etcd": "etcd:\n  host: 10.0.0.1:2379\n",
    "consul": "consul:\n  host: 10.0.0.1:8500\n",
    "zookeeper": "zookeeper:\n  hosts: ['10.0.0.1:2181']\n",
}
CTL = """\
ctl:
  insecure: true
restapi:
  authentication:
    username: admin
    password: s3cret
"""


class Ctl:
    """A CliEnv whose configuration files are written by the test, recording the
    configuration each KVStore was built for."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> None:
        self.env = CliEnv(tmp_path, monkeypatch, apis, auth=AUTH)
        self.tmp_path = tmp_path
        self.seen: list[ClusterAccess] = []
        backend = self.env.backend

        def factory(config: ClusterAccess, timeout: float) -> MemoryStore:
            self.seen.append(config)
            return MemoryStore(backend, timeout=timeout)

        monkeypatch.setattr(common, "kv_factory", factory)
        for var in ("DCS_URL", "PATRONI_SCOPE", "PATRONI_ETCD3_HOSTS", "PGHA_SCOPE"):
            monkeypatch.delenv(var, raising=False)
        # patronictl's default path lives under $XDG_CONFIG_HOME/patroni: keep it in tmp
        self.home = tmp_path / "xdg"
        monkeypatch.setenv("XDG_CONFIG_HOME", str(self.home))
        self.runner = CliRunner()

    def write(self, text: str, name: str = "patronictl.yaml") -> Path:
        path = self.tmp_path / name
        path.write_text(text)
        return path

    def invoke(self, *args: str, input: str | None = None,
               env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(app, list(args), input=input, env=env,
                                  catch_exceptions=False)


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> Ctl:
    return Ctl(tmp_path, monkeypatch, apis)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


# ----------------------------------------------------------------------------- ctl-only files


@pytest.mark.parametrize("kind", sorted(DCS_SECTIONS))
def test_list_with_a_dcs_only_file_of_each_kind(ctl: Ctl, kind: str) -> None:
    ctl.env.cluster()
    path = ctl.write(DCS_SECTIONS[kind] + CTL)
    result = ctl.invoke("-c", str(path), "list", "demo")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"+ Cluster: demo ({SYSID}) ")
    [config] = ctl.seen
    stored = "etcd" if kind == "etcd3" else kind
    assert config.dcs_kind() == stored
    assert config.scope == "demo" and config.namespace == "/service/"
    if kind == "etcd3":
        assert config.etcd_endpoints() == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]


@pytest.mark.parametrize(("kind", "store"), [
    ("etcd3", "EtcdHttpStore"), ("etcd", "EtcdHttpStore"), ("consul", "ConsulStore"),
    ("zookeeper", "ZooKeeperStore"),
])
def test_a_dcs_only_file_builds_its_store(ctl: Ctl, kind: str, store: str) -> None:
    """The real factory behind the CLI's seam accepts what a DCS-only file gives it."""
    access = parse_cluster_access(yaml.safe_load(DCS_SECTIONS[kind]), {})
    assert type(open_kv(access, ttl=30, timeout=5)).__name__ == store


def test_ctl_only_file_carries_the_credentials_of_unsafe_calls(ctl: Ctl) -> None:
    fakes = ctl.env.cluster()
    fakes["pg1"].script("POST", "/switchover", 200, 'Successfully switched over to "pg2"')
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"] + CTL)
    result = ctl.invoke("-c", str(path), "switchover", "--candidate", "pg2", "--force")
    assert result.exit_code == 0, result.output
    [call] = fakes["pg1"].calls("POST", "/switchover")
    assert call.authorization == BASIC
    assert call.body == {"leader": "pg1", "candidate": "pg2"}


def test_scope_and_namespace_of_the_file(ctl: Ctl) -> None:
    ctl.env.put("initialize", b"42", prefix="/pg/prod/")
    ctl.env.put("members/a1", {"conn_url": "postgres://10.1.0.1:5432/postgres",
                               "state": "running", "role": "primary"}, prefix="/pg/prod/")
    ctl.env.put("leader", b"a1", prefix="/pg/prod/")
    path = ctl.write("scope: prod\nnamespace: /pg/\n" + DCS_SECTIONS["consul"])
    result = ctl.invoke("-c", str(path), "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("+ Cluster: prod (42) ")
    assert "| a1 " in result.stdout


def test_a_full_agent_file_still_works(ctl: Ctl) -> None:
    ctl.env.cluster()
    result = ctl.invoke("-c", str(ctl.env.config_path), "list")
    assert result.exit_code == 0, result.output
    assert "+ Cluster: demo" in result.stdout


def test_bad_sections_are_named_and_exit_2(ctl: Ctl) -> None:
    path = ctl.write("etcd3:\n  hosts: 'a:99999999'\nrestapi:\n  listen: nohost\n")
    result = ctl.invoke("-c", str(path), "list", "demo")
    assert result.exit_code == 2
    assert "etcd3.hosts: 'a:99999999': expected host:port or a URL" in result.stderr
    assert "restapi.listen: expected host:port" in result.stderr
    two = ctl.write(DCS_SECTIONS["etcd3"] + DCS_SECTIONS["consul"], "two.yaml")
    both = ctl.invoke("-c", str(two), "list", "demo")
    assert both.exit_code == 2
    assert "several DCS sections" in both.stderr


def test_no_dcs_anywhere(ctl: Ctl) -> None:
    path = ctl.write("scope: demo\n" + CTL)
    result = ctl.invoke("-c", str(path), "list")
    assert result.exit_code == 2
    assert ("Error: Can not find suitable configuration of distributed configuration store"
            in result.stderr)
    assert "-d DCS_URL" in result.stderr


def test_parse_cluster_access_ignores_agent_sections_and_applies_env() -> None:
    access = parse_cluster_access(
        {"name": "n", "postgresql": {"listen": "nonsense"}, "etcd3": {"hosts": "h:2379"}},
        {"PATRONI_SCOPE": "s1", "PATRONI_RESTAPI_USERNAME": "u",
         "PATRONI_RESTAPI_PASSWORD": "p"})
    assert access.scope == "s1"
    assert access.restapi.authentication is not None
    assert access.restapi.authentication.username == "u"
    assert access.model_extra == {"name": "n", "postgresql": {"listen": "nonsense"}}
    overridden = parse_cluster_access({"etcd3": {"hosts": "h:2379"}}, {},
                                      override={"consul": {"host": "c:8500"}})
    assert overridden.etcd is None and overridden.consul == {"host": "c:8500"}
    with pytest.raises(ConfigError) as err:
        parse_cluster_access({"exhibitor": {"hosts": ["x"]}}, {})
    assert err.value.errors[0][0] == "exhibitor"


# ----------------------------------------------------------------------------- where from


def test_patronictl_default_path(ctl: Ctl) -> None:
    ctl.env.cluster()
    default = ctl.home / "patroni" / "patronictl.yaml"
    default.parent.mkdir(parents=True)
    default.write_text("scope: demo\n" + DCS_SECTIONS["zookeeper"])
    assert common.default_config_path() == default
    result = ctl.invoke("list")
    assert result.exit_code == 0, result.output
    assert "+ Cluster: demo" in result.stdout
    assert ctl.seen[0].dcs_kind() == "zookeeper"


def test_missing_default_file_is_not_an_error_with_a_dcs_url(ctl: Ctl) -> None:
    ctl.env.cluster()
    result = ctl.invoke("-d", "etcd3://10.9.9.9:2381", "list", "demo")
    assert result.exit_code == 0, result.output
    assert ctl.seen[0].etcd_endpoints() == [("10.9.9.9", 2381)]


def test_patronictl_config_file_variable(ctl: Ctl) -> None:
    ctl.env.cluster()
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"])
    result = ctl.invoke("list", env={"PATRONICTL_CONFIG_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert "+ Cluster: demo" in result.stdout
    pgha_var = ctl.invoke("list", env={"PGHA_CONFIG_FILE": str(path)})
    assert pgha_var.exit_code == 0, pgha_var.output


def test_named_file_that_does_not_exist(ctl: Ctl) -> None:
    missing = ctl.tmp_path / "nope.yaml"
    result = ctl.invoke("-c", str(missing), "list")
    assert result.exit_code == 2
    assert (f"Error: Provided config file {missing} not existing or no read rights. "
            "Check the -c/--config-file parameter") in result.stderr


# ----------------------------------------------------------------------------- -d/--dcs-url


@pytest.mark.parametrize(("url", "expected"), [
    ("etcd3://h1:2390", {"etcd3": {"host": "h1:2390"}}),
    ("etcd://h1", {"etcd": {"host": "h1:2379"}}),
    ("zookeeper://zk:2181", {"zookeeper": {"hosts": ["zk:2181"]}}),
    ("consul://c1:8500", {"consul": {"host": "c1:8500"}}),
    ("h2:8500", {"consul": {"host": "h2:8500"}}),  # the port picks the scheme
    ("h3", {"etcd": {"host": "h3:2379"}}),
    ("etcd3://:2399/custom", {"etcd3": {"host": "localhost:2399"}, "namespace": "/custom"}),
])
def test_parse_dcs_url(url: str, expected: dict[str, Any]) -> None:
    assert common.parse_dcs_url(url) == expected


def test_dcs_url_replaces_the_files_dcs(ctl: Ctl) -> None:
    ctl.env.cluster()
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"])
    for args in (["-d", "consul://c1:8501"], ["--dcs-url", "consul://c1:8501"]):
        ctl.seen.clear()
        result = ctl.invoke("-c", str(path), *args, "list")
        assert result.exit_code == 0, result.output
        assert ctl.seen[0].dcs_kind() == "consul"
        assert ctl.seen[0].consul == {"host": "c1:8501"}
    ctl.seen.clear()
    from_env = ctl.invoke("-c", str(path), "list", env={"DCS_URL": "zookeeper://z:2182"})
    assert from_env.exit_code == 0, from_env.output
    assert ctl.seen[0].zookeeper == {"hosts": ["z:2182"]}


def test_dcs_url_errors(ctl: Ctl) -> None:
    unknown = ctl.invoke("-d", "redis://r:6379", "list", "demo")
    assert unknown.exit_code == 1
    assert "Error: Unknown dcs scheme: redis" in unknown.stderr
    exhibitor = ctl.invoke("-d", "exhibitor://e:8181", "list", "demo")
    assert exhibitor.exit_code == 2
    assert "exhibitor: DCS exhibitor is not supported" in exhibitor.stderr


# ----------------------------------------------------------------------------- CLUSTER, --group


def test_cluster_name_argument_supplies_the_scope(ctl: Ctl) -> None:
    fakes = ctl.env.cluster()
    path = ctl.write(DCS_SECTIONS["etcd3"] + CTL)  # no scope
    for cmd in (["list", "demo"], ["topology", "demo"], ["show-config", "demo"],
                ["history", "demo"], ["dsn", "demo"]):
        result = ctl.invoke("-c", str(path), *cmd)
        assert result.exit_code == 0, (cmd, result.output)
    fakes["pg2"].script("POST", "/restart", 200, "restarted")
    restart = ctl.invoke("-c", str(path), "restart", "demo", "pg2", "--force")
    assert restart.exit_code == 0, restart.output
    assert "Success: restart on member pg2" in restart.stdout
    assert {c.scope for c in ctl.seen} == {"demo"}


def test_cluster_argument_wins_over_the_files_scope(ctl: Ctl) -> None:
    ctl.env.cluster()
    ctl.env.put("initialize", b"99", prefix="/service/other/")
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"])
    result = ctl.invoke("-c", str(path), "list", "other")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("+ Cluster: other (99) ")
    empty = ctl.invoke("-c", str(path), "reload", "other", "--force")
    assert empty.exit_code == 1
    assert "Error: other cluster doesn't have any members" in empty.stderr


def test_no_cluster_name_at_all(ctl: Ctl) -> None:
    path = ctl.write(DCS_SECTIONS["etcd3"])
    listing = ctl.invoke("-c", str(path), "list")
    assert listing.exit_code == 0  # patronictl only warns
    assert "Listing members: No cluster names were provided" in listing.stderr
    assert listing.stdout == ""
    for cmd in (["switchover", "--force"], ["edit-config", "-s", "ttl=20"],
                ["restart", "--force"]):
        result = ctl.invoke("-c", str(path), *cmd)
        assert result.exit_code == 2, cmd
        assert "Missing argument 'CLUSTER_NAME'" in result.stderr
    assert not ctl.seen


@pytest.mark.parametrize("cmd", [
    ["list"], ["topology"], ["switchover", "--force"], ["failover", "--candidate", "pg2"],
    ["restart", "demo", "--force"], ["reload", "demo", "--force"], ["reinit", "demo", "pg2"],
    ["edit-config", "-s", "ttl=20"], ["show-config"], ["pause"], ["resume"], ["history"],
    ["dsn"], ["query", "-c", "select 1"], ["flush", "demo", "restart"], ["remove", "demo"],
    ["version", "demo"],
])
def test_group_is_refused(ctl: Ctl, cmd: list[str]) -> None:
    fakes = ctl.env.cluster()
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"])
    result = ctl.invoke("-c", str(path), *cmd, "--group", "1")
    assert result.exit_code == 2, result.output
    assert "Error: --group 1: Citus clusters are not supported by pgha" in result.stderr
    assert not any(f.requests for f in fakes.values())
    assert not ctl.seen  # refused before the DCS is asked


# ----------------------------------------------------------------------------- list -e


def test_list_extended_4_1_layout(ctl: Ctl) -> None:
    ctl.env.cluster()
    ctl.env.member("pg3", receive_lsn=0x5000000 - 2 * 1024 * 1024, replay_lsn=0x4000000,
                   tags={"nofailover": True, "zone": "b"}, pending_restart=True, timeline=2)
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"])
    result = ctl.invoke("-c", str(path), "list", "-e")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert _cells(lines[1]) == ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag",
                                "Replay LSN", "Lag", "Pending restart",
                                "Pending restart reason", "Scheduled restart", "Tags"]
    at = next(i for i, line in enumerate(lines) if line.startswith("| pg3 "))
    assert _cells(lines[at])[:10] == ["pg3", "127.0.0.1:5432", "Replica", "streaming", "2",
                                      "0/4E00000", "2", "0/4000000", "16", "*"]
    assert _cells(lines[at])[-1] == "nofailover: true"
    assert _cells(lines[at + 1])[-1] == "zone: b"


# ----------------------------------------------------------------------------- more messages


def test_failover_to_an_asynchronous_member_asks_first(ctl: Ctl) -> None:
    fakes = ctl.env.cluster(config={"synchronous_mode": True})
    ctl.env.put("sync", {"leader": "pg1", "sync_standby": "pg2"})
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"] + CTL)
    result = ctl.invoke("-c", str(path), "failover", "--candidate", "pg3", input="n\n")
    assert result.exit_code == 1
    assert "Are you sure you want to failover to the asynchronous node pg3?" in result.stdout
    assert "Error: Aborting failover" in result.stderr
    assert not fakes["pg1"].requests


def test_switchover_prompt_names_the_standby_leader(ctl: Ctl) -> None:
    fakes = ctl.env.cluster(config={"standby_cluster": {"host": "10.1.1.1"}})
    fakes["pg1"].script("POST", "/switchover", 200, 'Successfully switched over to "pg2"')
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"] + CTL)
    result = ctl.invoke("-c", str(path), "switchover", "--candidate", "pg2",
                        "--scheduled", "now", input="\ny\n")
    assert result.exit_code == 0, result.output
    assert "Standby Leader [pg1]: " in result.stdout
    assert "Are you sure you want to switchover cluster demo, demoting current leader pg1?" \
        in result.stdout


def test_scheduled_restart_confirmation_and_forced_replacement(ctl: Ctl) -> None:
    fakes = ctl.env.cluster()
    ctl.env.member("pg2", scheduled_restart={"schedule": "2099-01-01T00:00:00+00:00"},
                   api=False, api_url=fakes["pg2"].api_url)
    fakes["pg2"].script("POST", "/restart", 202, "restart scheduled")
    fakes["pg2"].script("DELETE", "/restart", 200, "flushed")
    path = ctl.write("scope: demo\n" + DCS_SECTIONS["etcd3"] + CTL)
    when = "2099-02-01T00:00:00+00:00"
    declined = ctl.invoke("-c", str(path), "restart", "demo", "pg2", "--scheduled", when,
                          input="n\n")
    assert declined.exit_code == 1
    assert (f"Are you sure you want to schedule restart of members pg2 at {when}?"
            in declined.stdout)
    assert "Error: Aborted scheduled restart" in declined.stderr
    assert not fakes["pg2"].calls("POST")
    forced = ctl.invoke("-c", str(path), "restart", "demo", "pg2", "--scheduled", when,
                        "--force")
    assert forced.exit_code == 0, forced.output
    # as patronictl with --force: the member's scheduled restart is flushed first
    assert [(c.method, c.path) for c in fakes["pg2"].requests] == [
        ("DELETE", "/restart"), ("POST", "/restart")]
    assert "Success: restart scheduled on member pg2" in forced.stdout.splitlines()


@pytest.mark.parametrize("cmd", [
    [], ["list"], ["topology"], ["switchover"], ["failover"], ["restart"], ["reload"],
    ["reinit"], ["edit-config"], ["show-config"], ["pause"], ["resume"], ["history"], ["dsn"],
    ["query"], ["flush"], ["remove"], ["version"],
])
def test_help_renders(ctl: Ctl, cmd: list[str]) -> None:
    result = ctl.invoke(*cmd, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    if cmd in ([], ["list"], ["switchover"], ["restart"]):
        assert ("--dcs-url" if not cmd else "--group") in result.stdout


def test_unreadable_file_is_one_line(ctl: Ctl) -> None:
    path = ctl.tmp_path / "latin1.yaml"
    path.write_bytes(b"scope: d\xe9mo\netcd3:\n  hosts: h:2379\n")
    result = ctl.invoke("-c", str(path), "list")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"configuration error in {path}:")
    assert "not valid UTF-8 (byte 0xe9 at offset 8)" in result.stderr
    assert "Traceback" not in result.stderr
