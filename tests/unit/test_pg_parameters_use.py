"""Where PostgreSQL parameters are judged against the server's catalogue: loading the YAML
(``validate-config``/``run``), merging the layers, applying the DCS config, ``PATCH /config``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from tests.support.pg_catalogues import describe_config
from typer.testing import CliRunner

from pgha.agent.commands import CommandHandler
from pgha.cli.main import app
from pgha.config import ConfigError, parse_config
from pgha.config.pg_parameters import ParamCatalogue, parse_describe_config
from pgha.core.commands import PatchConfig, ReplaceConfig
from pgha.core.model import HaSettings
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from pgha.pg.conf import render_postgresql_conf
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.from_config import pg_settings
from pgha.pg.params import merge_judged, restart_needed
from pgha.pg.postgres import Postgres

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def cat(major: int) -> ParamCatalogue:
    return parse_describe_config(describe_config(major), major, f"fixture {major}")


def raw_config(tmp: Path, dyn: dict[str, Any] | None = None,
               local: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": {"dcs": {"postgresql": {"parameters": dyn or {}}}},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": str(tmp / "data"),
                       "bin_dir": "/opt/pg/bin", "pgpass": str(tmp / "pgpass"),
                       "parameters": local or {}},
    }


# ------------------------------------------------------------------------------ loading

def test_loading_refuses_values_postgresql_would_reject_naming_the_key(tmp_path: Path) -> None:
    asked: list[str] = []

    def source(postgres: str) -> ParamCatalogue:
        asked.append(postgres)
        return cat(15)

    data = raw_config(tmp_path, dyn={"max_connections": "lots", "wal_level": "logical"},
                      local={"work_mem": "5min", "shared_buffers": "128MB"})
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={}, catalogue=source)
    keys = dict(err.value.errors)
    assert keys == {"bootstrap.dcs.postgresql.parameters.max_connections": "expected an integer",
                    "postgresql.parameters.work_mem":
                        "invalid unit (valid units: B, kB, MB, GB, TB)"}
    assert asked == ["/opt/pg/bin/postgres"]


def test_loading_drops_unknown_names_and_keeps_renamed_ones_as_given(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pgha.config")
    data = raw_config(tmp_path, dyn={"wal_keep_segments": 8, "wal_keep_segment": 8,
                                     "pg_stat_statements.max": 100})
    config = parse_config(data, env={}, catalogue=lambda _: cat(15))
    assert config.bootstrap.dcs.postgresql.parameters == {"wal_keep_segments": 8,
                                                          "pg_stat_statements.max": 100}
    assert "bootstrap.dcs.postgresql.parameters: ignoring unknown PostgreSQL parameters: " \
           "wal_keep_segment (unknown parameter for PostgreSQL 15)" in caplog.text
    assert data["bootstrap"]["dcs"]["postgresql"]["parameters"]["wal_keep_segment"] == 8


def test_loading_without_a_catalogue_judges_names_and_lines(tmp_path: Path) -> None:
    config = parse_config(raw_config(tmp_path, local={"wal_keep_segment": 1, "work_mem": "x"}),
                          env={})
    assert config.postgresql.parameters == {"work_mem": "x"}
    with pytest.raises(ConfigError) as err:
        parse_config(raw_config(tmp_path, local={"log_line_prefix": "a\nb"}), env={})
    assert err.value.errors == [("postgresql.parameters.log_line_prefix",
                                 "must not contain a newline")]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield CliRunner()
    root.handlers[:] = handlers
    root.setLevel(level)


def write_yaml(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "pgha.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(), reason="PostgreSQL 15 not installed")
def test_validate_config_exits_2_naming_the_parameter(runner: CliRunner, tmp_path: Path) -> None:
    data = raw_config(tmp_path, dyn={"wal_level": "archival", "wal_keep_segments": 8},
                      local={"max_connections": 0})
    data["postgresql"]["bin_dir"] = str(PG15_BIN)
    result = runner.invoke(app, ["validate-config", str(write_yaml(tmp_path, data))])
    assert result.exit_code == 2, result.output
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert any(line.startswith("bootstrap.dcs.postgresql.parameters.wal_level: expected one of")
               for line in lines), result.stderr
    assert any(line.startswith("postgresql.parameters.max_connections: must be between 1 and")
               for line in lines), result.stderr
    assert not any("wal_keep_segments" in line for line in lines)  # translated later, valid

    data["bootstrap"]["dcs"]["postgresql"]["parameters"]["wal_level"] = "logical"
    data["postgresql"]["parameters"] = {"wal_keep_segment": 8}  # the seed's typo: a warning
    result = runner.invoke(app, ["validate-config", str(write_yaml(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert "wal_keep_segment (unknown parameter for PostgreSQL 15)" in result.stderr


# ------------------------------------------------------------------------------ merging

def test_merge_translates_every_layer_and_the_defaults_for_the_major() -> None:
    on15 = merge_judged({"wal_keep_segments": 8}, {}, cat(15))
    assert on15.parameters["wal_keep_size"] == "128MB" and "wal_keep_segments" not in \
        on15.parameters
    on12 = merge_judged({}, {}, cat(12))
    assert on12.parameters["wal_keep_segments"] == 8 and "wal_keep_size" not in on12.parameters
    local = merge_judged({"wal_keep_size": "1GB"}, {"wal_keep_segments": 4}, cat(16))
    assert local.parameters["wal_keep_size"] == "1GB"  # dynamic-only, as in Patroni
    assert local.ignored == ["wal_keep_size"]
    local = merge_judged({}, {"wal_level": "logical", "max_replication_slots": 20,
                              "track_commit_timestamp": "on", "work_mem": "8MB"}, cat(15))
    assert local.ignored == ["wal_level", "max_replication_slots", "track_commit_timestamp"]
    assert "wal_level" not in local.parameters and local.parameters["work_mem"] == "8MB"
    assert local.parameters["max_replication_slots"] == 10  # the default


def test_merge_leaves_out_what_postgresql_would_reject_with_a_warning() -> None:
    merged = merge_judged({"work_mem": "lots", "wal_level": "logical", "bogus": 1},
                          {"huge_pages": "sometimes", "work_mem": "8MB"}, cat(15))
    assert merged.parameters["wal_level"] == "logical" and merged.parameters["work_mem"] == "8MB"
    assert "huge_pages" not in merged.parameters and "bogus" not in merged.parameters
    assert any(w.startswith("dynamic configuration postgresql.parameters.work_mem:")
               for w in merged.warnings)
    assert any(w.startswith("postgresql.parameters.huge_pages:") for w in merged.warnings)


def test_settings_written_for_15_never_carry_wal_keep_segments(tmp_path: Path) -> None:
    config = parse_config(raw_config(tmp_path, dyn={"wal_keep_segments": 8}), env={},
                          catalogue=lambda _: cat(15))
    settings = pg_settings(config, config.bootstrap.dcs, cat(15))
    text = render_postgresql_conf(settings, "primary", None)
    assert "wal_keep_size = '128MB'" in text and "wal_keep_segments" not in text


# ------------------------------------------------------------------------------ the DCS config

async def test_a_bad_value_in_the_dcs_config_is_ignored_and_the_rest_applied(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(raw_config(tmp_path), env={}, catalogue=lambda _: cat(15))
    pg = Postgres(pg_settings(config, config.bootstrap.dcs, cat(15)))
    applier = DynamicConfigApplier(pg, config, cat(15))
    caplog.set_level(logging.INFO, logger="pgha.pg")
    dcs = {"postgresql": {"parameters": {"work_mem": "16MB", "shared_buffers": "lots",
                                         "wal_keep_segments": 4, "typo_param": 1}}}
    await applier.apply(dcs)
    params = pg.settings.parameters
    assert params["work_mem"] == "16MB" and params["wal_keep_size"] == "64MB"
    assert "shared_buffers" not in params and "typo_param" not in params
    assert "ignoring invalid values: shared_buffers = 'lots' (expected an integer)" in caplog.text
    assert "ignoring unknown PostgreSQL parameters: typo_param" in caplog.text


# ------------------------------------------------------------------------------ PATCH /config

@pytest.fixture
async def handler() -> Any:
    kv = MemoryStore(MemoryBackend(), ttl=30.0, timeout=2.0)
    store = ClusterStore(kv, "/service/", "demo", "m0")
    observer = SimpleNamespace(settings=HaSettings(ttl=30.0, loop_wait=10.0, retry_timeout=2.0))
    async with kv:
        yield CommandHandler("m0", store, observer, SimpleNamespace(),  # type: ignore[arg-type]
                             asyncio.Event(), request_reload=lambda: None, restart_timeout=30.0,
                             catalogue=cat(15))


async def test_patch_with_a_bad_value_answers_400_and_writes_nothing(handler: Any) -> None:
    before = {"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}}
    assert await handler.store.write_config(before, if_revision=None)
    out = await handler.submit(PatchConfig(patch={"loop_wait": 5, "postgresql": {
        "parameters": {"max_connections": "100MB", "work_mem": "8MB"}}}))
    assert out.code == 400
    assert "postgresql.parameters.max_connections: takes no unit" in out.message
    assert (await handler.store.read_config())[0] == before

    good = await handler.submit(PatchConfig(patch={"postgresql": {"parameters": {
        "work_mem": "8MB", "wal_keep_segments": 8}}}))
    assert good.code == 200
    stored = (await handler.store.read_config())[0]
    assert stored["postgresql"]["parameters"] == {"work_mem": "8MB", "wal_keep_segments": 8}


async def test_patch_is_not_blocked_by_a_bad_value_someone_else_wrote(handler: Any) -> None:
    assert await handler.store.write_config(
        {"postgresql": {"parameters": {"work_mem": "lots"}}}, if_revision=None)
    out = await handler.submit(PatchConfig(patch={"ttl": 40}))
    assert out.code == 200
    fixed = await handler.submit(PatchConfig(patch={"postgresql": {"parameters": {
        "work_mem": "4MB"}}}))
    assert fixed.code == 200


async def test_put_judges_every_parameter(handler: Any) -> None:
    out = await handler.submit(ReplaceConfig(config={"postgresql": {"parameters": {
        "wal_level": "sometimes"}}}))
    assert out.code == 400 and "postgresql.parameters.wal_level: expected one of" in out.message
    assert (await handler.store.read_config())[0] is None


def test_restart_need_comes_from_the_parameters_context() -> None:
    old = {"shared_buffers": "32MB", "work_mem": "4MB", "max_connections": 50}
    new = {"shared_buffers": "64MB", "work_mem": "8MB", "max_connections": 50,
           "wal_level": "logical"}
    assert restart_needed(old, new, cat(15)) == {
        "shared_buffers": {"old_value": "32MB", "new_value": "64MB"},
        "wal_level": {"old_value": "", "new_value": "logical"},
    }
    assert restart_needed({"autovacuum_max_workers": 3}, {"autovacuum_max_workers": 5},
                          cat(18)) == {}  # sighup from 18 on
    assert restart_needed(old, new, None) == {}
