"""``bootstrap.method`` and its custom method section: what is accepted, and bad input as one
line naming the key (``pgha validate-config`` exits 2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pgha.cli.main import app
from pgha.config import ConfigError, parse_config

pytestmark = pytest.mark.usefixtures("restore_root_logging")

NO_ENV: dict[str, str] = {"PATH": ""}


def config(bootstrap: dict[str, Any]) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
            "postgresql": {"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin"},
            "bootstrap": bootstrap}


def errors_of(bootstrap: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(config(bootstrap), NO_ENV)
    return str(err.value).splitlines()


def test_a_custom_method_is_read_with_its_settings_and_extra_keys(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = parse_config(config({
            "method": "from_backup",
            "from_backup": {"command": "/usr/bin/restore --verbose", "backup": "latest",
                            "retries": 3, "keep_existing_recovery_conf": True,
                            "recovery_conf": {"Restore_Command": "cp /a/%f %p",
                                              "recovery_target_time": "2026-01-01 00:00:00+00",
                                              "recovery_target_action": "promote",
                                              "recovery_target_inclusive": False}}}), NO_ENV)
    method = cfg.bootstrap.custom_method
    assert method is not None
    assert method.command == "/usr/bin/restore --verbose"
    assert method.keep_existing_recovery_conf and not method.no_params
    assert method.extra == {"backup": "latest", "retries": 3}
    assert method.recovery_conf == {"restore_command": "cp /a/%f %p",
                                    "recovery_target_time": "2026-01-01 00:00:00+00",
                                    "recovery_target_action": "promote",
                                    "recovery_target_inclusive": False}
    assert method.needs_recovery_signal
    assert not [r for r in caplog.records if "bootstrap" in r.getMessage()]  # implemented


@pytest.mark.parametrize("bootstrap", [{}, {"method": "initdb"}, {"method": None}])
def test_initdb_is_the_default(bootstrap: dict[str, Any]) -> None:
    assert parse_config(config(bootstrap), NO_ENV).bootstrap.custom_method is None


def test_without_target_nor_restore_command_no_recovery_signal_is_needed() -> None:
    cfg = parse_config(config({"method": "m", "m": {"command": "x", "recovery_conf": {
        "recovery_target_timeline": "current"}}}), NO_ENV)
    assert cfg.bootstrap.custom_method is not None
    assert not cfg.bootstrap.custom_method.needs_recovery_signal


@pytest.mark.parametrize(("bootstrap", "line"), [
    ({"method": "restore"},
     "bootstrap.method: names no section bootstrap.restore (it needs at least a command)"),
    ({"method": "restore", "restore": None},
     "bootstrap.method: names no section bootstrap.restore (it needs at least a command)"),
    ({"method": "dcs"}, "bootstrap.method: 'dcs' is a bootstrap setting, not a method section"),
    ({"method": "  "}, "bootstrap.method: must not be empty (initdb is the default)"),
    ({"method": "restore", "restore": "cp -a /backup"},
     "bootstrap.restore: expected a mapping with at least a command"),
    ({"method": "restore", "restore": {"no_params": True}},
     "bootstrap.restore.command: field required"),
    ({"method": "restore", "restore": {"command": "restore --label 'nightly"}},
     "bootstrap.restore.command: a shell cannot split it: No closing quotation"),
    ({"method": "restore", "restore": {"command": "   "}},
     "bootstrap.restore.command: must not be empty"),
    ({"method": "restore", "restore": {"command": "x", "recovery_conf": ["restore_command"]}},
     "bootstrap.restore.recovery_conf: expected a mapping of recovery settings"),
    ({"method": "restore", "restore": {"command": "x", "recovery_conf": {
        "primary_conninfo": "host=a"}}},
     "bootstrap.restore.recovery_conf: primary_conninfo: managed by pgha (a new cluster "
     "streams from nowhere)"),
    ({"method": "restore", "restore": {"command": "x", "recovery_conf": {
        "recovery_target_action": "shutdown"}}},
     "bootstrap.restore.recovery_conf: recovery_target_action: expected promote or pause "
     "(pgha cannot go on after PostgreSQL shuts down at the target)"),
    ({"method": "restore", "restore": {"command": "x", "recovery_conf": {
        "restore_command": "cp %f %p\ntouch /x"}}},
     "bootstrap.restore.recovery_conf: restore_command: expected one scalar value on one line"),
    ({"method": "restore", "restore": {"command": "x", "recovery_conf": {"bad name": 1}}},
     "bootstrap.restore.recovery_conf: bad name: not a parameter name"),
    ({"method": "restore", "restore": {"command": "x", "labels": ["a", "b"]}},
     "bootstrap.restore: labels: expected a scalar value on one line (passed to the command "
     "as --labels=value)"),
    ({"method": "restore", "restore": {"command": "x", "no_params": "sometimes"}},
     "bootstrap.restore.no_params: expected a valid boolean, unable to interpret input "
     "(got 'sometimes')"),
])
def test_bad_input_is_one_line_naming_the_key(bootstrap: dict[str, Any], line: str) -> None:
    assert errors_of(bootstrap) == [line]


def test_a_method_section_no_method_names_is_not_used(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        cfg = parse_config(config({"method": "initdb", "restore": {"command": "x"}}), NO_ENV)
    assert cfg.bootstrap.custom_method is None
    assert [r.getMessage() for r in caplog.records] == [
        "bootstrap.restore: not used: bootstrap.method does not name this custom method"]
    # a key that is no method section at all stays an error
    assert errors_of({"initbd": ["data-checksums"]})[0].startswith(
        "bootstrap.initbd: unknown key; did you mean initdb?")


def test_validate_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "pgha.yml"
    path.write_text(yaml.safe_dump(config({"method": "restore", "restore": {
        "command": "x", "recovery_conf": "restore_command=cp"}})))
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 2
    assert "bootstrap.restore.recovery_conf: expected a mapping of recovery settings" in \
        result.stderr
    assert "configuration is valid" not in result.stdout
    path.write_text(yaml.safe_dump(config({"method": "restore", "restore": {"command": "x"}})))
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "bootstrap.method" not in result.stderr  # no "not supported" warning any more
