"""Selecting and configuring the ZooKeeper backend (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgha.config import ConfigError, parse_config
from pgha.config.keys import check_env
from pgha.dcs.factory import open_kv
from pgha.dcs.zookeeper import ZooKeeperStore


def config(zookeeper: dict[str, Any]) -> dict[str, Any]:
    return {
        "scope": "batman",
        "name": "pg1",
        "zookeeper": zookeeper,
        "postgresql": {"data_dir": "/var/lib/pg", "bin_dir": "/opt/pg/bin"},
    }


@pytest.mark.parametrize(("hosts", "expected"), [
    (["z1:2181", "z2:2182"], [("z1", 2181), ("z2", 2182)]),
    ("z1:2181, z2,z3:3000", [("z1", 2181), ("z2", 2181), ("z3", 3000)]),
    (["127.0.0.1"], [("127.0.0.1", 2181)]),
])
def test_factory_picks_zookeeper(hosts: Any, expected: list[tuple[str, int]]) -> None:
    kv = open_kv(parse_config(config({"hosts": hosts}), {}), ttl=30, timeout=5)
    assert isinstance(kv, ZooKeeperStore)
    assert kv.hosts == expected
    assert kv.ttl == 30 and kv.timeout == 5


def test_env_hosts() -> None:
    data = config({"hosts": ["ignored:1"]})
    cfg = parse_config(data, {"PATRONI_ZOOKEEPER_HOSTS": "z1:2181,z2:2181"})
    kv = open_kv(cfg, ttl=30, timeout=5)
    assert isinstance(kv, ZooKeeperStore) and kv.hosts == [("z1", 2181), ("z2", 2181)]


@pytest.mark.parametrize("hosts", [[], "", ["z1:port"], [":2181"]])
def test_bad_hosts_are_config_errors(hosts: Any) -> None:
    with pytest.raises(ConfigError) as info:  # refused when the configuration is loaded
        parse_config(config({"hosts": hosts}), {})
    assert str(info.value).startswith("zookeeper.hosts")
    assert "\n" not in str(info.value)


def test_tls_options_and_timeouts() -> None:
    kv = ZooKeeperStore.from_config(
        {"hosts": "z1:2281", "use_ssl": True, "cacert": "/ca.pem", "cert": "/c.pem",
         "key": "/k.pem", "verify": False}, ttl=30, timeout=5)
    assert kv._options["use_ssl"] is True and kv._options["ca"] == "/ca.pem"
    assert kv._options["verify_certs"] is False
    # before any handshake: the requested timeout, two thirds of ttl (never more than ttl)
    assert kv.requested_timeout == pytest.approx(20.0)
    assert kv.session_ttl == pytest.approx(20.0)
    assert kv.session_id is None


# -- auth_data, set_acls, key_password ----------------------------------------------------------


def _kv(zookeeper: dict[str, Any], env: dict[str, str] | None = None) -> ZooKeeperStore:
    kv = open_kv(parse_config(config({"hosts": "z1", **zookeeper}), env or {}), ttl=30, timeout=5)
    assert isinstance(kv, ZooKeeperStore)
    return kv


@pytest.mark.parametrize(("auth_data", "expected"), [
    ({"digest": "user:pw"}, [("digest", "user:pw")]),  # Patroni's shape
    ({"digest": "u:p", "sasl": "x"}, [("digest", "u:p"), ("sasl", "x")]),
    ([{"digest": "a:1"}, {"digest": "b:2"}], [("digest", "a:1"), ("digest", "b:2")]),
    ({}, None), (None, None),
])
def test_auth_data_reaches_kazoo(auth_data: Any, expected: Any) -> None:
    assert _kv({"auth_data": auth_data})._options["auth_data"] == expected


def test_set_acls_become_kazoo_default_acl() -> None:
    acl = _kv({"set_acls": {
        "CN=node1,OU=db": ["ALL"], "CN=ops": ["read", "Write"],
        "digest:pgha:AbC/+x=": ["CREATE", "DELETE", "ADMIN"], "world:anyone": ["READ"],
        "x509:CN=z": ["READ"], "auth:": ["ALL"]}})._options["default_acl"]
    got = {(a.id.scheme, a.id.id): a.perms for a in acl}
    assert got == {("x509", "CN=node1,OU=db"): 31, ("x509", "CN=ops"): 1 | 2,
                   ("digest", "pgha:AbC/+x="): 4 | 8 | 16, ("world", "anyone"): 1,
                   ("x509", "CN=z"): 1, ("auth", ""): 31}
    assert _kv({})._options["default_acl"] is None  # kazoo's default: open to all
    assert _kv({"set_acls": {}})._options["default_acl"] is None


def test_key_password_reaches_kazoo() -> None:
    kv = _kv({"use_ssl": True, "key_password": "s3cret"})
    assert kv._options["keyfile_password"] == "s3cret"
    # unset: "" so that OpenSSL refuses an encrypted key instead of prompting on a terminal
    assert _kv({})._options["keyfile_password"] == ""


def test_tls_env_variables(tmp_path: Path) -> None:
    files = {n: tmp_path / n for n in ("ca.pem", "c.pem", "k.pem")}
    for f in files.values():
        f.write_text("x")
    env = {"PATRONI_ZOOKEEPER_USE_SSL": "true", "PATRONI_ZOOKEEPER_VERIFY": "off",
           "PATRONI_ZOOKEEPER_CACERT": str(files["ca.pem"]),
           "PATRONI_ZOOKEEPER_CERT": str(files["c.pem"]),
           "PATRONI_ZOOKEEPER_KEY": str(files["k.pem"])}
    o = _kv({"use_ssl": False}, env)._options
    assert (o["use_ssl"], o["verify_certs"]) == (True, False)
    assert (o["ca"], o["certfile"], o["keyfile"]) == tuple(str(f) for f in files.values())
    assert not [f for f in check_env(env) if "ZOOKEEPER" in f[0]]
    o = _kv({}, {"PATRONI_ZOOKEEPER_USE_SSL": "false"})._options  # text "false" is false
    assert (o["use_ssl"], o["verify_certs"]) == (False, True)


def test_env_variables() -> None:
    kv = _kv({"auth_data": {"digest": "ignored:x"}}, {
        "PATRONI_ZOOKEEPER_AUTH_DATA": "digest: u:p",
        "PATRONI_ZOOKEEPER_SET_ACLS": "{'CN=a': [ALL], 'digest:u:h=': [READ, WRITE]}",
        "PATRONI_ZOOKEEPER_KEY_PASSWORD": "pw"})
    assert kv._options["auth_data"] == [("digest", "u:p")]
    assert {(a.id.scheme, a.id.id): a.perms for a in kv._options["default_acl"]} == {
        ("x509", "CN=a"): 31, ("digest", "u:h="): 3}
    assert kv._options["keyfile_password"] == "pw"
    kv = _kv({}, {"PGHA_ZOOKEEPER_SET_ACLS": "CN=b: [read]"})  # braces optional
    assert [(a.id.id, a.perms) for a in kv._options["default_acl"]] == [("CN=b", 1)]
    env = {f"PATRONI_ZOOKEEPER_{k}": "x: y" for k in ("AUTH_DATA", "SET_ACLS", "KEY_PASSWORD")}
    assert not [f for f in check_env(env) if "ZOOKEEPER" in f[0]]  # read, no warning


@pytest.mark.parametrize(("zookeeper", "key", "words"), [
    ({"auth_data": "digest:u:p"}, "auth_data", "mapping"),
    ({"auth_data": ["digest"]}, "auth_data", "mapping"),
    ({"auth_data": {"digest": None}}, "auth_data", "credential of digest"),
    ({"auth_data": {"digest": 1234}}, "auth_data", "got int"),
    ({"set_acls": ["CN=a"]}, "set_acls", "mapping"),
    ({"set_acls": {"CN=a": "ALL"}}, "set_acls", "list of permissions"),
    ({"set_acls": {"CN=a": []}}, "set_acls", "list of permissions"),
    ({"set_acls": {"CN=a": ["ALL", "EVERYTHING"]}}, "set_acls", "'EVERYTHING'"),
    ({"set_acls": {"digest:": ["ALL"]}}, "set_acls", "id is empty"),
    ({"set_acls": {1: ["ALL"]}}, "set_acls", "principal"),
    ({"key_password": 1234}, "key_password", "expected text"),
    ({"use_ssl": "maybe"}, "use_ssl", "true or false"),
    ({"verify": "sometimes"}, "verify", "true or false"),
])
def test_bad_values_refused_naming_the_key(zookeeper: dict[str, Any], key: str,
                                           words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"hosts": "z1", **zookeeper}), {})
    text = str(info.value)
    assert text.startswith(f"zookeeper.{key}: ") and words in text and "\n" not in text
    assert "1234" not in text  # a secret is not echoed
    with pytest.raises(ValueError, match=rf"^zookeeper\.{key}: "):  # and by the store itself
        ZooKeeperStore.from_config({"hosts": "z1", **zookeeper}, ttl=30, timeout=5)


def test_bad_env_value_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^zookeeper\.set_acls: .*list of permissions"):
        parse_config(config({"hosts": "z1"}), {"PATRONI_ZOOKEEPER_SET_ACLS": "CN=a: ALL"})
