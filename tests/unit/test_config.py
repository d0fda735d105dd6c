"""Tests of pgha.config: loading, env overrides, validation errors with key paths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgha.config import (
    Config,
    ConfigError,
    DynamicConfig,
    filter_pg_parameters,
    load_config,
    parse_config,
    parse_duration,
    parse_dynamic_config,
    split_host_port,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "patroni-example.yml"
NO_ENV: dict[str, str] = {}


def minimal(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "scope": "batman",
        "name": "pg1",
        "etcd": {"host": "127.0.0.1:2379"},
        "postgresql": {"data_dir": "/var/lib/pg", "bin_dir": "/opt/pg/bin"},
    }
    data.update(extra)
    return data


def errors_of(data: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or NO_ENV)
    return dict(info.value.errors)


# ------------------------------------------------------------------------- example file


def test_example_file_loads() -> None:
    cfg = load_config(EXAMPLE, env=NO_ENV)
    assert (cfg.scope, cfg.namespace, cfg.name) == ("batman", "/service/", "postgresql0")
    assert cfg.dcs_kind() == "etcd"
    assert cfg.etcd_endpoints() == [("127.0.0.1", 2379)]
    assert (cfg.restapi.listen_host, cfg.restapi.listen_port) == ("127.0.0.1", 8008)
    assert cfg.restapi.api_url == "http://127.0.0.1:8008/patroni"
    assert cfg.restapi.authentication is not None
    assert cfg.restapi.authentication.username == "admin"
    dcs = cfg.bootstrap.dcs
    assert (dcs.ttl, dcs.loop_wait, dcs.retry_timeout) == (30, 10, 10)
    assert dcs.maximum_lag_on_failover == 1048576
    assert dcs.postgresql.use_pg_rewind is True
    assert dcs.postgresql.parameters["wal_keep_size"] == "128MB"
    assert dcs.timing_warnings() == []
    assert cfg.bootstrap.initdb == [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"]
    assert cfg.bootstrap.users["admin"].options == ["createrole", "createdb"]
    assert len(cfg.bootstrap.pg_hba) == 2
    auth = cfg.postgresql.authentication
    assert (auth.superuser.username, auth.superuser.password) == ("postgres", "zalando")
    assert (auth.replication.username, auth.replication.password) == ("replicator", "rep-pass")
    assert auth.rewind.username == "rewind_user"
    assert cfg.postgresql.pgpass == "/tmp/pgpass0"
    assert cfg.postgresql.config_dir == cfg.postgresql.data_dir == "data/postgresql0"
    assert cfg.postgresql.conn_url == "postgres://127.0.0.1:5432/postgres"
    assert cfg.postgresql.parameters == {"unix_socket_directories": ".."}
    assert cfg.postgresql.basebackup == ["verbose", {"max-rate": "100M"}]
    assert cfg.tags.nofailover is False and cfg.tags.can_failover
    assert cfg.watchdog.mode == "automatic"  # Patroni's default


def test_example_round_trips_through_dump() -> None:
    cfg = load_config(EXAMPLE, env=NO_ENV)
    again = parse_config(cfg.model_dump(), NO_ENV)
    assert again == cfg
    assert cfg.bootstrap.dcs.to_dcs()["ttl"] == 30
    assert isinstance(cfg.bootstrap.dcs.to_dcs()["ttl"], int)


# ------------------------------------------------------------------------- env overrides


def test_env_overrides_both_prefixes() -> None:
    env = {
        "PATRONI_NAME": "from-patroni",
        "PATRONI_RESTAPI_LISTEN": "0.0.0.0:8010",
        "PATRONI_RESTAPI_USERNAME": "u",
        "PATRONI_RESTAPI_PASSWORD": "p",
        "PATRONI_RESTAPI_ALLOWLIST": "10.0.0.1, 10.0.0.2",
        "PGHA_POSTGRESQL_DATA_DIR": "/data/pg",
        "PGHA_SUPERUSER_PASSWORD": "secret",
        "PATRONI_REPLICATION_USERNAME": "repl",
        "PATRONI_REWIND_SSLMODE": "require",
        "PGHA_LOG_LEVEL": "debug",
    }
    cfg = load_config(EXAMPLE, env=env)
    assert cfg.name == "from-patroni"
    assert cfg.restapi.listen == "0.0.0.0:8010"
    assert cfg.restapi.connect_host_port == "127.0.0.1:8008"  # connect_address from the file
    assert cfg.restapi.authentication is not None
    assert (cfg.restapi.authentication.username, cfg.restapi.authentication.password) == ("u", "p")
    assert cfg.restapi.allowlist == ["10.0.0.1", "10.0.0.2"]
    assert cfg.postgresql.data_dir == "/data/pg"
    assert cfg.postgresql.authentication.superuser.password == "secret"
    assert cfg.postgresql.authentication.superuser.username == "postgres"
    assert cfg.postgresql.authentication.replication.username == "repl"
    assert cfg.postgresql.authentication.rewind.libpq_params() == {
        "user": "rewind_user", "password": "rewind_password", "sslmode": "require"}
    assert cfg.log.level == "DEBUG"


def test_env_pgha_prefix_wins_over_patroni() -> None:
    env = {"PATRONI_SCOPE": "old", "PGHA_SCOPE": "new", "PATRONI_NAMESPACE": "/ns/"}
    cfg = parse_config(minimal(), env)
    assert cfg.scope == "new"
    assert cfg.namespace == "/ns/"


def test_env_does_not_modify_input() -> None:
    data = minimal()
    parse_config(data, {"PGHA_POSTGRESQL_LISTEN": "10.0.0.1:5433"})
    assert "listen" not in data["postgresql"]


def test_env_etcd_creates_section() -> None:
    data = minimal()
    del data["etcd"]
    cfg = parse_config(data, {"PATRONI_ETCD3_HOSTS": "10.0.0.1:2379,10.0.0.2",
                              "PGHA_ETCD_PROTOCOL": "HTTPS"})
    assert cfg.dcs_kind() == "etcd"
    assert cfg.etcd is not None and cfg.etcd.protocol == "https"
    assert cfg.etcd_endpoints() == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]


def test_env_etcd_goes_into_existing_etcd3_section() -> None:
    data = minimal()
    data["etcd3"] = data.pop("etcd")
    cfg = parse_config(data, {"PATRONI_ETCD_USERNAME": "root"})
    assert cfg.etcd is not None and cfg.etcd.username == "root"
    assert cfg.etcd.host == "127.0.0.1:2379"


def test_env_consul_and_zookeeper() -> None:
    data = minimal()
    del data["etcd"]
    cfg = parse_config(data, {"PATRONI_CONSUL_HOST": "127.0.0.1:8500", "PGHA_CONSUL_TOKEN": "t"})
    assert cfg.dcs_kind() == "consul"
    assert cfg.consul == {"host": "127.0.0.1:8500", "token": "t"}
    cfg = parse_config(data, {"PATRONI_ZOOKEEPER_HOSTS": "z1:2181,z2:2181"})
    assert cfg.dcs_kind() == "zookeeper"
    assert cfg.zookeeper == {"hosts": ["z1:2181", "z2:2181"]}


def test_configuration_env_is_the_whole_yaml() -> None:
    text = yaml.safe_dump(minimal(name="from-env"))
    cfg = load_config(None, env={"PATRONI_CONFIGURATION": text})
    assert cfg.name == "from-env"
    both = {"PATRONI_CONFIGURATION": text,
            "PGHA_CONFIGURATION": yaml.safe_dump(minimal(name="pgha-env")),
            "PGHA_NAME": "ignored"}
    assert load_config("/nonexistent/file.yml", env=both).name == "pgha-env"


def test_no_path_and_no_configuration_env() -> None:
    with pytest.raises(ConfigError, match="PGHA_CONFIGURATION"):
        load_config(None, env=NO_ENV)


# ------------------------------------------------------------------------- errors


def test_every_error_is_listed_with_its_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({
        "scope": "batman",
        "name": "pg1",
        "restapi": {"listen": "localhost", "verify_client": "sometimes"},
        "etcd": {"hosts": ["127.0.0.1:2379", "bad:port:x"]},
        "bootstrap": {"dcs": {"ttl": 2, "loop_wait": 0, "synchronous_mode": "maybe"},
                      "initdb": ["data-checksums", {"encoding": ["a"]}]},
        "postgresql": {"listen": "127.0.0.1:99999",
                       "authentication": {"superuser": {"username": "", "pasword": "x"}},
                       "callbacks": {"on_role_chnage": "/bin/true"}},
        "watchdog": {"mode": "sometimes"},
        "tags": {"failover_priority": -1},
    }))
    with pytest.raises(ConfigError) as info:
        load_config(bad, env=NO_ENV)
    errors = dict(info.value.errors)
    assert errors["restapi.listen"] == "expected host:port"
    assert errors["restapi.verify_client"].startswith("expected 'none', 'optional' or 'required'")
    assert "bad:port:x" in errors["etcd.hosts"]
    assert errors["bootstrap.dcs.ttl"] == "must be >= 5"
    assert errors["bootstrap.dcs.loop_wait"] == "must be >= 1"
    assert errors["bootstrap.dcs.synchronous_mode"] == "expected on, off or quorum"
    assert errors["bootstrap.initdb"].startswith("item 1:")
    assert "65535" in errors["postgresql.listen"]
    assert errors["postgresql.data_dir"] == "field required"
    assert "pasword" in errors["postgresql.authentication.superuser"]
    assert errors["postgresql.callbacks.on_role_chnage"] == "unknown key"
    assert "watchdog.mode" in errors
    assert errors["tags.failover_priority"] == "must be >= 0"
    text = str(info.value)
    assert "bootstrap.dcs.ttl: must be >= 5" in text.splitlines()
    assert len(text.splitlines()) == len(info.value.errors)


def test_empty_username_error_path() -> None:
    data = minimal()
    data["postgresql"]["authentication"] = {"superuser": {"username": "", "password": "x"}}
    assert errors_of(data) == {"postgresql.authentication.superuser.username": "must not be empty"}


def test_missing_top_level_keys() -> None:
    errors = errors_of({"etcd": {}})
    assert errors == {"scope": "field required", "name": "field required",
                      "postgresql": "field required"}


def test_type_errors_show_the_value() -> None:
    data = minimal(bootstrap={"dcs": {"maximum_lag_on_failover": "lots"}})
    msg = errors_of(data)["bootstrap.dcs.maximum_lag_on_failover"]
    assert msg.startswith("expected a valid integer") and "'lots'" in msg


def test_list_item_paths_use_brackets() -> None:
    data = minimal()
    data["postgresql"]["pg_hba"] = ["host all all 0/0 md5", {"not": "a string"}]
    assert "postgresql.pg_hba[1]" in errors_of(data)


def test_no_dcs_section() -> None:
    data = minimal()
    del data["etcd"]
    errors = errors_of(data)
    assert errors == {"": "no DCS section: one of etcd3, etcd, consul, zookeeper is required"}
    with pytest.raises(ConfigError, match=r"^no DCS section"):
        parse_config(data, NO_ENV)


def test_several_dcs_sections() -> None:
    data = minimal(consul={"host": "127.0.0.1:8500"})
    with pytest.raises(ConfigError, match="several DCS sections: etcd, consul"):
        parse_config(data, NO_ENV)
    data = minimal(etcd3={"host": "127.0.0.1:2379"})
    with pytest.raises(ConfigError, match="several DCS sections: etcd3, etcd"):
        parse_config(data, NO_ENV)


def test_unsupported_dcs_section() -> None:
    data = minimal(kubernetes={"namespace": "x"})
    del data["etcd"]
    assert "not supported" in errors_of(data)["kubernetes"]


def test_dcs_errors_are_combined_with_field_errors() -> None:
    data = minimal(consul={}, bootstrap={"dcs": {"ttl": 1}})
    errors = errors_of(data)
    assert errors[""].startswith("several DCS sections")
    assert errors["bootstrap.dcs.ttl"] == "must be >= 5"


def test_etcd3_errors_use_the_written_section_name() -> None:
    data = minimal()
    del data["etcd"]
    data["etcd3"] = {"hosts": "h1:2379,h2:notaport"}
    assert "etcd3.hosts" in errors_of(data)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("scope: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(broken, env=NO_ENV)
    assert info.value.errors[0][0] == str(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", env=NO_ENV)
    listing = tmp_path / "list.yml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing, env=NO_ENV)


# ------------------------------------------------------------------------- pg parameters


def test_unknown_parameters_removed_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(bootstrap={"dcs": {"postgresql": {"parameters": {
        "wal_keep_segment": 8, "max_connections": 100, "shared_bufers": "1GB"}}}})
    data["postgresql"]["parameters"] = {
        "wal_keep_segments": 8, "TimeZone": "UTC", "pg_stat_statements.max": 1000,
        "wal_keep_segment": 8, "max_wal_sizee": "1GB"}
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = parse_config(data, NO_ENV)
    assert cfg.postgresql.parameters == {
        "wal_keep_segments": 8, "TimeZone": "UTC", "pg_stat_statements.max": 1000}
    assert cfg.bootstrap.dcs.postgresql.parameters == {"max_connections": 100}
    warnings = [r for r in caplog.records if r.name == "pgha.config"]
    assert all(r.levelno == logging.WARNING for r in warnings)
    text = "\n".join(r.getMessage() for r in warnings)
    for name in ("wal_keep_segment", "max_wal_sizee", "shared_bufers"):
        assert name in text
    assert "postgresql.parameters" in text and "bootstrap.dcs.postgresql.parameters" in text


def test_filter_pg_parameters() -> None:
    kept, removed = filter_pg_parameters({
        "shared_buffers": "1GB", "SHARED_BUFFERS": "2GB", "datestyle": "ISO", "wal_keep_size": 1,
        "auto_explain.log_min_duration": 0, "transaction_timeout": 0, "no_such_guc": 1})
    assert removed == ["no_such_guc"]
    assert "SHARED_BUFFERS" in kept and "datestyle" in kept and "transaction_timeout" in kept


def test_dynamic_config_from_dcs_filters_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        dyn = parse_dynamic_config({"ttl": 20, "postgresql": {"parameters": {"bogus": 1}}})
    assert dyn.postgresql.parameters == {}
    assert "bogus" in caplog.text
    with pytest.raises(ConfigError) as info:  # unknown keys: see test_config_keys.py
        parse_dynamic_config({"ttl": 20, "custom_key": {"a": 1}})
    assert info.value.errors == [("custom_key", "unknown key")]
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config({"ttl": "x", "loop_wait": -1}, prefix="config")
    assert {p for p, _ in info.value.errors} == {"config.ttl", "config.loop_wait"}


# ------------------------------------------------------------------------- sections


def test_initdb_mixing_dicts_and_switches() -> None:
    cfg = parse_config(minimal(bootstrap={"initdb": [
        {"encoding": "UTF8"}, "data-checksums", {"locale": "en_US.UTF-8"}, "--no-sync"]}), NO_ENV)
    assert cfg.bootstrap.initdb[0] == {"encoding": "UTF8"}
    assert cfg.bootstrap.initdb_args() == [
        "--encoding=UTF8", "--data-checksums", "--locale=en_US.UTF-8", "--no-sync"]
    assert "bootstrap.initdb" in errors_of(minimal(bootstrap={"initdb": "data-checksums"}))


@pytest.mark.parametrize(("value", "seconds"), [
    ("30min", 1800), ("1h", 3600), ("90s", 90), ("1d", 86400), ("500ms", 0.5), (600, 600),
    ("120", 120), (2.5, 2.5)])
def test_member_slots_ttl(value: object, seconds: float) -> None:
    dyn = DynamicConfig.model_validate({"member_slots_ttl": value})
    assert dyn.member_slots_ttl == seconds
    assert parse_duration(value) == seconds


def test_member_slots_ttl_invalid() -> None:
    errors = errors_of(minimal(bootstrap={"dcs": {"member_slots_ttl": "soon"}}))
    assert "duration" in errors["bootstrap.dcs.member_slots_ttl"]
    assert DynamicConfig().member_slots_ttl == 1800


def test_timing_rule_warning_and_adjustment() -> None:
    ok = DynamicConfig(ttl=30, loop_wait=10, retry_timeout=10)
    assert ok.timing_warnings() == []
    assert ok.adjusted() == ok

    bad = DynamicConfig(ttl=20, loop_wait=10, retry_timeout=10)
    (warning,) = bad.timing_warnings()
    assert "exceeds ttl (20)" in warning
    fixed = bad.adjusted()
    assert (fixed.ttl, fixed.loop_wait, fixed.retry_timeout) == (20, 10, 5)
    assert fixed.timing_warnings() == []
    assert bad.retry_timeout == 10  # the original is untouched

    tiny = DynamicConfig(ttl=6, loop_wait=5, retry_timeout=3).adjusted()
    assert tiny.loop_wait == tiny.retry_timeout == 2
    assert tiny.loop_wait + 2 * tiny.retry_timeout <= tiny.ttl


def test_dynamic_config_details() -> None:
    dyn = DynamicConfig.model_validate({
        "master_start_timeout": 60, "synchronous_mode": "quorum", "my_extension": True,
        "ttl": 5})
    assert dyn.primary_start_timeout == 60
    assert dyn.synchronous_mode == "quorum"
    assert dyn.model_extra == {"my_extension": True}
    assert DynamicConfig.model_validate({"synchronous_mode": "on"}).synchronous_mode is True
    assert DynamicConfig.model_validate({"synchronous_mode": "off"}).synchronous_mode is False
    dumped = dyn.to_dcs()
    assert dumped["primary_start_timeout"] == 60 and "master_start_timeout" not in dumped
    assert dumped["my_extension"] is True and "slots" not in dumped


@pytest.mark.parametrize("hosts", [["10.0.0.1:2379", "10.0.0.2:2380", "10.0.0.3"],
                                   "10.0.0.1:2379,10.0.0.2:2380, 10.0.0.3"])
def test_etcd_hosts_list_or_comma_string(hosts: object) -> None:
    cfg = parse_config(minimal(etcd={"hosts": hosts}), NO_ENV)
    assert cfg.etcd_endpoints() == [("10.0.0.1", 2379), ("10.0.0.2", 2380), ("10.0.0.3", 2379)]


def test_etcd_host_url_and_default() -> None:
    assert parse_config(minimal(etcd={"host": "10.1.1.1"}), NO_ENV).etcd_endpoints() == [
        ("10.1.1.1", 2379)]
    assert parse_config(minimal(etcd={"url": "https://e.example:4001"}),
                        NO_ENV).etcd_endpoints() == [("e.example", 4001)]
    assert parse_config(minimal(etcd={"hosts": ["http://[::1]:2379"]}),
                        NO_ENV).etcd_endpoints() == [("::1", 2379)]
    assert parse_config(minimal(etcd={}), NO_ENV).etcd_endpoints() == [("127.0.0.1", 2379)]
    assert "" in errors_of(minimal(etcd=None))  # null section = absent


def test_etcd3_is_stored_as_etcd() -> None:
    data = minimal()
    data["etcd3"] = data.pop("etcd")
    cfg = parse_config(data, NO_ENV)
    assert cfg.dcs_kind() == "etcd" and cfg.etcd is not None
    assert "etcd3" not in (cfg.model_extra or {})


def test_listen_addresses() -> None:
    data = minimal(restapi={"listen": "[::1]:8009"})
    data["postgresql"]["listen"] = "127.0.0.1,10.0.0.5:5433"
    cfg = parse_config(data, NO_ENV)
    assert (cfg.restapi.listen_host, cfg.restapi.listen_port) == ("::1", 8009)
    assert cfg.restapi.connect_host_port == "[::1]:8009"
    assert (cfg.postgresql.listen_host, cfg.postgresql.listen_port) == ("127.0.0.1,10.0.0.5", 5433)
    assert (cfg.postgresql.connect_host, cfg.postgresql.connect_port) == ("127.0.0.1", 5433)
    wildcard = parse_config(minimal(restapi={"listen": "0.0.0.0:8008",
                                             "connect_address": "10.0.0.5:8008"}), NO_ENV)
    assert wildcard.restapi.api_url == "http://10.0.0.5:8008/patroni"
    assert split_host_port("h1,h2:5432") == ("h1,h2", 5432)
    assert errors_of(minimal(restapi={"listen": "a,b:8008"})) == {
        "restapi.listen": "expected host:port"}


def test_defaults() -> None:
    cfg = parse_config(minimal(), {"PATH": ""})
    assert cfg.restapi.listen == "127.0.0.1:8008"
    assert cfg.postgresql.listen == "127.0.0.1:5432"
    assert cfg.postgresql.pgpass == "/var/lib/.pgpass_pgha_pg1"  # no HOME: beside data_dir
    home = parse_config(minimal(), {"PATH": "", "HOME": "/home/pg"})
    assert home.postgresql.pgpass == "/home/pg/.pgpass_pgha_pg1"
    assert cfg.postgresql.bin_dir == "/opt/pg/bin"
    auth = cfg.postgresql.authentication
    assert (auth.superuser.username, auth.replication.username, auth.rewind.username) == (
        "postgres", "replicator", "rewind_user")
    assert auth.superuser.password is None
    assert cfg.postgresql.pg_ctl_timeout == 60 and cfg.postgresql.use_pg_rewind is None
    assert cfg.bootstrap.dcs == DynamicConfig()
    assert cfg.tags.failover_priority == 1 and cfg.log.level == "INFO"
    assert cfg.watchdog.safety_margin == 5


def test_bin_dir_default_from_path(tmp_path: Path) -> None:
    data = minimal()
    del data["postgresql"]["bin_dir"]
    assert parse_config(data, {"PATH": str(tmp_path)}).postgresql.bin_dir == (
        "/usr/lib/postgresql/15/bin")
    real_bin = tmp_path / "pg" / "bin"
    real_bin.mkdir(parents=True)
    (real_bin / "pg_ctl").write_text("#!/bin/sh\n")
    (real_bin / "pg_ctl").chmod(0o755)
    (tmp_path / "pg_ctl").symlink_to(real_bin / "pg_ctl")  # like /usr/local/bin/pg_ctl
    found = parse_config(data, {"PATH": str(tmp_path)}).postgresql.bin_dir
    assert found == str(real_bin.resolve())


def test_nulls_mean_defaults() -> None:
    data = minimal(tags=None, bootstrap={"dcs": None, "users": {"admin": None}})
    data["postgresql"].update(parameters=None, authentication={"superuser": None})
    cfg = parse_config(data, NO_ENV)
    assert cfg.postgresql.parameters == {}
    assert cfg.bootstrap.users["admin"].options == []
    assert cfg.postgresql.authentication.superuser.username == "postgres"


def test_watchdog_yaml_off_is_accepted() -> None:
    cfg = parse_config(yaml.safe_load(yaml.safe_dump(minimal())) | yaml.safe_load(
        "watchdog: {mode: off, device: /dev/watchdog0, safety_margin: -1}"), NO_ENV)
    assert (cfg.watchdog.mode, cfg.watchdog.safety_margin) == ("off", -1)
    assert parse_config(minimal(watchdog={"mode": "Required"}), NO_ENV).watchdog.mode == "required"


def test_tags_custom_and_conflict_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = parse_config(minimal(tags={"nofailover": True, "failover_priority": 2,
                                         "zone": "eu-1", "replicatefrom": "pg2"}), NO_ENV)
    assert cfg.tags.custom == {"zone": "eu-1"}
    assert cfg.tags.replicatefrom == "pg2"
    assert not cfg.tags.can_failover
    assert "nofailover" in caplog.text
    assert not parse_config(minimal(tags={"failover_priority": 0}), NO_ENV).tags.can_failover


def test_extra_keys_preserved_and_post_init_alias() -> None:
    data = minimal(citus={"group": 0}, bootstrap={"post_init": "/bin/setup.sh", "method": "x",
                                                   "x": {"command": "/bin/x"}})
    cfg = parse_config(data, NO_ENV)
    assert cfg.model_extra == {"citus": {"group": 0}}
    assert cfg.bootstrap.post_bootstrap == "/bin/setup.sh"
    assert cfg.bootstrap.model_extra == {"x": {"command": "/bin/x"}}


def test_directory_merged_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "10-base.yml").write_text(yaml.safe_dump(minimal(
        bootstrap={"dcs": {"ttl": 30, "loop_wait": 10}})))
    (tmp_path / "20-member.yaml").write_text(yaml.safe_dump(
        {"name": "pg2", "postgresql": {"listen": "127.0.0.1:5440"},
         "bootstrap": {"dcs": {"ttl": 40}}}))
    (tmp_path / "05-first.yml").write_text("name: overridden\nrestapi: {listen: 127.0.0.1:8100}\n")
    (tmp_path / "notes.txt").write_text("not: [yaml")
    cfg = load_config(tmp_path, env=NO_ENV)
    assert cfg.name == "pg2"
    assert cfg.restapi.listen == "127.0.0.1:8100"
    assert cfg.postgresql.listen == "127.0.0.1:5440"
    assert cfg.postgresql.data_dir == "/var/lib/pg"  # merged, not replaced
    assert (cfg.bootstrap.dcs.ttl, cfg.bootstrap.dcs.loop_wait) == (40, 10)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*.yml"):
        load_config(tmp_path, env=NO_ENV)


def test_config_constructed_directly_checks_dcs() -> None:
    cfg = Config.model_validate({"scope": "s", "name": "n", "postgresql": {"data_dir": "/d"}})
    with pytest.raises(ConfigError, match="no DCS section"):
        cfg.dcs_kind()
    with pytest.raises(ConfigError, match="no etcd section"):
        cfg.etcd_endpoints()
