"""``pgha list``, ``topology``, ``history``, ``dsn``, ``version`` and ``remove`` invoked
through Typer against an in-memory DCS (and scripted member APIs for ``version``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.support.cli_env import MB, SYSID, CliEnv
from tests.support.fake_api import FakeApis

from pgha import __version__
from pgha.cli import common
from pgha.cli.main import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis) -> CliEnv:
    return CliEnv(tmp_path, monkeypatch, apis)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


# ----------------------------------------------------------------------------- list


def test_list_pretty(env: CliEnv) -> None:
    env.cluster()
    env.put("sync", {"leader": "pg1", "sync_standby": "pg2"})
    result = env.invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"+ Cluster: demo ({SYSID}) ")
    assert _cells(lines[1]) == ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag",
                                "Replay LSN", "Lag"]
    # one host for every member: the port is shown
    assert _cells(lines[3]) == ["pg1", "127.0.0.1:5432", "Leader", "running", "2", "", "", "",
                                ""]
    assert _cells(lines[4]) == ["pg2", "127.0.0.1:5432", "Sync Standby", "streaming", "2",
                                "0/5000000", "0", "", ""]
    assert _cells(lines[5]) == ["pg3", "127.0.0.1:5432", "Replica", "streaming", "2",
                                "0/4D00000", "3", "", ""]


def test_list_shows_host_port_when_hosts_repeat(env: CliEnv) -> None:
    env.cluster(replicas=0)
    env.member("pg2", port=5433, api=False)
    result = env.invoke("list", "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["Host"] for r in rows] == ["127.0.0.1:5432", "127.0.0.1:5433"]
    assert all(r["Cluster"] == "demo" for r in rows)


def test_list_machine_formats_and_extended(env: CliEnv) -> None:
    env.cluster()
    env.member("pg3", api=False, pending_restart=True, tags={"nofailover": True},
               scheduled_restart={"schedule": "2099-01-01T00:00:00+00:00"})
    as_yaml = yaml.safe_load(env.invoke("list", "-f", "yaml").stdout)
    pg3 = next(r for r in as_yaml if r["Member"] == "pg3")
    assert pg3["Pending restart"] == "*"
    assert pg3["Scheduled restart"] == "2099-01-01T00:00:00+00:00"
    assert pg3["Tags"] == {"nofailover": True}
    tsv = env.invoke("list", "-f", "tsv").stdout.splitlines()
    assert tsv[0].split("\t") == ["Cluster", "Member", "Host", "Role", "State", "TL",
                                  "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag",
                                  "Pending restart", "Scheduled restart", "Tags"]
    env.member("pg3", api=False)
    plain = env.invoke("list").stdout
    assert "Tags" not in plain
    extended = env.invoke("list", "-e", "-t").stdout
    assert "Pending restart" in extended and "Tags" in extended
    assert extended.splitlines()[0][:2] == "20"  # the timestamp line


def test_list_another_cluster_and_footer(env: CliEnv) -> None:
    env.put("members/x1", {"conn_url": "postgres://10.0.0.1:5432/postgres", "state": "running",
                           "role": "primary"}, prefix="/service/other/")
    env.put("leader", b"x1", prefix="/service/other/")
    env.put("config", {"pause": True}, prefix="/service/other/")
    env.put("failover", {"leader": "x1", "scheduled_at": "2099-01-01T00:00:00+00:00"},
            prefix="/service/other/")
    result = env.invoke("list", "other")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("+ Cluster: other (uninitialized) ")
    assert "| x1 " in result.stdout
    assert " Maintenance mode: on" in result.stdout
    assert " Switchover scheduled at: 2099-01-01T00:00:00+00:00" in result.stdout


def test_list_watch_repeats_until_interrupted(env: CliEnv,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    env.cluster()
    pauses: list[float] = []

    def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:
            env.member("pg3", xlog=0x5000000 - 40 * MB, timeline=2, api=False)
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(common, "sleep", fake_sleep)
    result = env.invoke("list", "-w", "0.5")
    assert result.exit_code == 0, result.output
    assert pauses == [0.5, 0.5]
    assert result.stdout.count("+ Cluster: demo") == 2
    first, last = result.stdout.split("+ Cluster: demo")[1:]
    pg3_rows = [_cells(line) for part in (first, last) for line in part.splitlines()
                if line.startswith("| pg3 ")]
    assert [row[6] for row in pg3_rows] == ["3", "40"]  # the second pass saw the new lag
    pauses.clear()
    result = env.invoke("topology", "-W")
    assert result.exit_code == 0
    assert pauses[0] == 2.0


def test_list_usage_and_dcs_errors(env: CliEnv) -> None:
    bad = env.invoke("list", "-f", "xml")
    assert bad.exit_code == 2
    assert "unknown format 'xml'" in bad.stderr
    env.backend.fail = True
    down = env.invoke("list")
    assert down.exit_code == 1
    assert "cannot reach the DCS" in down.stderr
    watch = env.invoke("list", "-w", "0")
    assert watch.exit_code == 2


def test_topology(env: CliEnv) -> None:
    env.cluster()
    env.member("pg3", api=False, timeline=2, tags={"replicatefrom": "pg2"})
    result = env.invoke("topology")
    assert result.exit_code == 0, result.output
    names = [line.split("|")[1].rstrip() for line in result.stdout.splitlines()[3:-1]]
    assert names == [" pg1", " + pg2", "   + pg3"]


# ----------------------------------------------------------------------------- history


def test_history(env: CliEnv) -> None:
    env.put("history", [[1, 50331808, "no recovery target specified",
                         "2024-05-01T10:00:00+00:00", "pg2"],
                        [2, 83886240, "no recovery target specified",
                         "2024-05-02T10:00:00+00:00"]])
    result = env.invoke("history")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("+----+")
    assert _cells(lines[1]) == ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
    assert _cells(lines[3]) == ["1", "50331808", "no recovery target specified",
                                "2024-05-01T10:00:00+00:00", "pg2"]
    assert _cells(lines[4])[4] == ""
    data = json.loads(env.invoke("history", "-f", "json").stdout)
    assert data[1] == {"TL": 2, "LSN": 83886240, "Reason": "no recovery target specified",
                       "Timestamp": "2024-05-02T10:00:00+00:00", "New Leader": ""}


DISCARDED_ROWS = [[1, 50331808, "no recovery target specified", "2024-05-01T10:00:00+00:00",
                   "pg2"],
                  [2, 83886240, "no recovery target specified", "2024-05-02T10:00:00+00:00",
                   "pg3"]]


def test_history_extended_shows_what_members_discarded(env: CliEnv) -> None:
    fakes = env.cluster(replicas=1)  # pg1 and pg2 answer; pg3 publishes an unreachable API
    env.member("pg3", api=False, api_url="http://127.0.0.1:9/patroni")
    env.put("history", DISCARDED_ROWS)
    report = {"member": "pg1", "timeline": 1, "from_lsn": "0/3000060", "to_lsn": "0/3001000",
              "bytes": 4000, "complete": True, "counts": {"committed": 2},
              "rows": {"insert": 3}, "transactions": []}
    fakes["pg1"].script("GET", "/history", 200,
                        [DISCARDED_ROWS[0] + [{"discarded": [report]}], DISCARDED_ROWS[1]])
    fakes["pg2"].script("GET", "/history", 200, DISCARDED_ROWS)
    result = env.invoke("history", "-e")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert _cells(lines[1]) == ["TL", "LSN", "Reason", "Timestamp", "New Leader", "Discarded"]
    assert _cells(lines[3])[5] == ("pg1: 0/3000060..0/3001000 (4000 bytes), 2 committed "
                                   "transactions (insert 3)")
    assert _cells(lines[4])[5] == "pg3: unknown"  # no answer: not an error
    assert _cells(lines[6])[5] == "pg3: unknown"  # timeline 2: nobody reported anything
    assert all(r.path == "/history" for r in fakes["pg2"].calls())
    data = json.loads(env.invoke("history", "-e", "-f", "json").stdout)
    assert data[0]["Discarded"] == [
        {"member": "pg1", "from_lsn": "0/3000060", "to_lsn": "0/3001000", "bytes": 4000,
         "transactions": 2, "complete": True},
        {"member": "pg3", "unknown": True}]
    assert data[1]["Discarded"] == [{"member": "pg3", "unknown": True}]
    tsv = env.invoke("history", "-e", "-f", "tsv").stdout.splitlines()
    assert tsv[1].split("\t")[5] == ("pg1: 0/3000060..0/3001000 (4000 bytes), 2 committed "
                                     "transactions (insert 3); pg3: unknown")
    # without -e no member is asked
    before = len(fakes["pg1"].calls())
    assert "Discarded" not in env.invoke("history").stdout
    assert len(fakes["pg1"].calls()) == before


def test_history_empty(env: CliEnv) -> None:
    result = env.invoke("history", "-f", "tsv")
    assert result.exit_code == 0
    assert result.stdout.strip() == "TL\tLSN\tReason\tTimestamp\tNew Leader"


# ----------------------------------------------------------------------------- dsn


def test_dsn_prefers_the_primary(env: CliEnv) -> None:
    env.cluster(replicas=0)
    env.member("pg1", role="primary", host="10.0.0.1", port=5432, api=False)
    env.member("pg2", host="10.0.0.2", port=6432, api=False)
    assert env.invoke("dsn").stdout.strip() == "host=10.0.0.1 port=5432"
    assert env.invoke("dsn", "-r", "replica").stdout.strip() == "host=10.0.0.2 port=6432"
    assert env.invoke("dsn", "-m", "pg2").stdout.strip() == "host=10.0.0.2 port=6432"
    missing = env.invoke("dsn", "-m", "pg9")
    assert missing.exit_code == 1 and "pg9: not a member" in missing.stderr
    both = env.invoke("dsn", "-m", "pg2", "-r", "replica")
    assert both.exit_code == 2


def test_dsn_without_primary(env: CliEnv) -> None:
    env.member("pg2", host="10.0.0.2", api=False)
    result = env.invoke("dsn", "-r", "primary")
    assert result.exit_code == 1
    assert "no member of cluster demo has the role primary" in result.stderr


# ----------------------------------------------------------------------------- version


def test_version_lists_members(env: CliEnv) -> None:
    fakes = env.cluster(replicas=1)
    fakes["pg1"].script("GET", "/patroni", 200, {"state": "running", "server_version": 150004,
                                                 "patroni": {"version": "0.1.0"}})
    fakes["pg2"].script("GET", "/patroni", 200, {"state": "running", "server_version": 90624,
                                                 "patroni": {"version": "0.1.1"}})
    result = env.invoke("version")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"pgha version {__version__}",
                                          "pg1: pgha 0.1.0 PostgreSQL 15.4",
                                          "pg2: pgha 0.1.1 PostgreSQL 9.6.24"]
    one = env.invoke("version", "demo", "pg2")
    assert one.stdout.splitlines()[1:] == ["pg2: pgha 0.1.1 PostgreSQL 9.6.24"]
    insecure = env.runner.invoke(app, ["-k", "-c", str(env.config_path), "version", "demo",
                                       "pg1"])
    assert insecure.exit_code == 0, insecure.output
    assert insecure.stdout.splitlines()[1:] == ["pg1: pgha 0.1.0 PostgreSQL 15.4"]


def test_version_unreachable_member(env: CliEnv) -> None:
    env.member("pg1", role="primary", api=False, api_url="http://127.0.0.1:9/patroni")
    result = env.invoke("version")
    assert result.exit_code == 1
    assert "pg1: failed to get version:" in result.stdout


# ----------------------------------------------------------------------------- remove


def test_remove_asks_three_times_then_deletes_everything(env: CliEnv) -> None:
    env.cluster()
    env.put("leader", b"x", prefix="/service/other/")
    result = env.invoke("remove", "demo", input="demo\nYes I am aware\npg1\n")
    assert result.exit_code == 0, result.output
    assert "Please confirm the cluster name to remove" in result.stdout
    assert 'please type: "Yes I am aware"' in result.stdout
    assert "This cluster currently is healthy. Please specify the leader name" in result.stdout
    assert not [k for k in env.backend.dump() if k.startswith("/service/demo/")]
    assert "/service/other/leader" in env.backend.dump()  # other clusters untouched


@pytest.mark.parametrize(("answers", "error"), [
    ("dmeo\n", "Cluster names specified do not match"),
    ("demo\nyes\n", 'You did not exactly type "Yes I am aware"'),
    ("demo\nYes I am aware\npg2\n", "You did not specify the current leader of the cluster"),
])
def test_remove_refused(env: CliEnv, answers: str, error: str) -> None:
    env.cluster()
    before = env.backend.dump()
    result = env.invoke("remove", "demo", input=answers)
    assert result.exit_code == 1
    assert error in result.stderr
    assert env.backend.dump() == before


def test_remove_without_running_leader_skips_the_leader_question(env: CliEnv) -> None:
    env.member("pg1", role="replica", state="stopped", api=False)
    result = env.invoke("remove", "demo", input="demo\nYes I am aware\n")
    assert result.exit_code == 0, result.output
    assert "healthy" not in result.stdout
    assert env.backend.dump() == {}


def test_remove_unknown_cluster(env: CliEnv) -> None:
    result = env.invoke("remove", "nothere")
    assert result.exit_code == 1
    assert "cluster nothere has no keys" in result.stderr
