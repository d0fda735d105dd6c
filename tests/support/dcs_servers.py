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
    address (and data, where the server keeps any); ``kill()`` is SIGKILL."""

    kind: str  # the config section it answers to: "etcd" | "zookeeper" | "consul"

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...
    def make_kv(self, ttl: float, timeout: float) -> KVStore: ...
    def config_section(self) -> dict[str, Any]:
        """The YAML section(s) an agent needs, e.g. ``{"etcd3": {"hosts": ["127.0.0.1:2379"]}}``."""
        ...


def _etcd() -> DcsServer:
    from tests.support.etcd import EtcdServer

    class EtcdDcs:
        kind = "etcd"

        def __init__(self) -> None:
            self.server = EtcdServer()
            self.server.start()

        def start(self) -> None:
            self.server.start()

        def stop(self) -> None:
            self.server.stop()

        def kill(self) -> None:
            self.server.kill()

        def close(self) -> None:
            self.server.close()

        def make_kv(self, ttl: float, timeout: float) -> KVStore:
            from pgha.dcs.etcd import EtcdStore

            return EtcdStore(self.server.endpoints, ttl=ttl, timeout=timeout)

        def config_section(self) -> dict[str, Any]:
            hosts = [f"{h}:{p}" for h, p in self.server.endpoints]
            return {"etcd3": {"hosts": hosts}}

    return EtcdDcs()


def _etcd_available() -> str | None:
    return None if shutil.which("etcd") else "etcd is not installed (scripts/setup installs it)"


# name -> (factory, availability check returning None or the reason it cannot run)
SERVERS: dict[str, tuple[Callable[[], DcsServer], Callable[[], str | None]]] = {
    "etcd": (_etcd, _etcd_available),
}


def available(name: str) -> str | None:
    """None when the server ``name`` can run here, else why not."""
    return SERVERS[name][1]()
