"""The roles' libpq options in every connection pgha makes or configures (no server needed):
primary_conninfo, pg_basebackup and pg_rewind command lines (run against stand-in programs
that record their arguments and environment), the agent's asyncpg parameters (checked with
asyncpg's own parser), post_bootstrap's URL, key-file checks and the configuration side."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from asyncpg import connect_utils

from pgha.config import ConfigError, parse_config
from pgha.core.actions import Upstream
from pgha.pg import connparams, from_config, replica_methods, rewind
from pgha.pg.conf import managed_parameters, primary_conninfo, render_pgpass
from pgha.pg.connparams import (
    LIBPQ_OPTIONS,
    asyncpg_params,
    asyncpg_unsupported,
    key_file_problem,
    libpq_options,
    local_host,
    local_superuser_url,
    program_conninfo,
)
from pgha.pg.errors import PgError
from pgha.pg.from_config import pg_settings
from pgha.pg.probe import connect_local
from pgha.pg.settings import PgSettings, PgUser

UPSTREAM = Upstream("pg1", "postgres://10.0.0.1:5433/postgres")
EVERY = (("sslmode", "verify-full"), ("sslkey", "/etc/pg tls/repl.key"),
         ("sslpassword", "it's secret"), ("sslcert", "/etc/pg tls/repl.crt"),
         ("sslrootcert", "/etc/ca.pem"), ("sslcrl", "/etc/crl.pem"), ("sslcrldir", "/etc/crls"),
         ("sslnegotiation", "postgres"), ("gssencmode", "disable"),
         ("channel_binding", "require"))


@pytest.fixture(autouse=True)
def new_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    """A libpq that knows every option (the installed one is 15: no sslnegotiation)."""
    monkeypatch.setattr(connparams, "libpq_major", lambda: 17)
    connparams._warned.clear()
    from_config._warned.clear()


def settings(tmp: Path, **kw: Any) -> PgSettings:
    base = PgSettings(
        name="pg2", scope="demo", data_dir=tmp / "data", bin_dir=tmp / "bin",
        listen_host="127.0.0.1", port=5432, connect_host="127.0.0.1",
        superuser=PgUser("postgres", "su-pw"), replication=PgUser("replicator", "repl-pw"),
        rewind=PgUser("rewind_user", "rw-pw"), parameters={}, pg_hba=(), initdb_options=(),
        bootstrap_users={}, pgpass=tmp / "pgpass", socket_dir=tmp / "sock")
    return replace(base, **kw)


def parse_conninfo(text: str) -> dict[str, str]:
    """A libpq conninfo parser (the quoting rules of libpq's conninfo_parse)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        eq = text.index("=", i)
        key, i = text[i:eq].strip(), eq + 1
        value = ""
        if i < len(text) and text[i] == "'":
            i += 1
            while text[i] != "'":
                if text[i] == "\\":
                    i += 1
                value += text[i]
                i += 1
            i += 1
        else:
            while i < len(text) and not text[i].isspace():
                value += text[i]
                i += 1
        out[key] = value
    return out


# ------------------------------------------------------------------- primary_conninfo
def test_primary_conninfo_carries_every_replication_option(tmp_path: Path) -> None:
    st = settings(tmp_path, replication=PgUser("replicator", "repl-pw", libpq=EVERY))
    text = primary_conninfo(st, UPSTREAM)
    parsed = parse_conninfo(text)
    assert parsed == {"host": "10.0.0.1", "port": "5433", "user": "replicator",
                      "passfile": str(tmp_path / "pgpass"), "application_name": "pg2",
                      **dict(EVERY)}
    assert "repl-pw" not in text  # the password is read from the pgpass file
    assert "sslkey='/etc/pg tls/repl.key'" in text
    assert r"sslpassword='it\'s secret'" in text
    # written into postgresql.conf as one quoted GUC
    assert managed_parameters(st, "replica", UPSTREAM)["primary_conninfo"] == text


def test_primary_conninfo_defaults_to_sslmode_prefer(tmp_path: Path) -> None:
    text = primary_conninfo(settings(tmp_path), UPSTREAM)
    assert text == (f"host=10.0.0.1 port=5433 user=replicator passfile={tmp_path}/pgpass "
                    "application_name=pg2 sslmode=prefer")


def test_options_too_new_for_libpq_are_left_out_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(connparams, "libpq_major", lambda: 15)
    user = PgUser("replicator", None, libpq=EVERY)
    with caplog.at_level(logging.WARNING, "pgha.pg"):
        options = libpq_options(user, "replication")
        libpq_options(user, "replication")
    assert "sslnegotiation" not in options and options["sslcrldir"] == "/etc/crls"
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["postgresql.authentication.replication.sslnegotiation is ignored: the "
                        "installed libpq (15) does not know it (needs 17 or later)"]


def test_installed_libpq_version_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real function, not the fixture's stand-in
    connparams.libpq_major.cache_clear()
    major = connparams.libpq_major()
    assert isinstance(major, int) and 10 <= major < 40  # libpq5 is installed with PostgreSQL


# ------------------------------------------------------- pg_basebackup and pg_rewind
RECORDER = """#!/bin/sh
python3 - "$@" <<'EOF'
import json, os, sys
service = os.environ.get("PGSERVICEFILE")
os.makedirs(sys.argv[sys.argv.index("-D") + 1], exist_ok=True)
info = {"argv": sys.argv[1:], "PGPASSFILE": os.environ.get("PGPASSFILE"),
        "PGSERVICEFILE": service,
        "service": open(service).read() if service else None,
        "service_mode": oct(os.stat(service).st_mode & 0o777) if service else None}
json.dump(info, open(os.environ["RECORD_TO"], "w"))
EOF
"""


def recorder(tmp: Path, monkeypatch: pytest.MonkeyPatch, *names: str) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(RECORDER)
        os.chmod(bin_dir / name, 0o755)
    out = tmp / "record.json"
    monkeypatch.setenv("RECORD_TO", str(out))
    # clean_env drops PG* variables only: RECORD_TO reaches the program
    return out


def test_pg_basebackup_gets_a_connection_string_with_every_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = recorder(tmp_path, monkeypatch, "pg_basebackup")
    key = Path("/etc/pg tls/repl.key")
    monkeypatch.setattr(connparams, "key_file_problem", lambda path: None if path == str(key)
                        else "unexpected")
    st = settings(tmp_path, replication=PgUser("replicator", "repl-pw", libpq=EVERY))
    assert asyncio.run(replica_methods.basebackup(st, UPSTREAM, timeout=30))
    info = json.loads(record.read_text())
    argv = info["argv"]
    assert argv[:7] == ["-D", str(tmp_path / "data"), "-X", "stream", "-c", "fast", "-w"]
    assert argv[7] == "-d"
    parsed = parse_conninfo(argv[8])
    expected = {k: v for k, v in EVERY if k != "sslpassword"}
    assert parsed == {"host": "10.0.0.1", "port": "5433", "user": "replicator",
                      "application_name": "pg2", "passfile": str(tmp_path / "pgpass"),
                      "service": "pgha", **expected}
    assert not any("secret" in a or "repl-pw" in a for a in argv)
    assert info["PGPASSFILE"] == str(tmp_path / "pgpass")
    assert info["service"] == "[pgha]\nsslpassword=it's secret\n"
    assert info["service_mode"] == "0o600"
    assert not Path(info["PGSERVICEFILE"]).exists()  # removed afterwards
    assert "replicator:repl-pw" in (tmp_path / "pgpass").read_text()


def test_pg_basebackup_without_options_needs_no_service_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = recorder(tmp_path, monkeypatch, "pg_basebackup")
    assert asyncio.run(replica_methods.basebackup(settings(tmp_path), UPSTREAM, timeout=30))
    info = json.loads(record.read_text())
    assert info["PGSERVICEFILE"] is None
    assert parse_conninfo(info["argv"][8]) == {
        "host": "10.0.0.1", "port": "5433", "user": "replicator", "application_name": "pg2",
        "passfile": str(tmp_path / "pgpass")}


def test_pg_rewind_uses_the_rewind_role_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = recorder(tmp_path, monkeypatch, "pg_rewind")
    key = tmp_path / "rw.key"
    key.write_text("x")
    os.chmod(key, 0o600)
    options = (("sslmode", "verify-ca"), ("sslcert", "/c/rw.crt"), ("sslkey", str(key)),
               ("sslrootcert", "/c/ca.pem"), ("channel_binding", "require"))
    st = settings(tmp_path, rewind=PgUser("rewind_user", "rw-pw", libpq=options),
                  replication=PgUser("replicator", None, libpq=EVERY))
    assert asyncio.run(rewind.pg_rewind(st, UPSTREAM, timeout=30))
    info = json.loads(record.read_text())
    argv = info["argv"]
    assert argv[:2] == ["-D", str(tmp_path / "data")]
    assert argv[2].startswith("--source-server=")
    assert parse_conninfo(argv[2].split("=", 1)[1]) == {
        "host": "10.0.0.1", "port": "5433", "user": "rewind_user", "dbname": "postgres",
        "passfile": str(tmp_path / "pgpass"), **dict(options)}
    assert info["PGSERVICEFILE"] is None  # the rewind role has no sslpassword
    assert "rw-pw" not in " ".join(argv)


def test_a_group_readable_key_is_refused_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    record = recorder(tmp_path, monkeypatch, "pg_basebackup", "pg_rewind")
    key = tmp_path / "repl.key"
    key.write_text("not really a key")
    os.chmod(key, 0o644)
    user = PgUser("replicator", None, libpq=(("sslmode", "require"), ("sslkey", str(key))))
    st = settings(tmp_path, replication=user, rewind=replace(user, username="rewind_user"))
    with caplog.at_level(logging.ERROR, "pgha.pg"):
        assert not asyncio.run(replica_methods.basebackup(st, UPSTREAM, timeout=30))
        assert not asyncio.run(rewind.pg_rewind(st, UPSTREAM, timeout=30))
    assert not record.exists()  # neither program ran
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("postgresql.authentication.replication.sslkey: private key file "
                            f"'{key}' has group or world access (mode 0644)") for m in messages)
    assert any(m.startswith("postgresql.authentication.rewind.sslkey:") for m in messages)
    assert stat.S_IMODE(key.stat().st_mode) == 0o644  # never chmod-ed


def test_key_file_rules() -> None:
    assert key_file_problem("/nonexistent/k.key") is not None
    assert "not a regular file" in str(key_file_problem("/"))


@pytest.mark.parametrize("mode, ok", [(0o600, True), (0o400, True), (0o640, False),
                                      (0o604, False), (0o700, True)])
def test_key_file_modes(tmp_path: Path, mode: int, ok: bool) -> None:
    key = tmp_path / "k.key"
    key.write_text("x")
    os.chmod(key, mode)
    problem = key_file_problem(str(key))
    assert (problem is None) == ok or (os.geteuid() == 0 and mode == 0o640)
    if not ok and problem:
        assert str(key) in problem


# ------------------------------------------------------------------ asyncpg (agent)
def parsed_by_asyncpg(params: dict[str, Any]) -> Any:
    _, conn_params = connect_utils._parse_connect_dsn_and_args(
        dsn=params.get("dsn"), host=params["host"], port=params["port"], user=params["user"],
        password=params["password"], passfile=None, database="postgres",
        ssl=params.get("ssl"), service=None, servicefile=None, direct_tls=None,
        server_settings=None, target_session_attrs=None, krbsrvname=None, gsslib=None)
    return conn_params


def test_asyncpg_gets_the_superuser_options_it_supports(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("client.test", common_name="postgres")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.crt", "key": tmp_path / "c.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    user = PgUser("postgres", "pw", libpq=(
        ("sslmode", "verify-full"), ("sslcert", str(files["cert"])),
        ("sslkey", str(files["key"])), ("sslrootcert", str(files["ca"])),
        ("sslnegotiation", "postgres"), ("sslcrldir", "/etc/crls"),
        ("channel_binding", "require"), ("gssencmode", "disable")))
    params = asyncpg_params(user, "10.0.0.1", 5433)
    assert params["host"] == "10.0.0.1" and params["port"] == 5433
    assert params["user"] == "postgres" and params["password"] == "pw"
    parsed = parsed_by_asyncpg(params)
    assert parsed.sslmode.name == "verify_full"
    assert isinstance(parsed.ssl, ssl.SSLContext)
    assert parsed.ssl.verify_mode == ssl.CERT_REQUIRED and parsed.ssl.check_hostname
    assert parsed.server_settings is None  # nothing unknown leaked into startup parameters
    assert asyncpg_unsupported(user) == ["sslcrldir=/etc/crls", "channel_binding=require"]


def test_asyncpg_over_the_socket_uses_no_tls(tmp_path: Path) -> None:
    user = PgUser("postgres", None, libpq=(("sslmode", "verify-full"),))
    params = asyncpg_params(user, str(tmp_path), 5432)
    assert params["ssl"] is False and "dsn" not in params
    assert parsed_by_asyncpg(params).sslmode.name == "disable"


def test_local_connections_follow_use_unix_socket(tmp_path: Path) -> None:
    assert local_host(settings(tmp_path)) == str(tmp_path / "sock")
    tcp = settings(tmp_path, use_unix_socket=False)
    assert local_host(tcp) == "localhost"
    assert local_host(replace(tcp, listen_host="0.0.0.0")) == "localhost"
    assert local_host(replace(tcp, listen_host="10.0.0.5, 127.0.0.1")) == "localhost"
    assert local_host(replace(tcp, listen_host="10.0.0.5,10.0.0.6")) == "10.0.0.5"


def test_agent_refuses_a_key_libpq_would_refuse(tmp_path: Path) -> None:
    key = tmp_path / "su.key"
    key.write_text("x")
    os.chmod(key, 0o640 if os.geteuid() != 0 else 0o644)
    su = PgUser("postgres", None, libpq=(("sslmode", "require"), ("sslkey", str(key))))
    st = settings(tmp_path, superuser=su, use_unix_socket=False)
    with pytest.raises(PgError, match=f"cannot connect to localhost:5432: .*'{key}'"):
        asyncio.run(connect_local(st, timeout=1))


def test_post_bootstrap_url(tmp_path: Path) -> None:
    su = PgUser("post gres", "pw", libpq=(("sslmode", "verify-ca"), ("sslcert", "/c/su.crt"),
                                          ("sslpassword", "kp")))
    tcp = settings(tmp_path, superuser=su, use_unix_socket=False, port=5433)
    assert local_superuser_url(tcp) == ("postgresql://post%20gres@/postgres?host=localhost&"
                                        "port=5433&service=pgha&sslmode=verify-ca&"
                                        "sslcert=%2Fc%2Fsu.crt")
    sock = replace(tcp, use_unix_socket=True)
    assert local_superuser_url(sock) == (
        f"postgresql://post%20gres@/postgres?host={str(tmp_path / 'sock').replace('/', '%2F')}"
        "&port=5433")


def test_program_conninfo_keeps_secrets_out(tmp_path: Path) -> None:
    st = settings(tmp_path)
    user = PgUser("u", "pw", libpq=(("sslpassword", "kp"), ("sslmode", "require")))
    text = program_conninfo(st, user, "replication", "h", 1, dbname="postgres")
    assert "kp" not in text and "pw" not in text and "service=pgha" in text


# ------------------------------------------------------------------- from the configuration
def cfg(tmp: Path, **pg: Any) -> Any:
    return parse_config({
        "scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": str(tmp / "data"),
                       "bin_dir": "/usr/lib/postgresql/15/bin", "pgpass": "rel/pgpass", **pg},
    }, env={})


def test_configuration_options_reach_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    # the files named here do not exist; the loader's missing-file check is not the subject
    monkeypatch.setattr("pgha.config.loader.file_keys", lambda raw: [])
    auth = {
        "superuser": {"username": "postgres", "sslmode": "verify-ca", "sslcert": "certs/su.crt",
                      "sslcrldir": "/etc/crls", "gssencmode": "prefer"},
        "replication": {"username": "replicator", "password": "p",
                        **{k: v for k, v in EVERY if k != "sslkey"}, "sslkey": "k/r.key"},
        "rewind": {"username": "rewind_user", "sslrootcert": "system"},
    }
    with caplog.at_level(logging.WARNING, "pgha.config"):
        config = cfg(tmp_path, authentication=auth, use_unix_socket=True,
                     use_unix_socket_repl=True, parameters={"unix_socket_directories": "..,/x"})
        st = pg_settings(config, config.bootstrap.dcs)
    repl = dict(st.replication.libpq)
    assert [k for k, _ in st.replication.libpq] == list(LIBPQ_OPTIONS)
    assert repl["sslkey"] == str(tmp_path / "k" / "r.key")  # relative: made absolute
    assert repl["sslpassword"] == "it's secret" and st.replication.password == "p"
    assert dict(st.superuser.libpq)["sslcert"] == str(tmp_path / "certs" / "su.crt")
    assert st.rewind.libpq == (("sslrootcert", "system"),)
    assert st.use_unix_socket is True and config.postgresql.use_unix_socket_repl is True
    assert st.socket_dir == tmp_path  # '..' is relative to the data directory, as PostgreSQL
    assert st.pgpass == tmp_path / "rel" / "pgpass"
    warning = [r.getMessage() for r in caplog.records if "asyncpg" in r.getMessage()]
    assert warning == ["postgresql.authentication.superuser: sslcrldir=/etc/crls, "
                       "gssencmode=prefer are not supported by the agent's own connections "
                       "(asyncpg); they connect without them (only to other members: the "
                       "local server is reached over the unix socket)"]
    assert pg_settings(cfg(tmp_path), config.bootstrap.dcs).use_unix_socket is False  # default
    assert "it's secret" not in render_pgpass(st)


@pytest.mark.parametrize("key, value", [("sslmode", "sometimes"), ("gssencmode", "yes"),
                                        ("channel_binding", "always"),
                                        ("sslnegotiation", "tls"), ("sslcert", "a\nb")])
def test_bad_option_values_are_refused_with_their_key_path(
        tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(tmp_path, authentication={"replication": {"username": "r", key: value}})
    paths = dict(info.value.errors)
    assert any(p.startswith("postgresql.authentication.replication") for p in paths), paths
    assert len(str(info.value).splitlines()) == 1


def test_tcp_to_the_local_server_without_credentials_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "pgha.config"):
        config = cfg(tmp_path)  # use_unix_socket defaults to false, as in Patroni
        pg_settings(config, config.bootstrap.dcs)
        with_password = cfg(tmp_path, authentication={"superuser": {"password": "x"}})
        pg_settings(with_password, with_password.bootstrap.dcs)
        over_socket = cfg(tmp_path, use_unix_socket=True)
        pg_settings(over_socket, over_socket.bootstrap.dcs)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "postgresql.use_unix_socket is false: the agent connects to its PostgreSQL over TCP as "
        "postgres, who has neither a password nor a client certificate configured; unless "
        "pg_hba.conf admits it without one, set postgresql.use_unix_socket: true"]


def test_member_key_carries_the_port_of_connect_address(tmp_path: Path) -> None:
    """Peers dial ``connect_address`` (host AND port: a proxy, NAT or pooler may sit in front
    of the listen port); found by the chaos campaign, whose links listen on other ports."""
    from pgha.pg.postgres import Postgres

    config = cfg(tmp_path, connect_address="db1.example:6432")
    st = pg_settings(config, config.bootstrap.dcs)
    assert (st.port, st.connect_host, st.connect_port) == (5432, "db1.example", 6432)
    assert Postgres(st).conn_url() == "postgres://db1.example:6432/postgres"
    assert Postgres(st).conn_url() == config.postgresql.conn_url
    plain = cfg(tmp_path)
    assert Postgres(pg_settings(plain, plain.bootstrap.dcs)).conn_url() == \
        "postgres://127.0.0.1:5432/postgres"
