"""``postgresql.create_replica_methods``, ``postgresql.basebackup`` and the custom method
sections: what is accepted, what reaches the PostgreSQL layer, and the one-line errors naming
the key for what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from pgha.config import ConfigError, parse_config
from pgha.config.replica import basebackup_options
from pgha.pg.from_config import pg_settings
from pgha.pg.settings import ReplicaMethod

pytestmark = pytest.mark.usefixtures("restore_root_logging")

NO_ENV: dict[str, str] = {"PATH": ""}


def config(**postgresql: Any) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
            "postgresql": {"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin", **postgresql}}


def errors_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, NO_ENV)
    assert all("\n" not in f"{path}: {msg}" for path, msg in info.value.errors)
    return info.value.errors


@pytest.mark.parametrize("methods", [None, [], ["basebackup"]], ids=["null", "empty", "set"])
def test_the_default_is_basebackup(methods: list[str] | None) -> None:
    data = config() if methods == ["basebackup"] else config(create_replica_methods=methods)
    cfg = parse_config(data, NO_ENV)
    settings = pg_settings(cfg, cfg.bootstrap.dcs)
    assert settings.replica_methods == (ReplicaMethod("basebackup"),)
    assert settings.basebackup_options == ()
    assert not settings.replica_without_leader


def test_custom_methods_reach_the_postgresql_layer_in_order() -> None:
    cfg = parse_config(config(
        create_replica_methods=["from_backup", "basebackup", "archive"],
        from_backup={"command": "/usr/bin/restore --fast", "keep_data": True,
                     "target": "latest", "retries": 3},
        archive={"command": "/usr/bin/from-archive", "no_master": 1, "no_params": "yes"},
        basebackup={"max-rate": "100M", "checkpoint": "fast", "verbose": True,
                    "progress": False}), NO_ENV)
    settings = pg_settings(cfg, cfg.bootstrap.dcs)
    assert settings.replica_methods == (
        ReplicaMethod("from_backup", "/usr/bin/restore --fast", keep_data=True,
                      params=(("target", "latest"), ("retries", 3))),
        ReplicaMethod("basebackup"),
        ReplicaMethod("archive", "/usr/bin/from-archive", no_params=True, no_leader=True),
    )
    assert settings.replica_without_leader  # no_master is the older spelling of no_leader
    assert settings.basebackup_options == (("max-rate", "100M"), ("checkpoint", "fast"),
                                           ("verbose", None))


def test_every_method_section_is_known_for_a_standby_clusters_own_list() -> None:
    cfg = parse_config(config(from_repo={"command": "/usr/bin/restore", "target": "latest"},
                              parameters={"work_mem": "4MB"}), NO_ENV)
    settings = pg_settings(cfg, cfg.bootstrap.dcs)
    assert settings.replica_methods == (ReplicaMethod("basebackup"),)  # not listed: not run
    assert settings.method_sections == {"from_repo": ReplicaMethod(
        "from_repo", "/usr/bin/restore", params=(("target", "latest"),))}


def test_no_leader_on_basebackup_alone_is_not_a_no_leader_method() -> None:
    cfg = parse_config(config(create_replica_methods=["copy", "basebackup"],
                              copy={"command": "cp", "no_leader": False}), NO_ENV)
    assert not pg_settings(cfg, cfg.bootstrap.dcs).replica_without_leader


@pytest.mark.parametrize(("postgresql", "path", "words"), [
    ({"create_replica_methods": ["wal_g", "basebackup"]},
     "postgresql.create_replica_methods[0]", "no section postgresql.wal_g"),
    ({"create_replica_methods": ["basebackup", "wal_g"], "wal_g": "wal-g fetch"},
     "postgresql.create_replica_methods[1]", "no section postgresql.wal_g"),
    ({"create_replica_methods": ["wal_g"], "wal_g": {"no_leader": True}},
     "postgresql.wal_g.command", "field required"),
    ({"create_replica_methods": ["wal_g"], "wal_g": {"command": "  "}},
     "postgresql.wal_g.command", "must not be empty"),
    ({"create_replica_methods": ["wal_g"], "wal_g": {"command": "restore 'unclosed"}},
     "postgresql.wal_g.command", "a shell cannot split it"),
    ({"create_replica_methods": ["wal_g"], "wal_g": {"command": "x", "keep_data": "maybe"}},
     "postgresql.wal_g.keep_data", "boolean"),
    ({"create_replica_methods": ["wal_g"], "wal_g": {"command": "x", "opts": {"a": 1}}},
     "postgresql.wal_g", "opts: expected a single value"),
    ({"create_replica_methods": ["parameters"]},
     "postgresql.create_replica_methods[0]", "cannot name a replica method"),
    ({"create_replica_methods": "basebackup"}, "postgresql.create_replica_methods",
     "valid list"),
])
def test_a_bad_method_is_a_one_line_error_naming_the_key(postgresql: dict[str, Any], path: str,
                                                         words: str) -> None:
    errors = dict(errors_of(config(**postgresql)))
    assert path in errors, errors
    assert words in errors[path]


@pytest.mark.parametrize(("value", "option"), [
    (["pgdata"], "pgdata"), (["-D"], "D"), ({"wal-method": "fetch"}, "wal-method"),
    ([{"X": "none"}], "X"), ({"format": "tar"}, "format"), (["write-recovery-conf"],
                                                              "write-recovery-conf"),
    (["R"], "R"), ({"dbname": "host=evil"}, "dbname"), ([{"host": "10.0.0.1"}], "host"),
    ({"port": 5433}, "port"), ({"username": "postgres"}, "username"), (["no-password"],
                                                                        "no-password"),
    ({"target": "blackhole"}, "target"),
])
def test_options_pgha_controls_are_refused_naming_them(value: Any, option: str) -> None:
    errors = errors_of(config(basebackup=value))
    assert len(errors) == 1
    path, message = errors[0]
    assert path == "postgresql.basebackup"
    assert message.startswith(f"option {option!r} is not allowed: ")


@pytest.mark.parametrize(("value", "words"), [
    ([{"max-rate": "1M", "checkpoint": "fast"}], "one option and its value"),
    ([3], "one option and its value"),
    ({"max-rate": ["1M"]}, "expected a single value"),
    ({"label": "a\nb"}, "line break"),
    ({"max rate": "1M"}, "not an option name"),
    ("verbose", "expected a list of options or a mapping"),
])
def test_malformed_basebackup_options_are_refused(value: Any, words: str) -> None:
    errors = dict(errors_of(config(basebackup=value)))
    assert words in errors["postgresql.basebackup"]


def test_basebackup_option_shapes() -> None:
    assert basebackup_options(None) == []
    assert basebackup_options(["verbose", {"max-rate": "100M"}, "--progress",
                               {"checkpoint": "spread"}, {"r": 1024}]) == [
        ("verbose", None), ("max-rate", "100M"), ("progress", None),
        ("checkpoint", "spread"), ("r", "1024")]
    assert basebackup_options({"waldir": "/wal", "verbose": True, "progress": False,
                               "label": None, "max-rate": 32768}) == [
        ("waldir", "/wal"), ("verbose", None), ("max-rate", "32768")]
