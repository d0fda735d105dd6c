"""Nothing is accepted silently: the key registry (pgha.config.keys), its warnings and errors
in the loader, the CLI and the agent, and the generated reference docs/configuration.md."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from tests.support.cli_env import AUTH, CliEnv
from tests.support.fake_api import FakeApis
from typer.testing import CliRunner

from pgha.agent.commands import CommandHandler
from pgha.agent.observe import Observer
from pgha.cli.main import app
from pgha.config import ConfigError, dynamic_config_warnings, load_config, parse_config
from pgha.config.keys import (
    check_dynamic,
    check_env,
    check_local,
    env_table,
    reference_markdown,
)
from pgha.config.keys_table import DYNAMIC, LOCAL, OK, PLANNED
from pgha.config.loader import parse_dynamic_config
from pgha.core.commands import PatchConfig
from pgha.core.model import HaSettings
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

pytestmark = pytest.mark.usefixtures("restore_root_logging")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "patroni-example.yml"
POSTGRES0 = Path(__file__).parent / "fixtures" / "postgres0.yml"
NO_ENV: dict[str, str] = {"PATH": ""}


def minimal(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
                            "postgresql": {"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin"}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def warnings_of(data: dict[str, Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        parse_config(data, NO_ENV)
    return [r.getMessage() for r in caplog.records if r.name == "pgha.config"]


# ------------------------------------------------------------------------- the registry


def test_registry_is_a_tree_without_duplicates() -> None:
    for table in (LOCAL, DYNAMIC):
        paths = [k.path for k in table]
        assert len(paths) == len(set(paths))
        for key in table:
            assert key.parent == "" or key.parent in paths, key.path
            assert key.status == OK or key.note, f"{key.path}: say why it is not supported"
            assert key.status != PLANNED or key.issue is None or key.issue in (10, 12, 13, 14)


def test_registry_covers_patroni_sections_and_env() -> None:
    local = {k.path for k in LOCAL}
    for path in ("citus", "consul.service_tags", "etcd3.srv_suffix", "exhibitor", "kubernetes",
                 "raft", "zookeeper.auth_data", "postgresql.authentication.rewind.sslcrldir",
                 "postgresql.bin_name.pg_rewind", "restapi.server_tokens", "ctl.keyfile_password",
                 "watchdog.safety_margin", "tags.nostream", "log.deduplicate_heartbeat_logs",
                 "postgresql.use_unix_socket_repl", "postgresql.pre_promote"):
        assert path in local, path
    dynamic = {k.path for k in DYNAMIC}
    assert {"synchronous_mode", "slots", "ignore_slots", "standby_cluster.restore_command",
            "postgresql.parameters_primary", "member_slots_ttl"} <= dynamic
    env = dict(env_table())
    assert {"PATRONI_SUPERUSER_SSLMODE", "PATRONI_RESTAPI_USERNAME", "PATRONI_CTL_PASSWORD",
            "PATRONI_POSTGRESQL_BIN_PG_CTL", "PATRONI_KUBERNETES_LABELS", "PATRONI_CITUS_GROUP",
            "PATRONI_ZOOKEEPER_HOSTS", "PATRONI_CONFIGURATION"} <= set(env)


def test_reference_doc_is_up_to_date() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), "run scripts/config-reference"
    text = doc.read_text()
    assert "| `synchronous_mode` | `off` | yes |" in text
    assert "| `postgresql.proxy_address` |  | no | PATRONI_POSTGRESQL_PROXY_ADDRESS | not " \
        "supported yet: " in text
    assert "| `restapi.ciphers` |  | no | PATRONI_RESTAPI_CIPHERS | implemented: " in text
    assert "| `watchdog.mode` | `automatic` | no |  | implemented: " in text
    assert "[docs/configuration.md](docs/configuration.md)" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------- warnings


def test_sample_configs_validate_with_only_the_expected_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = load_config(EXAMPLE, env=NO_ENV)
    assert cfg.name == "postgresql0"
    assert not [r for r in caplog.records if "not supported" in r.getMessage()]
    assert cfg.postgresql.basebackup_options() == [("verbose", None), ("max-rate", "100M")]
    errors, warnings = check_local(yaml.safe_load(POSTGRES0.read_text()))
    assert (errors, warnings) == ([], [])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = load_config(POSTGRES0, env=NO_ENV)
    assert cfg.scope == "batman" and cfg.bootstrap.users["admin"].options == [
        "createrole", "createdb"]
    assert not [r for r in caplog.records if "not supported" in r.getMessage()]


def test_unsupported_keys_warn_naming_key_and_issue(caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(
        bootstrap={"dcs": {"synchronous_mode": True, "standby_cluster": {
                               "host": "10.0.0.9", "port": 5432,
                               "create_replica_methods": ["basebackup"]},
                           "slots": {"s1": {"type": "physical"}}, "primary_race_backoff": 5,
                           "max_timelines_history": 5},
                   "method": "from_backup", "from_backup": {"command": "/bin/restore", "x": 1}},
        watchdog={"mode": "required"}, log={"type": "json", "level": "INFO"},
        postgresql={"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin",
                    "create_replica_methods": ["wal_e", "basebackup"],
                    "wal_e": {"command": "/bin/wal-e", "no_leader": True},
                    "recovery_conf": {"restore_command": "cp %f %p"}},
        kubernetes={"labels": {"app": "pg"}})
    messages = warnings_of(data, caplog)
    by_path = {m.split(":", 1)[0]: m for m in messages}
    assert set(by_path) == {
        "bootstrap.dcs.primary_race_backoff",
        "kubernetes"}, messages  # watchdog and log.* are implemented (issue 14)
    assert by_path["bootstrap.dcs.primary_race_backoff"].endswith("(Patroni master)")
    assert "not supported by pgha" in by_path["kubernetes"]


def test_values_that_change_nothing_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(bootstrap={"dcs": {"synchronous_mode": "off", "synchronous_node_count": 1,
                                      "slots": {}, "standby_cluster": None},
                              "method": "initdb"},
                   watchdog={"mode": False}, log={"type": "plain"},
                   postgresql={"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin",
                               "create_replica_methods": ["basebackup"]},
                   tags={"nosync": False, "nostream": False, "rack": "r1"})
    assert warnings_of(data, caplog) == []


def test_dynamic_key_in_local_yaml_and_local_only_keys(caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(ttl=20, postgresql={"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin",
                                       "use_slots": False, "use_pg_rewind": True})
    messages = warnings_of(data, caplog)
    assert any(m.startswith("ttl: a dynamic setting has no effect") for m in messages)
    assert any(m.startswith("postgresql.use_slots: has no effect") for m in messages)
    assert not any(m.startswith("postgresql.use_pg_rewind") for m in messages)  # local wins


def test_free_form_places_are_not_checked() -> None:
    data = minimal(tags={"my_tag": {"any": "thing"}, "zone": "a"},
                   bootstrap={"users": {"admin": {"password": "x", "whatever": 1}},
                              "initdb": ["data-checksums"]},
                   postgresql={"data_dir": "/d", "parameters": {"not_a_guc": 1},
                               "pg_hba": ["local all all trust"]})
    assert check_local(data) == ([], [])
    assert check_dynamic({"ignore_slots": [{"name": "x", "oops": 1}],
                          "postgresql": {"parameters": {"x": 1}}})[0] == []


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("data", "path", "hint"), [
    (minimal(restpai={"listen": "127.0.0.1:8008"}), "restpai", "restapi"),
    (minimal(postgresql={"data_dri": "/x"}), "postgresql.data_dri", "data_dir"),
    (minimal(bootstrap={"dcs": {"loop_wiat": 5}}), "bootstrap.dcs.loop_wiat", "loop_wait"),
    (minimal(bootstrap={"dcs": {"postgresql": {"use_slot": True}}}),
     "bootstrap.dcs.postgresql.use_slot", "use_slots"),
    (minimal(etcd={"hostz": "h:1"}), "etcd.hostz", "hosts"),
    (minimal(watchdog={"mdoe": "off"}), "watchdog.mdoe", "mode"),
])
def test_misspelled_keys_are_errors_with_a_hint(data: dict[str, Any], path: str,
                                                hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, NO_ENV)
    errors = dict(info.value.errors)
    assert path in errors, info.value.errors
    assert errors[path].startswith("unknown key; did you mean") and hint in errors[path]


def test_environment_variables_pgha_does_not_act_on_warn(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    env = {"PATRONI_NAME": "pg9", "PATRONI_POSTGRESQL_PROXY_ADDRESS": "10.0.0.9:6432",
           "PATRONI_CTL_INSECURE": "true", "PATRONI_RESTAPI_LISTN": "x", "PGHA_ANYTHING": "1",
           "PATRONI_LOG_LEVEL": "", "PATRONI_LOG_TYPE": "json"}  # log.* are implemented
    found = dict(check_env(env))
    assert set(found) == {"PATRONI_POSTGRESQL_PROXY_ADDRESS", "PATRONI_CTL_INSECURE",
                          "PATRONI_RESTAPI_LISTN"}
    assert "not supported yet" in found["PATRONI_POSTGRESQL_PROXY_ADDRESS"]
    assert "ctl.insecure" in found["PATRONI_CTL_INSECURE"]
    assert "PATRONI_RESTAPI_LISTEN" in found["PATRONI_RESTAPI_LISTN"]
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = parse_config(minimal(), {**env, "PATH": ""})
    assert cfg.name == "pg9" and "PATRONI_POSTGRESQL_PROXY_ADDRESS" in caplog.text
    assert cfg.log.type == "json"


# ------------------------------------------------------------------------- dynamic config


def test_dynamic_configuration_unknown_is_error_unsupported_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config({"ttl": 30, "synchronous_mod": True}, prefix="config")
    [(path, message)] = info.value.errors
    assert path == "config.synchronous_mod"
    assert message.startswith("unknown key; did you mean synchronous_mode or ")
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        parse_dynamic_config({"primary_race_backoff": 5})
    assert "primary_race_backoff: not supported yet, ignored: leader race backoff" \
        in caplog.text
    # from the DCS (written by someone else): everything is only reported, never raised
    assert dynamic_config_warnings({"ttl": 30, "bogus": 1, "standby_cluster": {"port": 1}}) == [
        "config.bogus: unknown key",
        "config.standby_cluster: needs a host to stream from, a restore_command to replay the "
        "archive with or create_replica_methods (this cluster runs as a primary)"]
    assert dynamic_config_warnings({"slots": {"a": {"type": "x"}}}) == [
        "config.slots.a.type: must be physical or logical, got 'x' (entry not used)"]
    deep: Any = 1
    for _ in range(5000):
        deep = {"k": deep}
    assert dynamic_config_warnings({"slots": deep})[0].startswith("config: nested more than")


async def test_patch_config_misspelled_refused_and_dcs_config_warned_once(
        caplog: pytest.LogCaptureFixture) -> None:
    kv = MemoryStore(MemoryBackend(), ttl=30, timeout=2.0)
    store = ClusterStore(kv, "/service/", "demo", "m0")
    observer = Observer(store, SimpleNamespace(), SimpleNamespace(),  # type: ignore[arg-type]
                        HaSettings())
    handler = CommandHandler("m0", store, observer, SimpleNamespace(),  # type: ignore[arg-type]
                             asyncio.Event(), request_reload=lambda: None, restart_timeout=30.0)
    async with kv:
        assert await store.write_config({"ttl": 30, "loop_wait": 10})
        bad = await handler.submit(PatchConfig(patch={"loop_wiat": 5}))
        assert bad.code == 400 and "loop_wiat: unknown key; did you mean loop_wait?" in bad.message
        assert (await store.read_config())[0] == {"ttl": 30, "loop_wait": 10}  # nothing written
        good = await handler.submit(PatchConfig(patch={"loop_wait": 5}))
        assert good.code == 200
        # someone else writes an unknown and an unsupported key: the member only warns, once
        assert await store.write_config({"ttl": 30, "tll": 20,
                                          "standby_cluster": {"port": 1}})  # (no host)
        with caplog.at_level(logging.WARNING, logger="pgha.agent"):
            for _ in range(3):
                assert (await observer.dcs_view(2.0)) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "pgha.agent"]
    assert lines == ["DCS config.tll: unknown key; did you mean ttl?",
                     "DCS config.standby_cluster: needs a host to stream from, a "
                     "restore_command to replay the archive with or create_replica_methods "
                     "(this cluster runs as a primary)"]


# ------------------------------------------------------------------------- CLI


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_validate_config_prints_warnings_and_exits_0(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(minimal(bootstrap={"dcs": {"primary_race_backoff": 5}})))
    result = runner.invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "WARNING: bootstrap.dcs.primary_race_backoff: not supported yet" in result.stderr
    assert "configuration is valid" in result.stdout


def test_validate_config_misspelling_exits_2_with_hint(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(minimal(restapi={"lisen": "127.0.0.1:8008"})))
    result = runner.invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 2
    assert "restapi.lisen: unknown key; did you mean listen?" in result.stderr
    assert "Traceback" not in result.output


def test_edit_config_misspelled_key_exits_2_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> None:
    env = CliEnv(tmp_path, monkeypatch, apis, auth=AUTH)
    env.cluster(config={"ttl": 30, "loop_wait": 10})
    before = env.revision("config")
    result = env.invoke("edit-config", "-s", "loop_wiat=5", "--force")
    assert result.exit_code == 2
    assert "loop_wiat: unknown key; did you mean loop_wait?" in result.stderr
    assert env.revision("config") == before


def test_synchronous_standby_names_set_by_hand_is_named_when_synchronous_mode_owns_it(
        caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(bootstrap={"dcs": {"synchronous_mode": "quorum"}},
                   postgresql={"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin",
                               "parameters": {"synchronous_standby_names": "*"}})
    assert warnings_of(data, caplog) == [
        "postgresql.parameters.synchronous_standby_names: ignored while synchronous_mode is "
        "on: pgha sets it from the synchronous standbys it chooses"]
    assert dynamic_config_warnings({"synchronous_mode": True, "postgresql": {
        "parameters": {"synchronous_standby_names": "pg2"}}}) == [
        "config.postgresql.parameters.synchronous_standby_names: ignored while "
        "synchronous_mode is on: pgha sets it from the synchronous standbys it chooses"]
    assert dynamic_config_warnings({"synchronous_mode": False, "postgresql": {
        "parameters": {"synchronous_standby_names": "pg2"}}}) == []
