"""Bad configuration input (issue 9, section F): every case gives one line per error naming
the key path and exit status 2, never a traceback, from ``pgha validate-config`` and from
``pgha run`` alike (``run`` stops before anything is started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgha.cli.main import app
from pgha.config import ConfigError, load_config, parse_config, parse_dynamic_config

pytestmark = pytest.mark.usefixtures("restore_root_logging")

BASE = """\
scope: demo
name: pg1
etcd:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /tmp/pg1
  bin_dir: /opt/pg/bin
"""

NESTED_FLOW = "scope: demo\nname: pg1\ntags:\n  deep: " + "[" * 10000 + "]" * 10000 + "\n"
NESTED_BLOCK = BASE + "tags:\n" + "".join("  " * (i + 1) + "k:\n" for i in range(10000)) + \
    "  " * 10001 + "v: 1\n"

CASES: list[tuple[str, bytes, str, str]] = [
    # (id, file content, key path in the error, words of the message)
    ("non-utf8", BASE.encode() + b"tags:\n  rack: \xff\xfe\n", "<file>", "not valid UTF-8"),
    ("nested-flow", NESTED_FLOW.encode(), "<file>", "nested more than 64 levels"),
    ("nested-block", NESTED_BLOCK.encode(), "<file>", "nested more than 64 levels"),
    ("ttl-inf", (BASE + "bootstrap:\n  dcs:\n    ttl: .inf\n").encode(), "bootstrap.dcs.ttl",
     "finite"),
    ("ttl-1e400", (BASE + "bootstrap:\n  dcs:\n    ttl: 1e400\n").encode(), "bootstrap.dcs.ttl",
     "finite"),
    ("ttl-0", (BASE + "bootstrap:\n  dcs:\n    ttl: 0\n").encode(), "bootstrap.dcs.ttl",
     "must be >= 5"),
    ("retry-timeout-0", (BASE + "bootstrap:\n  dcs:\n    retry_timeout: 0\n").encode(),
     "bootstrap.dcs.retry_timeout", "must be >= 1"),
    ("loop-wait-nan", (BASE + "bootstrap:\n  dcs:\n    loop_wait: .nan\n").encode(),
     "bootstrap.dcs.loop_wait", "finite"),
    ("pg-ctl-timeout-inf", BASE.replace("bin_dir", "pg_ctl_timeout: 1.0e+400\n  bin_dir")
     .encode(), "postgresql.pg_ctl_timeout", "finite"),
    ("member-slots-ttl-huge", (BASE + "bootstrap:\n  dcs:\n    member_slots_ttl: "
                               + "9" * 400 + "\n").encode(),
     "bootstrap.dcs.member_slots_ttl", "finite"),
    ("zookeeper-hosts-port", BASE.replace("etcd:\n  hosts: 127.0.0.1:2379",
                                          "zookeeper:\n  hosts: [z1:2181, 'z2:x']").encode(),
     "zookeeper.hosts[1]", "not host[:port]"),
    ("zookeeper-hosts-type", BASE.replace("etcd:\n  hosts: 127.0.0.1:2379",
                                          "zookeeper:\n  hosts: {a: 1}").encode(),
     "zookeeper.hosts", "expected a list"),
    ("restapi-certfile", (BASE + "restapi:\n  certfile: /nonexistent/cert.pem\n").encode(),
     "restapi.certfile", "file not found: /nonexistent/cert.pem"),
    ("ctl-keyfile", (BASE + "ctl:\n  keyfile: /nonexistent/key.pem\n").encode(),
     "ctl.keyfile", "file not found"),
    ("etcd-cacert", BASE.replace("hosts: 127.0.0.1:2379",
                                 "hosts: 127.0.0.1:2379\n  cacert: /nonexistent/ca.pem").encode(),
     "etcd.cacert", "file not found"),
    ("replication-sslcert", BASE.replace(
        "bin_dir", "authentication:\n    replication:\n      sslcert: /nonexistent/r.crt\n"
        "  bin_dir").encode(), "postgresql.authentication.replication.sslcert", "file not found"),
    ("name-slash", BASE.replace("name: pg1", "name: a/b").encode(), "name", "'/'"),
    ("name-dotdot", BASE.replace("name: pg1", "name: ..").encode(), "name", "'..'"),
    ("name-nul", BASE.replace("name: pg1", 'name: "pg\\0one"').encode(), "name", "NUL"),
    ("restapi-wildcard", (BASE + "restapi:\n  listen: 0.0.0.0:8008\n").encode(),
     "restapi.listen", "restapi.connect_address must say"),
    ("restapi-wildcard-v6", (BASE + "restapi:\n  listen: '[::]:8008'\n").encode(),
     "restapi.listen", "connect_address"),
    ("postgresql-wildcard", BASE.replace("127.0.0.1:5432", "'*:5432'").encode(),
     "postgresql.listen", "postgresql.connect_address must say"),
    ("custom-conf-missing", (BASE + "  custom_conf: /nonexistent/base.conf\n").encode(),
     "postgresql.custom_conf", "file not found: /nonexistent/base.conf"),
    ("custom-conf-empty", (BASE + "  custom_conf: ''\n").encode(),
     "postgresql.custom_conf", "expected the path of a file"),
    ("pg-ident-not-list", (BASE + "  pg_ident: {a: b}\n").encode(),
     "postgresql.pg_ident", "expected a valid list"),
    ("pg-ident-newline", (BASE + "  pg_ident: ['m a b', \"m c d\\nm e f\"]\n").encode(),
     "postgresql.pg_ident[1]", "one line expected"),
    ("dcs-pg-ident-newline", (BASE + "bootstrap:\n  dcs:\n    postgresql:\n      pg_ident:"
                              " [\"m c d\\nm e f\"]\n").encode(),
     "bootstrap.dcs.postgresql.pg_ident[0]", "one line expected"),
]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE", "PGHA_CONFIGURATION",
                "PATRONI_CONFIGURATION"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


@pytest.mark.parametrize("command", ["validate-config", "run"])
@pytest.mark.parametrize(("content", "path", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_key_path_and_exit_2(
        runner: CliRunner, tmp_path: Path, command: str, content: bytes, path: str,
        words: str) -> None:
    config = tmp_path / "pgha.yml"
    config.write_bytes(content)
    result = runner.invoke(app, [command, str(config)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    key = str(config) if path == "<file>" else path
    lines = [line.strip() for line in result.stderr.splitlines()
             if line.strip().startswith(f"{key}:")]
    assert lines, result.stderr
    assert any(words in line for line in lines), lines
    assert all(len(line) < 300 for line in lines)
    assert "configuration is valid" not in result.stdout


def test_wildcard_listen_with_connect_address_is_fine() -> None:
    data = {"scope": "demo", "name": "pg1", "etcd": {"hosts": "127.0.0.1:2379"},
            "restapi": {"listen": "0.0.0.0:8008", "connect_address": "10.0.0.5:8008"},
            "postgresql": {"listen": "*:5432", "connect_address": "10.0.0.5:5432",
                           "data_dir": "/d", "bin_dir": "/b"}}
    cfg = parse_config(data, {})
    assert cfg.restapi.connect_host_port == "10.0.0.5:8008"
    assert cfg.postgresql.connect_host_port == "10.0.0.5:5432"


def test_existing_certificate_files_are_accepted(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    data = {"scope": "demo", "name": "pg1", "etcd": {"hosts": "h:2379", "cacert": str(cert)},
            "restapi": {"certfile": str(cert), "keyfile": str(cert)},
            "postgresql": {"data_dir": "/d", "bin_dir": "/b", "authentication": {
                "superuser": {"username": "postgres", "sslrootcert": "system"}}}}
    assert parse_config(data, {}).restapi.certfile == str(cert)


def test_dynamic_configuration_bad_numbers_and_depth() -> None:
    for bad in ({"ttl": float("inf")}, {"retry_timeout": float("nan")},
                {"member_slots_ttl": "1" + "0" * 400}):
        with pytest.raises(ConfigError) as info:
            parse_dynamic_config(bad, prefix="config")
        assert str(info.value).startswith(f"config.{next(iter(bad))}:")
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config({"slots": deep}, prefix="config")
    assert "nested more than 64 levels deep" in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_aliases_neither_blow_up_nor_loop(tmp_path: Path) -> None:
    lines = ["scope: demo", "name: pg1", "etcd: {hosts: 127.0.0.1:2379}",
             "postgresql: {data_dir: /d, bin_dir: /b}", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("\n".join(lines).replace("a0: &a0", "tags:\n  a0: &a0")
                    .replace("\na", "\n  a") + "\n")
    cfg = load_config(bomb, env={})  # 9**10 leaves if expanded: must answer at once
    assert "a9" in cfg.tags.custom
    cycle = tmp_path / "cycle.yml"
    cycle.write_text("scope: demo\nname: pg1\ntags: &t {self: *t}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cycle, env={})
    assert "nested more than 64 levels deep" in str(info.value)
