"""A standby leader's recovery configuration: it streams from the standby cluster's remote
with ``primary_slot_name`` from the section (never a member slot of its own), replays with the
section's recovery settings, and keeps them across a rewrite of postgresql.conf."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_pg_slot_rules import settings

from pgha.core.actions import Upstream
from pgha.core.standby import REMOTE
from pgha.pg.conf import managed_parameters, read_managed_state, write_config

REMOTE_UP = Upstream(REMOTE, "postgres://10.0.0.9:5433/postgres", slot="dc2",
                     recovery=(("restore_command", "cp /archive/%f %p"),))


def test_standby_leader_streams_from_the_remote_with_the_configured_slot(tmp_path: Path) -> None:
    params = managed_parameters(settings(tmp_path), "replica", REMOTE_UP)
    assert "host=10.0.0.9" in params["primary_conninfo"]
    assert "port=5433" in params["primary_conninfo"]
    assert params["primary_slot_name"] == "dc2"
    assert params["restore_command"] == "cp /archive/%f %p"
    no_slot = Upstream(REMOTE, REMOTE_UP.conn_url)
    assert managed_parameters(settings(tmp_path), "replica", no_slot)["primary_slot_name"] == ""


def test_an_archive_only_remote_gives_no_conninfo(tmp_path: Path) -> None:
    archive = Upstream(REMOTE, "", recovery=(("restore_command", "cp /a/%f %p"),))
    params = managed_parameters(settings(tmp_path), "replica", archive)
    assert params["primary_conninfo"] == "" and params["primary_slot_name"] == ""
    assert params["restore_command"] == "cp /a/%f %p"


def test_the_remote_is_kept_in_the_managed_file(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    write_config(s, "replica", REMOTE_UP)
    assert read_managed_state(s.data_dir) == ("replica", REMOTE_UP)
