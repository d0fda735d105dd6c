"""The ``pgha`` CLI (Typer): run/validate-config, and the ``pgha list`` table on synthetic
cluster views."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pgha import __version__
from pgha.cli.cluster import format_list, member_rows
from pgha.cli.main import app
from pgha.cli.output import format_rows, render_table
from pgha.cli.rest import Call, RestError, api_base, basic_auth, call_all, credentials, ssl_context
from pgha.config import Config, load_config
from pgha.core.model import ClusterView, HaSettings, Leader, Member, SyncKey, Tags

pytestmark = pytest.mark.usefixtures("restore_root_logging")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "patroni-example.yml"
SYSID = "7123456789012345678"
MB = 1024 * 1024
COLUMNS = ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN",
           "Replay Lag"]
PRETTY = ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag", "Replay LSN", "Lag"]

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
    # the operator commands validate what they use (restapi, DCS), not the agent's sections
    assert "restapi.listen: expected host:port" in result.stderr
    assert "postgresql.data_dir" not in result.stderr


# --------------------------------------------------------------------------- pgha list table


def demo_view(**kw: object) -> ClusterView:
    head = 0x5000000
    members = {
        "pg3": Member("pg3", conn_url="postgres://10.0.0.3:5432/postgres", role="replica",
                      state="stopped", xlog_location=None, timeline=None),
        "pg1": Member("pg1", conn_url="postgres://10.0.0.1:5432/postgres", role="replica",
                      state="running", replication_state="streaming",
                      xlog_location=head - 3 * MB - 10, timeline=2),
        "pg2": Member("pg2", conn_url="postgres://10.0.0.2:5432/postgres", role="primary",
                      state="running", xlog_location=head, timeline=2),
        "pg0": Member("pg0", conn_url="postgres://10.0.0.9:5433/postgres", role="replica",
                      state="running", xlog_location=head, timeline=2),
    }
    args: dict[str, object] = dict(initialize=SYSID, leader=Leader("pg2"), members=members)
    args.update(kw)
    return ClusterView(**args)  # type: ignore[arg-type]


def test_member_rows_leader_first_and_4_1_positions() -> None:
    rows = member_rows(demo_view())
    assert [r["Member"] for r in rows] == ["pg2", "pg0", "pg1", "pg3"]
    leader, pg0, pg1, pg3 = rows
    assert {c: leader[c] for c in COLUMNS} == {
        "Member": "pg2", "Host": "10.0.0.2:5432", "Role": "Leader", "State": "running",
        "TL": 2, "Receive LSN": "", "Receive Lag": "", "Replay LSN": "", "Replay Lag": ""}
    assert pg0["Role"] == "Replica" and pg0["Host"] == "10.0.0.9:5433"
    # only xlog_location published: a streaming member shows it as received, others replayed
    assert (pg0["Receive LSN"], pg0["Replay LSN"], pg0["Replay Lag"]) == ("", "0/5000000", 0)
    assert pg1["State"] == "streaming"  # replication_state of a running replica
    assert (pg1["Receive LSN"], pg1["Receive Lag"]) == ("0/4CFFFF6", 3)  # 3 MB + 10 bytes
    assert pg1["Replay LSN"] == ""
    assert pg3["State"] == "stopped"
    assert pg3["TL"] == ""
    assert [pg3[c] for c in COLUMNS[5:]] == ["", "", "", ""]  # unknown: empty


def test_member_rows_receive_and_replay_lsn_keys() -> None:
    head = 0x5000000
    view = demo_view()
    members = dict(view.members)
    members["pg1"] = replace(members["pg1"], receive_lsn=head - MB // 4,
                             replay_lsn=head - 2 * MB + 1)
    row = member_rows(demo_view(members=members))[2]
    assert row["Member"] == "pg1"
    assert (row["Receive LSN"], row["Receive Lag"]) == ("0/4FC0000", 0)  # rounded
    assert (row["Replay LSN"], row["Replay Lag"]) == ("0/4E00001", 2)


def test_member_rows_lag_counts_from_optime_when_ahead_of_leader_key() -> None:
    rows = member_rows(demo_view(optime=0x5000000 + 5 * MB))
    lags = {r["Member"]: (r["Receive Lag"], r["Replay Lag"]) for r in rows}
    assert lags == {"pg2": ("", ""), "pg0": ("", 5), "pg1": (8, ""), "pg3": ("", "")}


def test_member_rows_without_leader() -> None:
    rows = member_rows(demo_view(leader=None, optime=None))
    assert [r["Member"] for r in rows] == ["pg0", "pg1", "pg2", "pg3"]
    assert all(r["Role"] == "Replica" for r in rows)
    assert all(r["Receive Lag"] == "" and r["Replay Lag"] == "" for r in rows)


def test_host_shows_port_only_when_needed() -> None:
    members = {n: Member(n, conn_url=f"postgres://10.0.0.{i}:5432/postgres")
               for i, n in enumerate(["a", "b"], 1)}
    rows = member_rows(ClusterView(members=members))
    assert [r["Host"] for r in rows] == ["10.0.0.1", "10.0.0.2"]
    same_host = {n: Member(n, conn_url=f"postgres://127.0.0.1:{5432 + i}/postgres")
                 for i, n in enumerate(["a", "b"])}
    rows = member_rows(ClusterView(members=same_host))
    assert [r["Host"] for r in rows] == ["127.0.0.1:5432", "127.0.0.1:5433"]


def test_roles_sync_standby_quorum_and_standby_leader() -> None:
    view = demo_view()
    rows = member_rows(replace(view, sync=SyncKey(sync_standby=frozenset({"pg0"}))))
    assert {r["Member"]: r["Role"] for r in rows} == {
        "pg2": "Leader", "pg0": "Sync Standby", "pg1": "Replica", "pg3": "Replica"}
    quorum = demo_view(config={"synchronous_mode": "quorum"})
    rows = member_rows(replace(quorum, sync=SyncKey(sync_standby=frozenset({"pg0"}))))
    assert rows[1]["Role"] == "Quorum Standby"
    standby = demo_view(config={"standby_cluster": {"host": "10.1.1.1"}})
    assert member_rows(standby)[0]["Role"] == "Standby Leader"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_format_list_table() -> None:
    text = format_list("demo", demo_view())
    lines = text.splitlines()
    assert lines[0].startswith(f"+ Cluster: demo ({SYSID}) ")
    sep = lines[2]
    assert sep.startswith("+-") and sep.endswith("-+")
    assert len(lines[0]) == len(sep)
    assert lines[0].endswith("+")
    assert _cells(lines[1]) == PRETTY
    body = lines[3:-1]
    assert lines[-1] == sep
    assert len(body) == 4
    cells = [_cells(line) for line in body]
    assert cells[0] == ["pg2", "10.0.0.2:5432", "Leader", "running", "2", "", "", "", ""]
    assert cells[2] == ["pg1", "10.0.0.1:5432", "Replica", "streaming", "2", "0/4CFFFF6", "3",
                        "", ""]
    assert cells[3] == ["pg3", "10.0.0.3:5432", "Replica", "stopped", "", "", "", "", ""]
    assert all(len(line) == len(sep) for line in lines[1:])
    # TL, the LSNs and the lags are right-aligned, headers included, as in patronictl
    assert "| Receive LSN | Lag |" in lines[1]
    assert "|   0/4CFFFF6 |   3 |" in body[2]
    assert "Maintenance mode" not in text


def test_format_list_optional_columns() -> None:
    view = demo_view()
    members = dict(view.members)
    members["pg1"] = Member("pg1", conn_url="postgres://10.0.0.1:5432/postgres",
                            pending_restart=True,
                            tags=Tags(nofailover=True, custom={"zone": "a"}))
    members["pg0"] = replace(members["pg0"], scheduled_restart={
        "schedule": "2099-01-01T00:00:00+00:00", "postgres_version": "15.9"})
    text = format_list("demo", demo_view(members=members))
    lines = text.splitlines()
    assert _cells(lines[1]) == [*PRETTY, "Pending restart", "Scheduled restart", "Tags"]
    at = next(i for i, line in enumerate(lines) if "| pg1 " in line)
    assert "| * " in lines[at] and "nofailover: true" in lines[at]
    assert "zone: a" in lines[at + 1]  # tags as block YAML: one line each
    assert lines[at + 2].startswith("+---")  # then a rule between all rows
    assert "2099-01-01T00:00:00+00:00 if version < 15.9" in text
    plain = format_list("demo", demo_view())
    assert "Tags" not in plain
    extended = format_list("demo", demo_view(), extended=True)
    assert _cells(extended.splitlines()[1])[-4:] == [
        "Pending restart", "Pending restart reason", "Scheduled restart", "Tags"]


def test_format_list_machine_formats() -> None:
    view = demo_view()
    data = json.loads(format_list("demo", view, "json"))
    # as patronictl: only the non-empty cells of a row
    assert data[0] == {"Cluster": "demo", "Member": "pg2", "Host": "10.0.0.2:5432",
                       "Role": "Leader", "State": "running", "TL": 2}
    assert data[2]["Receive LSN"] == "0/4CFFFF6" and data[2]["Receive Lag"] == 3
    assert yaml.safe_load(format_list("demo", view, "yaml")) == data
    tsv = format_list("demo", view, "tsv").splitlines()
    assert tsv[0] == "\t".join(["Cluster", *COLUMNS])
    assert tsv[1] == "demo\tpg2\t10.0.0.2:5432\tLeader\trunning\t2\t\t\t\t"
    tagged = dict(view.members)
    tagged["pg3"] = replace(tagged["pg3"], tags=Tags(nofailover=True))
    tsv = format_list("demo", demo_view(members=tagged), "tsv").splitlines()
    assert tsv[0].endswith("\tTags") and tsv[-1].endswith("\t{nofailover: true}")


def test_format_list_paused_and_scheduled_switchover_footer() -> None:
    view = demo_view(settings=HaSettings(pause=True),
                     failover={"leader": "pg2", "member": "pg1",
                               "scheduled_at": "2099-01-01T00:00:00+00:00"})
    lines = format_list("demo", view).splitlines()
    assert lines[-4:] == [
        " Maintenance mode: on",
        " Switchover scheduled at: 2099-01-01T00:00:00+00:00",
        "                    from: pg2",
        "                      to: pg1",
    ]


@pytest.mark.parametrize(("initialize", "shown"), [
    ("", "initializing"), (None, "uninitialized"),
])
def test_format_list_without_system_identifier(initialize: str | None, shown: str) -> None:
    text = format_list("demo", demo_view(initialize=initialize))
    assert text.splitlines()[0].startswith(f"+ Cluster: demo ({shown}) ")


def test_topology_tree_by_replicatefrom() -> None:
    members = {
        "a": Member("a", conn_url="postgres://10.0.0.1/postgres", role="primary"),
        "b": Member("b", conn_url="postgres://10.0.0.2/postgres"),
        "c": Member("c", conn_url="postgres://10.0.0.3/postgres",
                    tags=Tags(replicatefrom="b")),
        "d": Member("d", conn_url="postgres://10.0.0.4/postgres",
                    tags=Tags(replicatefrom="c")),
        "e": Member("e", conn_url="postgres://10.0.0.5/postgres",
                    tags=Tags(replicatefrom="gone")),
    }
    text = format_list("demo", ClusterView(leader=Leader("a"), members=members),
                       topology=True)
    names = [line.split("|")[1].rstrip() for line in text.splitlines()[3:-1]]
    assert names == [" a", " + b", "   + c", "     + d", " + e"]


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
    assert render_table("", [], ["A"]).splitlines()[0] == "+---+"


def test_format_rows_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        format_rows([], ["A"], "xml")


# --------------------------------------------------------------------------- REST client setup


def _config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "c.yml"
    path.write_text(MINIMAL + extra)
    return load_config(path)


def _vanished_ca(tmp_path: Path) -> Config:
    """A configuration naming a CA file that was removed after it was loaded (loading refuses
    a missing file)."""
    ca = tmp_path / "missing.pem"
    ca.write_text("not a certificate")
    config = _config(tmp_path, f"ctl:\n  cacert: {ca}\n")
    ca.unlink()
    return config


def test_api_base_strips_patroni() -> None:
    assert api_base("http://10.0.0.1:8008/patroni") == "http://10.0.0.1:8008"
    assert api_base("https://h:8009/patroni/") == "https://h:8009"
    assert api_base("http://h:8008") == "http://h:8008"


def test_credentials_prefer_ctl_then_restapi(tmp_path: Path) -> None:
    assert credentials(_config(tmp_path)) is None
    rest = "restapi:\n  authentication:\n    username: u\n    password: p\n"
    assert credentials(_config(tmp_path, rest)) == basic_auth("u", "p")
    ctl = "ctl:\n  authentication:\n    username: c\n    password: q\n"
    assert credentials(_config(tmp_path, rest + ctl)) == basic_auth("c", "q")
    assert basic_auth("u", "p") == "Basic dTpw"


def test_ssl_context_insecure_and_ca(tmp_path: Path) -> None:
    verified = ssl_context(_config(tmp_path))
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    by_flag = ssl_context(_config(tmp_path), insecure=True)
    assert by_flag.verify_mode == ssl.CERT_NONE and not by_flag.check_hostname
    by_ctl = ssl_context(_config(tmp_path, "ctl:\n  insecure: true\n"))
    assert by_ctl.verify_mode == ssl.CERT_NONE
    with pytest.raises(OSError):  # a CA file gone since loading is an error, not ignored
        ssl_context(_vanished_ca(tmp_path))


def test_unreadable_ctl_tls_files_fail_every_call(tmp_path: Path) -> None:
    config = _vanished_ca(tmp_path)
    member = Member("pg1", api_url="https://127.0.0.1:9/patroni")
    [answer] = asyncio.run(call_all(config, [Call(member, "GET", "/patroni")]))
    assert isinstance(answer, RestError)
    assert "TLS files of the ctl section" in str(answer)
