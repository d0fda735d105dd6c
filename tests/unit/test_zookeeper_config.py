"""Selecting and configuring the ZooKeeper backend (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from pgha.config import ConfigError, parse_config
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
