"""``postgresql.bin_name``: one resolver for every PostgreSQL program pgha runs, its
validation (errors name the key), ``PATRONI_POSTGRESQL_BIN_*``, an empty ``bin_dir`` filled from
PATH, and the programs actually run under their configured names (stand-in scripts that record
their arguments)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from pgha.config import Config, ConfigError, keys_table, parse_config
from pgha.config.binaries import BINARIES, binary_path, fill_bin_dir, server_binary
from pgha.config.keys import check_env, env_read_by_pgha
from pgha.config.pg_parameters import ParamCatalogue
from pgha.core.actions import Upstream
from pgha.pg import catalogue as catalogue_mod
from pgha.pg import controldata, process, rewind
from pgha.pg.from_config import pg_settings as _pg_settings
from pgha.pg.settings import PgSettings

RECORDER = """#!/bin/sh
printf '%s\\n' "$0" "$@" > "$RECORD_TO"
"""


def config(tmp: Path, **pg: Any) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
            "postgresql": {"data_dir": str(tmp / "data"), "bin_dir": str(tmp / "bin"),
                           "pgpass": str(tmp / "pgpass"), **pg}}


def errors_of(data: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return dict(info.value.errors)


def pg_settings(cfg: Config) -> PgSettings:
    return _pg_settings(cfg, cfg.bootstrap.dcs)


def recorder(directory: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(RECORDER)
    os.chmod(directory / name, 0o755)
    out = directory.parent / f"{name}.argv"
    monkeypatch.setenv("RECORD_TO", str(out))
    return out


# ------------------------------------------------------------------------------ resolver

def test_the_resolver_joins_the_configured_name_to_bin_dir() -> None:
    names = {"pg_ctl": "pg_ctl.custom", "postgres": "/opt/other/postgres", "initdb": None}
    assert binary_path("/usr/lib/pg/bin", names, "pg_ctl") == "/usr/lib/pg/bin/pg_ctl.custom"
    assert binary_path("/usr/lib/pg/bin", names, "postgres") == "/opt/other/postgres"
    assert binary_path("/usr/lib/pg/bin", names, "initdb") == "/usr/lib/pg/bin/initdb"
    assert binary_path(Path("/b"), {}, "pg_waldump") == "/b/pg_waldump"  # no bin_name key
    assert binary_path("/b", {"pg_rewind": "tools/pg_rewind"}, "pg_rewind") == \
        "/b/tools/pg_rewind"


def test_the_registry_lists_the_same_programs() -> None:
    assert keys_table._BINARIES == BINARIES
    assert {k.name for k in keys_table.LOCAL if k.parent == "postgresql.bin_name"} == \
        set(BINARIES)


def test_configured_names_reach_every_program_through_the_settings(tmp_path: Path) -> None:
    names = {b: f"{b}-16" for b in BINARIES}
    cfg = parse_config(config(tmp_path, bin_name=names), env={})
    assert cfg.postgresql.bin_names() == names
    st = pg_settings(cfg)
    for program in BINARIES:
        assert st.binary(program) == str(tmp_path / "bin" / f"{program}-16")
        assert cfg.postgresql.binary(program) == st.binary(program)
    assert st.binary("pg_waldump") == str(tmp_path / "bin" / "pg_waldump")
    plain = pg_settings(parse_config(config(tmp_path), env={}))
    assert plain.binary("pg_ctl") == str(tmp_path / "bin" / "pg_ctl") and not plain.bin_names


@pytest.mark.parametrize(("value", "message"), [
    (5, "expected the program's file name as a string, got int"),
    (["pg_ctl"], "expected the program's file name as a string, got list"),
    (True, "expected the program's file name as a string, got bool"),
    ("", "must not be empty"),
    ("  ", "must not be empty"),
    ("pg\nctl", "must not contain a NUL character or a line break"),
    ("bin/", "'bin/' names a directory, not a program"),
])
def test_a_bad_name_is_one_error_naming_the_key(tmp_path: Path, value: Any,
                                                message: str) -> None:
    assert errors_of(config(tmp_path, bin_name={"pg_rewind": value})) == {
        "postgresql.bin_name.pg_rewind": message}


def test_an_unknown_program_and_a_non_mapping_are_refused(tmp_path: Path) -> None:
    assert errors_of(config(tmp_path, bin_name={"pg_dump": "x"})) == {
        "postgresql.bin_name.pg_dump": "unknown key"}
    assert list(errors_of(config(tmp_path, bin_name="pg_ctl"))) == ["postgresql.bin_name"]


def test_environment_variables_set_the_names(tmp_path: Path) -> None:
    env = {"PATRONI_POSTGRESQL_BIN_PG_CTL": "pg_ctl.patroni",
           "PGHA_POSTGRESQL_BIN_PG_CTL": "pg_ctl.pgha",  # pgha's own prefix wins
           "PATRONI_POSTGRESQL_BIN_PG_REWIND": "/opt/pg/pg_rewind"}
    cfg = parse_config(config(tmp_path, bin_name={"initdb": "initdb.yaml"}), env=env)
    assert cfg.postgresql.bin_names() == {"pg_ctl": "pg_ctl.pgha", "initdb": "initdb.yaml",
                                          "pg_rewind": "/opt/pg/pg_rewind"}
    assert all(env_read_by_pgha(f"PATRONI_POSTGRESQL_BIN_{b.upper()}") for b in BINARIES)
    assert check_env(env) == []  # read, so no warning
    assert errors_of(config(tmp_path), {"PATRONI_POSTGRESQL_BIN_POSTGRES": "x/"}) == {
        "postgresql.bin_name.postgres": "'x/' names a directory, not a program"}


# ------------------------------------------------------------------------ empty bin_dir

def install(tmp: Path) -> tuple[Path, Path]:
    """A real bin directory with pg_ctl and postgres, and a PATH directory holding only
    renamed symlinks to them."""
    real, on_path = tmp / "real" / "bin", tmp / "path"
    real.mkdir(parents=True)
    on_path.mkdir()
    for program in ("pg_ctl", "postgres"):
        (real / program).write_text("#!/bin/sh\n")
        os.chmod(real / program, 0o755)
    (on_path / "pg_ctl.custom").symlink_to(real / "pg_ctl")
    (on_path / "postgres.custom").symlink_to(real / "postgres")
    return real, on_path


def test_an_empty_bin_dir_finds_the_renamed_pg_ctl_on_path(tmp_path: Path) -> None:
    real, on_path = install(tmp_path)
    section: dict[str, Any] = {"bin_name": {"pg_ctl": "pg_ctl.custom", "initdb": "nowhere",
                                            "postgres": 7}}
    fill_bin_dir(section, str(on_path))
    assert section["bin_dir"] == str(real)  # symlinks resolved: the other programs live there
    assert section["bin_name"] == {"pg_ctl": str(on_path / "pg_ctl.custom"),
                                   "initdb": "nowhere",  # not found: kept (fails when run)
                                   "postgres": 7}  # left for validation to refuse
    kept = {"bin_dir": "/given", "bin_name": {"pg_ctl": "pg_ctl.custom"}}
    fill_bin_dir(kept, str(on_path))
    assert kept == {"bin_dir": "/given", "bin_name": {"pg_ctl": "pg_ctl.custom"}}


def test_loading_with_an_empty_bin_dir_resolves_names_on_path(tmp_path: Path) -> None:
    real, on_path = install(tmp_path)
    asked: list[str] = []

    def catalogue(postgres: str) -> ParamCatalogue:
        asked.append(postgres)
        return ParamCatalogue.fallback(16, "test")

    data = config(tmp_path, bin_dir="", bin_name={"pg_ctl": "pg_ctl.custom",
                                                  "postgres": "postgres.custom"})
    cfg = parse_config(data, env={"PATH": str(on_path)}, catalogue=catalogue)
    assert cfg.postgresql.bin_dir == str(real)
    assert cfg.postgresql.binary("pg_ctl") == str(on_path / "pg_ctl.custom")
    assert cfg.postgresql.binary("initdb") == str(real / "initdb")
    assert asked == [str(on_path / "postgres.custom")]
    assert data["postgresql"]["bin_dir"] == ""  # the input is not modified
    assert server_binary(data["postgresql"], str(on_path)) == str(on_path / "postgres.custom")
    assert server_binary(None, str(on_path)).endswith("/postgres")


def test_the_catalogue_is_read_from_a_renamed_server_binary(tmp_path: Path) -> None:
    catalogue_mod.clear_cache()
    binary = tmp_path / "postgres.custom"
    binary.write_text('#!/bin/sh\necho "postgres (PostgreSQL) 16.2"; exit 0\n')
    os.chmod(binary, 0o755)
    got = catalogue_mod.load_catalogue(binary)  # a file: that binary, not <dir>/postgres
    assert got.major == 16  # its --version was read
    assert catalogue_mod.load_catalogue(tmp_path).major is None  # no tmp_path/postgres


# ------------------------------------------------------------- the programs actually run

def test_pg_ctl_runs_under_its_name_and_gets_a_renamed_postgres(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = recorder(tmp_path / "bin", "pg_ctl.custom", monkeypatch)
    cfg = parse_config(config(tmp_path, bin_name={"pg_ctl": "pg_ctl.custom",
                                                  "postgres": "/opt/pg16/postgres"}), env={})
    st = pg_settings(cfg)
    result = asyncio.run(process.pg_ctl_start(st, timeout=5))
    assert result.ok, result.describe()
    argv = record.read_text().splitlines()
    assert argv[0] == str(tmp_path / "bin" / "pg_ctl.custom")
    assert argv[1:4] == ["start", "-D", str(tmp_path / "data")]
    assert argv[-2:] == ["-p", "/opt/pg16/postgres"]
    plain = pg_settings(parse_config(config(tmp_path, bin_name={"pg_ctl": "pg_ctl.custom"}),
                                     env={}))
    asyncio.run(process.pg_ctl_start(plain, timeout=5))
    assert "-p" not in record.read_text().splitlines()  # pg_ctl finds its own postgres


def test_pg_controldata_and_pg_rewind_run_under_their_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(config(tmp_path, bin_name={"pg_controldata": "pg_controldata.16",
                                                  "pg_rewind": "pg_rewind.16"},
                              rewind=["debug"]), env={})
    st = pg_settings(cfg)
    record = recorder(tmp_path / "bin", "pg_controldata.16", monkeypatch)
    (tmp_path / "data" / "global").mkdir(parents=True)
    (tmp_path / "data" / "global" / "pg_control").write_bytes(b"")
    asyncio.run(controldata.read_controldata(st))
    assert record.read_text().splitlines()[0] == str(tmp_path / "bin" / "pg_controldata.16")
    record = recorder(tmp_path / "bin", "pg_rewind.16", monkeypatch)
    leader = Upstream("pg2", "postgres://10.0.0.2:5432/postgres")
    assert asyncio.run(rewind.pg_rewind(st, leader, timeout=30))
    argv = record.read_text().splitlines()
    assert argv[0] == str(tmp_path / "bin" / "pg_rewind.16")
    assert argv[1:3] == ["-D", str(tmp_path / "data")]
    assert argv[3].startswith("--source-server=") and argv[4:] == ["--debug"]
