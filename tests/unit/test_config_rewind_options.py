"""``postgresql.rewind``: extra pg_rewind options in the forms ``postgresql.basebackup`` takes,
appended to pgha's command line; the options pgha sets itself, and those after which pg_rewind
exits 0 without rewinding, are refused with one error naming the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.support.pg_settings import local_pg_settings

from pgha.config import ConfigError, parse_config
from pgha.config.replica import (
    BASEBACKUP_RESERVED,
    REWIND_RESERVED,
    as_arguments,
    basebackup_options,
    rewind_options,
)
from pgha.pg.from_config import pg_settings
from pgha.pg.rewind import rewind_argv


def config(tmp: Path, rewind: Any) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
            "postgresql": {"data_dir": str(tmp / "data"), "bin_dir": "/opt/pg/bin",
                           "pgpass": str(tmp / "pgpass"), "rewind": rewind}}


def test_the_forms_basebackup_takes_are_accepted() -> None:
    assert rewind_options(None) == []
    assert rewind_options(["debug", "--progress", {"config-file": "/etc/pg/postgresql.conf"},
                           "c", {"sync-method": "syncfs"}]) == [
        ("debug", None), ("progress", None), ("config-file", "/etc/pg/postgresql.conf"),
        ("c", None), ("sync-method", "syncfs")]
    assert rewind_options({"debug": True, "no-sync": False, "restore-target-wal": None,
                           "config-file": "/x.conf"}) == [("debug", None),
                                                          ("config-file", "/x.conf")]


def test_the_command_line_appends_the_options_after_pghas_own(tmp_path: Path) -> None:
    st = local_pg_settings(tmp_path)
    base = ["/bin/pg_rewind", "-D", str(tmp_path / "data"), "--source-server=host=h"]
    assert rewind_argv(st, "host=h") == base
    st = replace(st, rewind_options=(("debug", None), ("config-file", "/x.conf"),
                                     ("c", None), ("P", None)))
    assert rewind_argv(st, "host=h") == [*base, "--debug", "--config-file=/x.conf", "-c", "-P"]
    st = replace(st, bin_names={"pg_rewind": "pg_rewind.16"})
    assert rewind_argv(st, "host=h")[0] == "/bin/pg_rewind.16"


def test_configured_options_reach_the_settings(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path, ["debug", {"config-file": "/x.conf"}]), env={})
    assert cfg.postgresql.rewind_options() == [("debug", None), ("config-file", "/x.conf")]
    assert pg_settings(cfg, cfg.bootstrap.dcs).rewind_options == (
        ("debug", None), ("config-file", "/x.conf"))
    plain = parse_config(config(tmp_path, None), env={})
    assert pg_settings(plain, plain.bootstrap.dcs).rewind_options == ()


@pytest.mark.parametrize("option", sorted(REWIND_RESERVED))
def test_every_option_pgha_sets_or_that_skips_the_rewind_is_refused(
        tmp_path: Path, option: str) -> None:
    for form in ([option], [{option: "x"}], {option: "x"}, [f"--{option}"]):
        with pytest.raises(ConfigError) as info:
            parse_config(config(tmp_path, form), env={})
        [(path, message)] = info.value.errors
        assert path == "postgresql.rewind"
        assert message.startswith(f"option {option!r} is not allowed: ")
        assert "\n" not in message


@pytest.mark.parametrize(("value", "message"), [
    ("debug", "expected a list of options or a mapping"),
    ([{"debug": None, "progress": None}], "expected an option name or a mapping with one"),
    (["no such"], "option 'no such' is not an option name"),
    ([{"config-file": ["a", "b"]}], "option 'config-file': expected a single value, got list"),
    ([{"config-file": "a\nb"}], "must not contain a line break or NUL"),
])
def test_malformed_options_are_one_error_naming_the_key(tmp_path: Path, value: Any,
                                                        message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(tmp_path, value), env={})
    [(path, got)] = info.value.errors
    assert path == "postgresql.rewind" and message in got


def test_the_two_tools_keep_their_own_reserved_options() -> None:
    assert rewind_options(["checkpoint"]) == [("checkpoint", None)]  # pg_basebackup's only
    with pytest.raises(ValueError, match="'D' is not allowed"):
        basebackup_options(["D"])
    assert basebackup_options(["n"]) == [("n", None)]  # pg_rewind's dry run only
    assert {"D", "write-recovery-conf"} <= set(BASEBACKUP_RESERVED) & set(REWIND_RESERVED)
    assert as_arguments([("max-rate", "1M"), ("v", None), ("r", "32k")]) == [
        "--max-rate=1M", "-v", "-r", "32k"]
