"""Parameter precedence, the pending-restart shape and the applier with PostgreSQL stopped."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgha.config import Config, parse_config
from pgha.pg.conf import write_config_if_changed
from pgha.pg.dynconf import DynamicConfigApplier, PgConfigState, parse_inspection
from pgha.pg.from_config import effective_parameters, pg_settings
from pgha.pg.params import DEFAULT_PARAMETERS, clamp_to_primary, merge_parameters
from pgha.pg.postgres import Postgres


def config(tmp: Path, params: dict[str, Any] | None = None, **pg: Any) -> Config:
    return parse_config({
        "scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": {"dcs": {"postgresql": {"parameters": {"work_mem": "1MB"}}},
                      "pg_hba": ["local all all trust"]},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": str(tmp / "data"),
                       "bin_dir": "/usr/lib/postgresql/15/bin", "pgpass": str(tmp / "pgpass"),
                       "parameters": params or {}, **pg},
    }, env={})


def test_precedence_defaults_dynamic_local() -> None:
    params, ignored = merge_parameters(
        {"work_mem": "4MB", "max_connections": 200, "TimeZone": "UTC", "wal_keep_size": "1GB"},
        {"work_mem": "8MB", "timezone": "Europe/Paris", "Max_Connections": 50,
         "max_locks_per_transaction": 128})
    assert params["work_mem"] == "8MB"  # local beats dynamic
    assert params["timezone"] == "Europe/Paris"  # names compare case-insensitively
    assert "TimeZone" not in params
    assert params["wal_keep_size"] == "1GB"  # dynamic beats default
    assert params["max_connections"] == 200  # cluster-wide: the local value is ignored
    assert params["max_locks_per_transaction"] == DEFAULT_PARAMETERS["max_locks_per_transaction"]
    assert params["max_worker_processes"] == 8  # default
    assert ignored == ["Max_Connections", "max_locks_per_transaction"]


def test_effective_parameters_warns_about_ignored_local_values(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, {"max_connections": 30, "work_mem": "2MB"})
    params = effective_parameters(cfg, cfg.bootstrap.dcs)
    assert params["work_mem"] == "2MB" and params["max_connections"] == 100
    assert "max_connections can only be set in the dynamic configuration" in caplog.text


def test_pg_hba_precedence(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    dyn = cfg.bootstrap.dcs.postgresql
    assert pg_settings(cfg, dyn).pg_hba == ("local all all trust",)  # bootstrap.pg_hba
    dyn_hba = dyn.model_copy(update={"pg_hba": ["host all all ::1/128 trust"]})
    assert pg_settings(cfg, dyn_hba).pg_hba == ("host all all ::1/128 trust",)
    local = config(tmp_path, pg_hba=["local all all peer"])
    assert pg_settings(local, dyn_hba).pg_hba == ("local all all peer",)


def test_clamp_to_primary() -> None:
    recorded = {"max_connections setting": "100", "max_worker_processes setting": "8",
                "max_prepared_xacts setting": "0", "max_locks_per_xact setting": "64"}
    params, raised = clamp_to_primary(
        {"max_connections": 50, "max_worker_processes": "16", "max_prepared_transactions": 10,
         "max_locks_per_transaction": "many", "max_wal_senders": 1, "work_mem": "1MB"},
        recorded)
    assert raised == {"max_connections": 100}
    assert params["max_connections"] == 100
    assert params["max_worker_processes"] == "16"  # higher than the primary's: kept
    assert params["max_prepared_transactions"] == 10
    assert params["max_locks_per_transaction"] == "many"  # not a number: PostgreSQL decides
    assert params["max_wal_senders"] == 1  # not recorded: left alone


def row(name: str, current: str, pending: bool, file_value: str | None,
        error: str | None = None, boot: str | None = None, unit: str | None = None,
        ) -> dict[str, Any]:
    return {"name": name, "current": current, "pending_restart": pending, "boot_val": boot,
            "unit": unit, "file_value": file_value, "error": error, "sourcefile": "x"}


def test_pending_restart_reason_shape() -> None:
    pending, rejected = parse_inspection([
        row("max_connections", "100", True, "200", "setting could not be applied"),
        row("shared_buffers", "256MB", True, None, boot="16384", unit="8kB"),
        row("work_mem", "4MB", False, "lots", "setting could not be applied"),
    ])
    assert pending == {"max_connections": {"old_value": "100", "new_value": "200"},
                       "shared_buffers": {"old_value": "256MB", "new_value": "131072kB"}}
    assert rejected == {"work_mem": ("lots", "4MB")}
    state = PgConfigState(pending_restart=True, pending_restart_reason=pending)
    assert state.status_fields() == {"pending_restart": True,
                                     "pending_restart_reason": pending}
    assert PgConfigState().status_fields() == {}


def test_write_config_if_changed(tmp_path: Path) -> None:
    settings = pg_settings(config(tmp_path), config(tmp_path).bootstrap.dcs)
    assert write_config_if_changed(settings, "primary", None) == [
        "pg_hba.conf", "pg_ident.conf", "postgresql.conf"]
    assert write_config_if_changed(settings, "primary", None) == []
    changed = replace(settings, parameters={**settings.parameters, "work_mem": "3MB"})
    assert write_config_if_changed(changed, "primary", None) == ["postgresql.conf"]
    assert "work_mem = '3MB'" in (tmp_path / "data" / "postgresql.conf").read_text()
    with pytest.raises(ValueError):
        write_config_if_changed(settings, "leader", None)


async def test_applier_with_postgres_stopped(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, {"shared_buffers": "64MB"})
    pg = Postgres(pg_settings(cfg, cfg.bootstrap.dcs))
    applier = DynamicConfigApplier(pg, cfg)
    caplog.set_level(logging.INFO, logger="pgha.pg")

    first = await applier.apply(None)  # no DCS config yet: bootstrap.dcs
    assert pg.settings.parameters["work_mem"] == "1MB"
    assert first.state == PgConfigState() and not first.reloaded

    dcs = {"ttl": 30, "postgresql": {"use_slots": False, "pg_hba": ["local all all md5"],
                                     "parameters": {"work_mem": "5MB", "shared_buffers": "1GB",
                                                    "bogus_name": 1}}}
    await applier.apply(dcs)
    assert pg.settings.parameters["work_mem"] == "5MB"
    assert pg.settings.parameters["shared_buffers"] == "64MB"  # local wins
    assert "bogus_name" not in pg.settings.parameters
    assert not pg.settings.use_slots and pg.settings.pg_hba == ("local all all md5",)
    assert caplog.text.count("ignoring unknown PostgreSQL parameters: bogus_name") == 1
    await applier.apply(dcs)
    assert caplog.text.count("bogus_name") == 1  # warned once per distinct config

    await applier.apply({"postgresql": {"use_slots": "sometimes"}})
    assert "DCS config postgresql section is invalid" in caplog.text
    assert pg.settings.parameters["work_mem"] == "5MB"  # kept
    await applier.apply(None)  # DCS unreadable: the last valid one stays
    assert pg.settings.parameters["work_mem"] == "5MB"

    applier.set_local_config(config(tmp_path, {"work_mem": "9MB"}))
    await applier.apply(dcs)
    assert pg.settings.parameters["work_mem"] == "9MB"
    assert pg.settings.parameters["shared_buffers"] == "1GB"  # no local value any more
    assert not (tmp_path / "data" / "postgresql.conf").exists()  # stopped: start writes it
