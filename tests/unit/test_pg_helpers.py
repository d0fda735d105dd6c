"""Unit tests for the pure helpers of the PostgreSQL layer (no server needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pgha.core.actions import Upstream
from pgha.core.model import ControlState
from pgha.pg.bootstrap import initdb_options
from pgha.pg.conf import (
    managed_parameters,
    quote_guc,
    read_managed_state,
    render_pgpass,
    render_postgresql_conf,
)
from pgha.pg.conffiles import render_pg_hba
from pgha.pg.controldata import (
    control_state,
    divergence_position,
    format_lsn,
    parse_controldata,
    parse_lsn,
    wal_position,
)
from pgha.pg.rewind import parse_history
from pgha.pg.settings import PgSettings, PgUser, format_conn_url, parse_conn_url


def settings(tmp: Path, **params: object) -> PgSettings:
    return PgSettings(
        name="Node-1", scope="demo", data_dir=tmp / "data", bin_dir=Path("/bin"),
        listen_host="0.0.0.0", port=5432, connect_host="db1", superuser=PgUser("postgres", "s"),
        replication=PgUser("repl", "a:b\\c"), rewind=PgUser("rewind", None),
        parameters=params, pg_hba=(), initdb_options=(), bootstrap_users={},
        pgpass=tmp / "pgpass", socket_dir=tmp)


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/3000028") == 0x3000028
    assert parse_lsn("1A/FF") == (0x1A << 32) | 0xFF
    assert format_lsn(0x3000028) == "0/3000028"
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(ValueError):
        parse_lsn("3000028")


CONTROLDATA = """\
pg_control version number:            1300
Database system identifier:           7312345678901234567
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/5000060
Latest checkpoint's REDO location:    0/5000028
Latest checkpoint's TimeLineID:       1
Minimum recovery ending location:     0/6000100
Min recovery ending loc's timeline:   2
"""


def test_controldata_parsing() -> None:
    data = parse_controldata(CONTROLDATA)
    assert data["Database system identifier"] == "7312345678901234567"
    assert control_state(data) == ControlState.SHUT_DOWN_IN_RECOVERY
    assert control_state({}) == ControlState.UNKNOWN
    assert divergence_position(data) == (2, 0x6000100 - 1)
    assert wal_position(data) == 0x6000100
    clean = dict(data, **{"Minimum recovery ending location": "0/0",
                          "Min recovery ending loc's timeline": "0"})
    assert divergence_position(clean) == (1, 0x5000060)


def test_parse_history() -> None:
    text = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tbefore 2000-01-01\n"
    assert parse_history(text) == [(1, 0x3000148), (2, 0x5000000)]
    with pytest.raises(ValueError):
        parse_history("1\n")


def test_conn_url() -> None:
    assert format_conn_url("::1", 5433) == "postgres://[::1]:5433/postgres"
    assert parse_conn_url("postgres://[::1]:5433/postgres") == ("::1", 5433)
    assert parse_conn_url("postgres://db1/postgres") == ("db1", 5432)
    with pytest.raises(ValueError):
        parse_conn_url("http://x")


def test_quote_guc() -> None:
    assert quote_guc(True) == "on"
    assert quote_guc(10) == "10"
    assert quote_guc("it's a\\b") == "'it''s a\\\\b'"
    with pytest.raises(ValueError):
        quote_guc("a\nb")


def test_managed_parameters_enforce_minimums(tmp_path: Path) -> None:
    params = managed_parameters(
        settings(tmp_path, max_wal_senders=2, max_replication_slots=20, wal_level="minimal",
                 port=1, hot_standby="off", work_mem="8MB"), "primary", None)
    assert params["max_wal_senders"] == 10  # under Patroni's minimum 3: its default
    assert params["max_replication_slots"] == 20
    kept = managed_parameters(settings(tmp_path, max_wal_senders=3, max_replication_slots=4),
                              "primary", None)
    assert (kept["max_wal_senders"], kept["max_replication_slots"]) == (3, 4)
    unset = managed_parameters(settings(tmp_path), "primary", None)
    assert (unset["max_wal_senders"], unset["max_replication_slots"]) == (10, 10)
    assert params["wal_level"] == "replica"
    assert params["port"] == 5432 and params["hot_standby"] is True
    assert params["work_mem"] == "8MB"
    assert params["primary_conninfo"] == ""
    # kept on promotion: a setting that vanishes from the file reads as a pending restart
    assert params["recovery_target_timeline"] == "latest"


def test_replica_conf_and_state_round_trip(tmp_path: Path) -> None:
    s = settings(tmp_path)
    up = Upstream("node-0", "postgres://10.0.0.5:5433/postgres")
    text = render_postgresql_conf(s, "replica", up)
    assert text.index("include 'postgresql.base.conf'") < text.index("listen_addresses")
    assert "primary_slot_name = 'node_1'" in text
    assert "recovery_target_timeline = 'latest'" in text
    assert "application_name=Node-1" in text and "host=10.0.0.5 port=5433" in text
    s.data_dir.mkdir()
    (s.data_dir / "postgresql.conf").write_text(text)
    assert read_managed_state(s.data_dir) == ("replica", up)
    (s.data_dir / "postgresql.conf").write_text(render_postgresql_conf(s, "primary", None))
    assert read_managed_state(s.data_dir) == ("primary", None)
    (s.data_dir / "postgresql.conf").write_text("shared_buffers = 1GB\n")
    assert read_managed_state(s.data_dir) is None


def test_pgpass_escapes_and_skips_users_without_password(tmp_path: Path) -> None:
    assert render_pgpass(settings(tmp_path)) == "*:*:*:repl:a\\:b\\\\c\n*:*:*:postgres:s\n"


def test_initdb_options() -> None:
    assert initdb_options(("data-checksums", {"encoding": "UTF8", "locale": "C"})) == [
        "--data-checksums", "--encoding=UTF8", "--locale=C"]
    for bad in (("pgdata",), ({"username": "x"},), ("bad option",)):
        with pytest.raises(ValueError):
            initdb_options(bad)


@pytest.mark.parametrize(("password", "local"), [(None, "peer"), ("s3cret", "scram-sha-256")])
def test_default_pg_hba_trusts_no_one(tmp_path: Path, password: str | None, local: str) -> None:
    st = dataclasses.replace(settings(tmp_path), superuser=PgUser("postgres", password))
    lines = [ln for ln in render_pg_hba(st).splitlines() if not ln.startswith("#")]
    assert not any("trust" in ln.split() for ln in lines)
    assert lines[:2] == [f"local all all {local}", f"local replication all {local}"]
    assert "host replication repl 0.0.0.0/0 scram-sha-256" in lines


def test_configured_pg_hba_is_written_as_is(tmp_path: Path) -> None:
    st = dataclasses.replace(settings(tmp_path), pg_hba=("local all all trust",))
    assert render_pg_hba(st).splitlines()[1:] == ["local all all trust"]
