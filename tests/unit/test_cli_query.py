"""``pgha query`` against a real PostgreSQL server (one per module, password authentication),
the member taken from an in-memory DCS. Skipped, with the reason shown, when the PostgreSQL
binaries are missing or the tests run as root (PostgreSQL refuses to)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli_env import CliEnv
from tests.support.fake_api import FakeApis
from tests.support.postgres import LocalPostgres, postgres_available

from pgha.cli import common

pytestmark = pytest.mark.skipif(
    not postgres_available(),
    reason="needs PostgreSQL server binaries and a non-root user")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    with LocalPostgres(tmp_path_factory.mktemp("pg"), password="secret") as pg:
        yield pg


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis,
        server: LocalPostgres) -> CliEnv:
    bench = CliEnv(tmp_path, monkeypatch, apis, superuser=("postgres", "secret"))
    bench.member("pg1", role="primary", port=server.port, api=False)
    bench.member("pg2", port=1, api=False)  # a replica nobody listens for
    bench.put("leader", b"pg1")
    return bench


def test_query_tsv_with_header_uses_superuser_credentials(env: CliEnv) -> None:
    result = env.invoke("query", "-c", "SELECT 1 AS one, 'a b' AS two, NULL AS three, "
                        "current_user AS who")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["one\ttwo\tthree\twho", "1\ta b\t\tpostgres"]


def test_query_formats_and_delimiter(env: CliEnv) -> None:
    sql = "SELECT g AS n, g * 2 AS double FROM generate_series(1, 3) g"
    data = json.loads(env.invoke("query", "-c", sql, "--format", "json").stdout)
    assert data == [{"n": 1, "double": 2}, {"n": 2, "double": 4}, {"n": 3, "double": 6}]
    csv = env.invoke("query", "-c", sql, "--delimiter", ",").stdout.splitlines()
    assert csv == ["n,double", "1,2", "2,4", "3,6"]
    pretty = env.invoke("query", "-c", sql, "--format", "pretty").stdout.splitlines()
    assert pretty[1] == "| n | double |"
    dupes = env.invoke("query", "-c", "SELECT 1, 2").stdout.splitlines()
    assert dupes == ["?column?\t?column?_2", "1\t2"]


def test_query_file_database_and_multi_statement(env: CliEnv, tmp_path: Path) -> None:
    script = tmp_path / "q.sql"
    script.write_text("SELECT current_database() AS db")
    result = env.invoke("query", "-f", str(script), "-d", "template1")
    assert result.stdout.splitlines() == ["db", "template1"]
    multi = env.invoke("query", "-c", "CREATE TEMP TABLE t(x int); INSERT INTO t VALUES (1)")
    assert multi.exit_code == 0, multi.output
    assert multi.stdout.splitlines() == ["status", "INSERT 0 1"]
    stdin = env.invoke("query", "-f", "-", input="SELECT 42 AS answer")
    assert stdin.stdout.splitlines() == ["answer", "42"]


def test_query_other_user_with_password_prompt(env: CliEnv) -> None:
    created = env.invoke("query", "-c", "DROP ROLE IF EXISTS ops; "
                         "CREATE ROLE ops LOGIN PASSWORD 'opspw'")
    assert created.exit_code == 0, created.output
    result = env.invoke("query", "-U", "ops", "--password", "-c", "SELECT current_user AS u",
                        input="opspw\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == ["u", "ops"]
    wrong = env.invoke("query", "-U", "ops", "--password", "-c", "SELECT 1", input="nope\n")
    assert wrong.exit_code == 1
    assert "password authentication failed" in wrong.stderr


def test_query_errors_exit_1(env: CliEnv) -> None:
    bad_sql = env.invoke("query", "-c", "SELEC 1")
    assert bad_sql.exit_code == 1
    assert "PostgresSyntaxError" in bad_sql.stderr
    down = env.invoke("query", "-r", "replica", "-c", "SELECT 1")
    assert down.exit_code == 1
    assert "pg2:" in down.stderr
    usage = env.invoke("query")
    assert usage.exit_code == 2
    both = env.invoke("query", "-c", "SELECT 1", "-f", "x.sql")
    assert both.exit_code == 2


def test_query_by_member_and_watch(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(common, "sleep", fake_sleep)
    result = env.invoke("query", "-m", "pg1", "-c", "SELECT 7 AS seven", "-W")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["seven", "7", "seven", "7"]
    # in watch mode an error is printed and the watch goes on
    calls.clear()
    failing = env.invoke("query", "-m", "pg2", "-c", "SELECT 1", "-w", "1")
    assert failing.exit_code == 0
    assert failing.stdout.count("ERROR pg2:") == 2
