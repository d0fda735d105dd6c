"""pg_ident.conf (local and dynamic ``postgresql.pg_ident``) and ``postgresql.custom_conf``:
the files pgha writes, what it leaves alone, precedence and bad values."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgha.config import Config, ConfigError, parse_config, parse_dynamic_config
from pgha.pg import process
from pgha.pg.cmd import CmdResult
from pgha.pg.conf import (
    BASE_CONF,
    CONF,
    read_managed_state,
    render_postgresql_conf,
    write_config,
    write_config_if_changed,
)
from pgha.pg.conffiles import IDENT_HEADER, render_pg_ident
from pgha.pg.from_config import pg_settings
from pgha.pg.settings import PgSettings

MAP = ["ops alice postgres", "ops /^(.*)@corp$ \\1"]


def config(tmp: Path, dyn_pg: dict[str, Any] | None = None, **pg: Any) -> Config:
    return parse_config({
        "scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": {"dcs": {"postgresql": dyn_pg or {}}},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": str(tmp / "data"),
                       "bin_dir": "/usr/lib/postgresql/15/bin", "pgpass": str(tmp / "pgpass"),
                       **pg},
    }, env={})


def settings(tmp: Path, dyn_pg: dict[str, Any] | None = None, **pg: Any) -> PgSettings:
    cfg = config(tmp, dyn_pg, **pg)
    return pg_settings(cfg, cfg.bootstrap.dcs)


def test_pg_ident_precedence_local_over_dynamic(tmp_path: Path) -> None:
    assert settings(tmp_path).pg_ident == ()
    assert settings(tmp_path, {"pg_ident": MAP}).pg_ident == tuple(MAP)
    assert settings(tmp_path, {"pg_ident": MAP}, pg_ident=["loc bob postgres"]).pg_ident == (
        "loc bob postgres",)


def test_render_pg_ident(tmp_path: Path) -> None:
    st = settings(tmp_path, pg_ident=MAP)
    text = IDENT_HEADER + "ops alice postgres\nops /^(.*)@corp$ \\1\n"
    assert render_pg_ident(st, None) == text
    assert render_pg_ident(st, "# initdb's\n") == text
    none = replace(st, pg_ident=())
    assert render_pg_ident(none, None) == IDENT_HEADER  # missing: created, empty
    assert render_pg_ident(none, text) == IDENT_HEADER  # ours: the mappings are removed
    assert render_pg_ident(none, "# initdb's\nm a b\n") is None  # not ours: left alone
    external = replace(st, parameters={**st.parameters, "ident_file": "/etc/ident.conf"})
    assert render_pg_ident(external, None) is None


def test_pg_ident_written_and_rewritten_only_on_change(tmp_path: Path) -> None:
    st = settings(tmp_path, pg_ident=MAP)
    data = st.data_dir
    write_config(st, "primary", None)
    ident = data / "pg_ident.conf"
    assert ident.read_text().splitlines()[1:] == MAP
    assert f"ident_file = '{ident}'" in (data / CONF).read_text()
    assert write_config_if_changed(st, "primary", None) == []
    more = replace(st, pg_ident=(*MAP, "ops carol postgres"))
    assert write_config_if_changed(more, "primary", None) == ["pg_ident.conf"]
    assert ident.read_text().splitlines()[-1] == "ops carol postgres"
    assert write_config_if_changed(replace(st, pg_ident=()), "primary", None) == [
        "pg_ident.conf"]
    assert ident.read_text() == IDENT_HEADER


def test_pg_ident_left_alone(tmp_path: Path) -> None:
    st = settings(tmp_path)
    data = st.data_dir
    data.mkdir()
    (data / "pg_ident.conf").write_text("# the operator's own\nm a b\n")
    write_config(st, "primary", None)
    assert write_config_if_changed(st, "primary", None) == []
    assert (data / "pg_ident.conf").read_text() == "# the operator's own\nm a b\n"
    external = settings(tmp_path, pg_ident=MAP, parameters={"ident_file": "/etc/x.conf"})
    assert write_config_if_changed(external, "primary", None) == ["postgresql.conf"]
    assert (data / "pg_ident.conf").read_text() == "# the operator's own\nm a b\n"
    assert "ident_file = '/etc/x.conf'" in (data / CONF).read_text()


def test_custom_conf_included_and_never_touched(tmp_path: Path) -> None:
    base = tmp_path / "etc" / "base.conf"
    base.parent.mkdir()
    base.write_text("shared_buffers = 32MB\n")
    mtime = base.stat().st_mtime_ns
    st = settings(tmp_path, custom_conf=str(base))
    data = st.data_dir
    data.mkdir()
    (data / CONF).write_text("# initdb's postgresql.conf\n")
    write_config(st, "primary", None)
    conf = (data / CONF).read_text()
    assert f"\ninclude '{base}'\n" in conf and BASE_CONF not in conf.split("\n", 3)[-1]
    assert not (data / BASE_CONF).exists()  # nothing renamed, nothing created
    assert write_config_if_changed(st, "primary", None) == []
    assert base.read_text() == "shared_buffers = 32MB\n" and base.stat().st_mtime_ns == mtime


def test_custom_conf_relative_to_the_data_directory(tmp_path: Path) -> None:
    st = settings(tmp_path, custom_conf="conf.d/base.conf")
    assert st.base_conf == tmp_path / "data" / "conf.d" / "base.conf"
    assert f"include '{st.base_conf}'" in render_postgresql_conf(st, "primary", None)
    plain = settings(tmp_path)
    assert plain.base_conf is None
    assert f"include '{BASE_CONF}'" in render_postgresql_conf(plain, "primary", None)


def test_custom_conf_missing_is_one_line_naming_the_key(tmp_path: Path) -> None:
    st = settings(tmp_path, custom_conf="missing.conf")
    for write in (write_config, write_config_if_changed):
        with pytest.raises(ValueError) as info:
            write(st, "primary", None)
        message = str(info.value)
        assert message.startswith("postgresql.custom_conf: ") and "\n" not in message
        assert str(tmp_path / "data" / "missing.conf") in message
    assert not (tmp_path / "data" / CONF).exists()


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"custom_conf": str(tmp_path / "nope.conf")}, "postgresql.custom_conf: file not found"),
        ({"custom_conf": "a\nb"}, "postgresql.custom_conf: expected the path"),
        ({"custom_conf": ["x"]}, "postgresql.custom_conf:"),
        ({"pg_ident": "ops alice postgres"}, "postgresql.pg_ident: expected a valid list"),
        ({"pg_ident": ["a\rb"]}, "postgresql.pg_ident[0]: one line expected"),
    ]
    for pg, words in cases:
        with pytest.raises(ConfigError) as info:
            config(tmp_path, **pg)
        text = str(info.value)
        assert len(text.splitlines()) == 1 and text.startswith(words), (pg, text)
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config({"postgresql": {"pg_ident": {"m": "a b"}}}, prefix="config")
    assert str(info.value).startswith("config.postgresql.pg_ident: expected a valid list")
    assert parse_dynamic_config({"postgresql": {"pg_ident": MAP}}).postgresql.pg_ident == MAP


def test_config_dir_default_and_env(tmp_path: Path) -> None:
    assert settings(tmp_path).conf_dir is None
    assert settings(tmp_path, config_dir=str(tmp_path / "data")).conf_dir is None
    st = settings(tmp_path, config_dir=str(tmp_path / "etc"))
    assert st.conf_dir == st.config_dir == tmp_path / "etc"
    assert st.config_file_options == (f"--config-file={tmp_path / 'etc' / CONF}",)
    assert settings(tmp_path).config_file_options == ()
    raw = {"scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
           "postgresql": {"data_dir": str(tmp_path / "data")}}
    cfg = parse_config(raw, env={"PATRONI_POSTGRESQL_CONFIG_DIR": str(tmp_path / "c")})
    assert pg_settings(cfg, cfg.bootstrap.dcs).conf_dir == tmp_path / "c"


def test_config_dir_holds_the_files_and_initdb_conf_moves_there(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    st = settings(tmp_path, config_dir=str(etc), pg_ident=MAP, custom_conf=None)
    data = st.data_dir
    data.mkdir()
    (data / CONF).write_text("# initdb's\nmax_connections = 100\n")
    write_config(st, "primary", None)
    assert not (data / CONF).exists()  # moved, not left behind to confuse
    assert (etc / BASE_CONF).read_text() == "# initdb's\nmax_connections = 100\n"
    assert {p.name for p in etc.iterdir()} == {CONF, BASE_CONF, "pg_hba.conf", "pg_ident.conf"}
    conf = (etc / CONF).read_text()
    assert f"hba_file = '{etc / 'pg_hba.conf'}'" in conf
    assert f"ident_file = '{etc / 'pg_ident.conf'}'" in conf
    assert f"data_directory = '{data}'" in conf
    assert read_managed_state(etc) == ("primary", None) and read_managed_state(data) is None
    assert write_config_if_changed(st, "primary", None) == []
    assert write_config_if_changed(replace(st, pg_ident=()), "primary", None) == [
        "pg_ident.conf"]
    assert "data_directory" not in render_postgresql_conf(settings(tmp_path), "primary", None)


def test_config_dir_original_conf_becomes_the_base(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / CONF).write_text("# pg_createcluster's\ninclude_dir = 'conf.d'\n")
    st = settings(tmp_path, config_dir=str(etc))
    st.data_dir.mkdir()
    (st.data_dir / CONF).write_text("# a stale copy\n")
    write_config(st, "replica", None)
    assert (etc / BASE_CONF).read_text() == "# pg_createcluster's\ninclude_dir = 'conf.d'\n"
    assert (st.data_dir / CONF).read_text() == "# a stale copy\n"  # not the original: kept
    assert read_managed_state(etc) == ("replica", None)


def test_config_dir_base_from_a_clone_of_a_data_dir_member(tmp_path: Path) -> None:
    st = settings(tmp_path, config_dir=str(tmp_path / "etc"))
    data = st.data_dir
    data.mkdir()
    write_config(settings(tmp_path), "primary", None)  # the source member's layout
    (data / BASE_CONF).write_text("# the source's initdb settings\n")
    write_config(st, "replica", None)
    assert (tmp_path / "etc" / BASE_CONF).read_text() == "# the source's initdb settings\n"
    assert not (data / BASE_CONF).exists()


async def test_pg_ctl_start_passes_the_config_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    async def fake_run(argv: list[str], **_kw: Any) -> CmdResult:
        seen.append(list(argv))
        return CmdResult(tuple(argv), 1, "", "")

    monkeypatch.setattr(process, "run", fake_run)
    st = settings(tmp_path, config_dir=str(tmp_path / "my etc"))
    await process.pg_ctl_start(st, 5)
    await process.pg_ctl_start(settings(tmp_path), 5)
    options = seen[0][seen[0].index("-o") + 1]
    assert shlex.split(options) == [f"--config-file={tmp_path / 'my etc' / CONF}"]
    assert "-o" not in seen[1]
