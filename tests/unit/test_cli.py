"""The ``pgha`` CLI (Typer) and the ``pgha list`` table, on synthetic cluster views."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgha import __version__
from pgha.cli.cluster import format_list, member_rows, render_table
from pgha.cli.main import app
from pgha.config import Config, load_config
from pgha.core.model import ClusterView, HaSettings, Leader, Member, Tags

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "patroni-example.yml"
SYSID = "7123456789012345678"
MB = 1024 * 1024
COLUMNS = ["Member", "Host", "Role", "State", "TL", "Lag in MB"]

MINIMAL = """\
scope: demo
name: pg1
etcd:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /tmp/pg1
"""

BROKEN = """\
scope: demo
name: pg1
restapi:
  listen: 127.0.0.1
etcd:
  hosts: 127.0.0.1:2379
bootstrap:
  dcs:
    ttl: abc
postgresql:
  listen: 127.0.0.1:5432
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """validate-config reconfigures the root logger onto the runner's (later closed) stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


# --------------------------------------------------------------------------- commands


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pgha version {__version__}"


def test_validate_example_config(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate-config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "configuration is valid" in result.stdout
    assert "scope batman" in result.stdout
    assert "member postgresql0" in result.stdout
    assert "DCS etcd" in result.stdout


def test_validate_broken_config_lists_every_error(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    result = runner.invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 2
    err = result.stderr
    assert f"configuration error in {path}" in err
    lines = [line.strip() for line in err.splitlines()]
    assert any(line.startswith("restapi.listen:") for line in lines), err
    assert any(line.startswith("bootstrap.dcs.ttl:") and "abc" in line for line in lines), err
    assert any(line.startswith("postgresql.data_dir:") for line in lines), err
    assert "configuration is valid" not in result.stdout


def test_validate_missing_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate-config", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2
    assert "nope.yml" in result.stderr


def test_validate_minimal_config(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(MINIMAL)
    result = runner.invoke(app, ["validate-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "scope demo" in result.stdout


def test_list_without_config_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 2
    assert "-c CONFIG" in result.stderr


def test_list_with_broken_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    result = runner.invoke(app, ["-c", str(path), "list"])
    assert result.exit_code == 2
    assert "postgresql.data_dir" in result.stderr


# --------------------------------------------------------------------------- pgha list table


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "demo.yml"
    path.write_text(MINIMAL)
    return load_config(path)


def demo_view(**kw: object) -> ClusterView:
    head = 0x5000000
    members = {
        "pg3": Member("pg3", conn_url="postgres://10.0.0.3:5432/postgres", role="replica",
                      state="stopped", xlog_location=None, timeline=None),
        "pg1": Member("pg1", conn_url="postgres://10.0.0.1:5432/postgres", role="replica",
                      state="running", replication_state="streaming",
                      xlog_location=head - 3 * MB - 10, timeline=2, tags=Tags(nofailover=True)),
        "pg2": Member("pg2", conn_url="postgres://10.0.0.2:5432/postgres", role="primary",
                      state="running", xlog_location=head, timeline=2),
        "pg0": Member("pg0", conn_url="postgres://10.0.0.9:5433/postgres", role="replica",
                      state="running", xlog_location=head, timeline=2),
    }
    args: dict[str, object] = dict(initialize=SYSID, leader=Leader("pg2"), members=members)
    args.update(kw)
    return ClusterView(**args)  # type: ignore[arg-type]


def test_member_rows_leader_first_and_lag_in_mb() -> None:
    rows = member_rows(demo_view())
    assert [r["Member"] for r in rows] == ["pg2", "pg0", "pg1", "pg3"]
    assert all(list(r) == COLUMNS for r in rows)
    leader, pg0, pg1, pg3 = rows
    assert leader == {"Member": "pg2", "Host": "10.0.0.2:5432", "Role": "Leader",
                      "State": "running", "TL": 2, "Lag in MB": ""}
    assert pg0["Role"] == "Replica" and pg0["Lag in MB"] == 0 and pg0["Host"] == "10.0.0.9:5433"
    assert pg1["State"] == "streaming"  # replication_state of a running replica
    assert pg1["Lag in MB"] == 3  # 3 MB + 10 bytes, whole MB
    assert pg3["State"] == "stopped"
    assert pg3["TL"] == ""
    assert pg3["Lag in MB"] == "unknown"


def test_member_rows_lag_counts_from_optime_when_ahead_of_leader_key() -> None:
    rows = member_rows(demo_view(optime=0x5000000 + 5 * MB))
    lags = {r["Member"]: r["Lag in MB"] for r in rows}
    assert lags == {"pg2": "", "pg0": 5, "pg1": 8, "pg3": "unknown"}


def test_member_rows_without_leader() -> None:
    rows = member_rows(demo_view(leader=None, optime=None))
    assert [r["Member"] for r in rows] == ["pg0", "pg1", "pg2", "pg3"]
    assert all(r["Role"] == "Replica" for r in rows)
    assert all(r["Lag in MB"] == "unknown" for r in rows)


def test_format_list_table(config: Config) -> None:
    text = format_list(config, demo_view())
    lines = text.splitlines()
    assert lines[0].startswith(f"+ Cluster: demo ({SYSID}) ")
    sep = lines[2]
    assert sep.startswith("+-") and sep.endswith("-+")
    assert len(lines[0]) == len(sep)
    assert lines[0].endswith("+")
    assert [c.strip() for c in lines[1].strip("|").split("|")] == COLUMNS
    body = lines[3:-1]
    assert lines[-1] == sep
    assert len(body) == 4
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    assert cells[0] == ["pg2", "10.0.0.2:5432", "Leader", "running", "2", ""]
    assert cells[2] == ["pg1", "10.0.0.1:5432", "Replica", "streaming", "2", "3"]
    assert cells[3] == ["pg3", "10.0.0.3:5432", "Replica", "stopped", "", "unknown"]
    assert all(len(line) == len(sep) for line in lines[1:])
    assert "Maintenance mode" not in text


def test_format_list_paused_footer(config: Config) -> None:
    text = format_list(config, demo_view(settings=HaSettings(pause=True)))
    assert text.splitlines()[-1].strip() == "Maintenance mode: on"


@pytest.mark.parametrize(("initialize", "shown"), [
    ("", "initializing"), (None, "uninitialized"),
])
def test_format_list_without_system_identifier(config: Config, initialize: str | None,
                                               shown: str) -> None:
    text = format_list(config, demo_view(initialize=initialize))
    assert text.splitlines()[0].startswith(f"+ Cluster: demo ({shown}) ")


def test_render_table_alignment() -> None:
    rows = [{"Name": "a", "Count": 7}, {"Name": "longer", "Count": 12345}]
    text = render_table("T", rows, ["Name", "Count"])
    lines = text.splitlines()
    assert lines == [
        "+ T -----+-------+",
        "| Name   | Count |",
        "+--------+-------+",
        "| a      |     7 |",  # numbers right-aligned
        "| longer | 12345 |",  # text left-aligned
        "+--------+-------+",
    ]


def test_render_table_long_title_and_no_rows() -> None:
    text = render_table("Cluster: a-very-long-cluster-name (1)", [], ["A"])
    lines = text.splitlines()
    assert lines[0] == "+ Cluster: a-very-long-cluster-name (1) +"
    assert lines[1:] == ["| A |", "+---+", "+---+"]
