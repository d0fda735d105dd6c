"""One interface over the real DCS servers the tests start (etcd, ZooKeeper, the Consul emulator,
a real Consul agent when a ``consul`` binary exists), so the DCS contract suite and the
cluster scenarios run unchanged against every backend.

A backend registers a factory in :data:`SERVERS`. ``available()`` says whether the server can
run on this machine (the reason is printed as the skip reason otherwise).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, Protocol

from pgha.dcs.base import KVStore


class DcsServer(Protocol):
    """A running DCS server the tests own. ``stop()``/``start()`` restart it on the same
    address (and data, where the server keeps any); ``kill()`` is SIGKILL.

    Optional members, looked up with ``getattr`` by the DCS contract suite
    (``tests/integration/test_dcs_contract.py``); an adapter without them gets the default:

    * ``contract_ttl: float`` (default 4.0): the ``ttl`` the suite's clients are made with. Set
      it when the backend cannot honour 4 s, e.g. Consul (session TTL ``ttl / 2`` must be at
      least 10 s): 20.
    * ``abandon(kv) -> None`` (may be ``async``): make the client ``kv`` fall silent like a node
      that died -- no more traffic that keeps its session alive (ZooKeeper: stop kazoo's
      background pings, e.g. cut its socket), WITHOUT closing or revoking the session, so the
      server expires it. The suite calls it right after the client's last ``keepalive()`` and
      expects the client's ephemeral keys gone within ``kv.ttl`` + 1.5 s (not before
      ``kv.session_ttl`` - 0.5 s); afterwards it only calls ``kv.close()`` (which must not
      raise). Default: nothing, the suite just stops calling ``keepalive()`` -- enough for
      etcd leases and Consul sessions, which only explicit requests renew.
    """

    kind: str  # the config section it answers to: "etcd" | "zookeeper" | "consul"

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...
    def make_kv(self, ttl: float, timeout: float) -> KVStore: ...
    def config_section(self) -> dict[str, Any]:
        """The YAML section(s) an agent needs, e.g. ``{"etcd3": {"hosts": ["127.0.0.1:2379"]}}``."""
        ...


class ServedDcs:
    """Base of the adapters: ``start``/``stop``/``kill``/``close`` are the ``server``'s."""

    server: Any

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()

    def close(self) -> None:
        self.server.close()


def _etcd(client: str = "grpc") -> DcsServer:
    from tests.support.etcd import EtcdServer

    class EtcdDcs(ServedDcs):
        kind = "etcd"

        def __init__(self) -> None:
            self.server = EtcdServer()
            self.server.start()

        def make_kv(self, ttl: float, timeout: float) -> KVStore:
            if client == "http":
                from pgha.dcs.etcd_http import EtcdHttpStore

                return EtcdHttpStore(self.server.endpoints, ttl=ttl, timeout=timeout)
            from pgha.dcs.etcd import EtcdStore

            return EtcdStore(self.server.endpoints, ttl=ttl, timeout=timeout)

        def config_section(self) -> dict[str, Any]:
            hosts = [f"{h}:{p}" for h, p in self.server.endpoints]
            return {"etcd3": {"hosts": hosts}}

    return EtcdDcs()


def _etcd_available() -> str | None:
    return None if shutil.which("etcd") else "etcd is not installed (scripts/setup installs it)"


class ZooKeeperDcs(ServedDcs):
    """A ZooKeeper server for the contract suite; stores are built from the YAML section
    (``ZooKeeperStore.from_config``) with ``options`` (e.g. ``auth_data``, ``set_acls``)
    added to its ``hosts``."""

    kind = "zookeeper"

    def __init__(self, **options: Any) -> None:
        from tests.support.zookeeper import ZooKeeperServer

        self.options = options
        self.server = ZooKeeperServer()
        self.server.start()

    def section(self, **options: Any) -> dict[str, Any]:
        """The ``zookeeper`` section: hosts, this server's options, then ``options``."""
        return {"hosts": [f"{h}:{p}" for h, p in self.server.hosts], **self.options, **options}

    def make_kv(self, ttl: float, timeout: float) -> KVStore:
        from pgha.dcs.zookeeper import ZooKeeperStore

        return ZooKeeperStore.from_config(self.section(), ttl=ttl, timeout=timeout)

    def config_section(self) -> dict[str, Any]:
        return {"zookeeper": self.section()}


def _zookeeper() -> DcsServer:
    return ZooKeeperDcs()


def _zookeeper_available() -> str | None:
    from tests.support.zookeeper import zookeeper_unavailable

    return zookeeper_unavailable()


def _consul_emulator() -> DcsServer:
    from tests.support.consul_emulator import ConsulEmulatorDcs

    return ConsulEmulatorDcs()


def _consul_emulator_available() -> str | None:
    return None  # pure Python (aiohttp), runs everywhere


def _consul_agent() -> DcsServer:
    from tests.support.consul_agent import ConsulAgentDcs

    return ConsulAgentDcs()


def _consul_agent_available() -> str | None:
    from tests.support.consul_agent import consul_agent_available

    return consul_agent_available()


# name -> (factory, availability check returning None or the reason it cannot run)
SERVERS: dict[str, tuple[Callable[[], DcsServer], Callable[[], str | None]]] = {
    "etcd": (_etcd, _etcd_available),
    "etcd-http": (lambda: _etcd("http"), _etcd_available),
    "zookeeper": (_zookeeper, _zookeeper_available),
    "consul-emulator": (_consul_emulator, _consul_emulator_available),
    "consul": (_consul_agent, _consul_agent_available),
}


def available(name: str) -> str | None:
    """None when the server ``name`` can run here, else why not."""
    return SERVERS[name][1]()


def agent_timing(name: str) -> dict[str, float]:
    """Dynamic-config timing for a test cluster on server ``name``: Consul cannot keep a
    session shorter than 10 s, so its clusters use ttl 20 (session TTL ttl/2); the others
    run at ttl 5."""
    if name.startswith("consul"):
        return {"ttl": 20, "loop_wait": 2, "retry_timeout": 3}
    return {"ttl": 5, "loop_wait": 1, "retry_timeout": 1}
