"""ConsulStore without a server: the session TTL rule, configuration parsing, the factory."""

from __future__ import annotations

from typing import Any

import pytest

from pgha.config import ConfigError, parse_config
from pgha.dcs.consul import ConsulStore
from pgha.dcs.factory import open_kv


@pytest.mark.parametrize(("ttl", "granted", "reported"), [
    (30, 15, 15.0), (20, 10, 10.0), (25, 12, 12.0), (61, 30, 30.0),
    (15, 10, 10.0),  # cannot be honoured: Consul's minimum is 10 s (keys may live 20 s)
    (8, 10, 8.0),  # never more than ttl is reported
])
def test_session_ttl_rule(ttl: float, granted: int, reported: float) -> None:
    store = ConsulStore("127.0.0.1", 8500, ttl=ttl, timeout=1)
    assert store._granted_ttl == granted
    assert store.session_ttl == reported
    assert store.session_id is None


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ConsulStore("h", 1, ttl=30, timeout=1, scheme="ftp")
    with pytest.raises(ValueError, match="consistency"):
        ConsulStore("h", 1, ttl=30, timeout=1, consistency="strong")
    with pytest.raises(ValueError):
        ConsulStore("h", 1, ttl=0, timeout=1)


def _store(section: dict[str, Any]) -> ConsulStore:
    return ConsulStore.from_config(section, ttl=30, timeout=2)


def test_from_config() -> None:
    store = _store({})
    assert (store.host, store.port, store.scheme) == ("127.0.0.1", 8500, "http")
    store = _store({"host": "consul.local:8501", "token": "t", "dc": "eu", "verify": "false",
                    "consistency": "consistent", "checks": [], "register_service": True})
    assert (store.host, store.port) == ("consul.local", 8501)
    assert store._options == {"token": "t", "verify": False, "cert": None, "dc": "eu",
                              "consistency": "consistent"}
    store = _store({"host": "c1", "port": "9500"})
    assert (store.host, store.port) == ("c1", 9500)
    store = _store({"url": "https://[::1]:8443", "host": "ignored:1", "cacert": "/ca.pem",
                    "cert": "/c.pem", "key": "/k.pem"})
    assert (store.host, store.port, store.scheme) == ("::1", 8443, "https")
    assert store._options["verify"] == "/ca.pem"
    assert store._options["cert"] == ("/c.pem", "/k.pem")
    store = _store({"host": "https://c2:8443"})
    assert (store.host, store.port, store.scheme) == ("c2", 8443, "https")
    store = _store({"scheme": "https", "verify": False, "cacert": "/ca.pem", "cert": "/c.pem"})
    assert store._options["verify"] is False and store._options["cert"] == "/c.pem"
    for bad, what in (({"url": "consul:8500"}, "consul.url"),
                      ({"host": "h:99999"}, "consul.host"),
                      ({"verify": "maybe"}, "consul.verify"),
                      ({"consistency": "x"}, "consistency")):
        with pytest.raises(ValueError, match=what):
            _store(bad)


def _config(consul: dict[str, Any]) -> Any:
    return parse_config({"scope": "s", "name": "n", "consul": consul,
                         "postgresql": {"data_dir": "/d", "bin_dir": "/b"}}, {})


def test_factory_builds_a_consul_store() -> None:
    kv = open_kv(_config({"host": "10.0.0.1:8500", "token": "tok"}), ttl=30, timeout=3)
    assert isinstance(kv, ConsulStore)
    assert (kv.host, kv.port, kv.ttl, kv.timeout) == ("10.0.0.1", 8500, 30, 3)
    assert kv._options["token"] == "tok"
    with pytest.raises(ConfigError, match="consul"):
        open_kv(_config({"host": "a:b:c"}), ttl=30, timeout=3)


async def test_closed_store_refuses_calls() -> None:
    store = ConsulStore("127.0.0.1", 1, ttl=30, timeout=1)
    await store.close()  # never connected: fine
    from pgha.dcs.base import DCSError

    with pytest.raises(DCSError, match="closed"):
        await store.get_prefix("/x/")
