"""The DCS a campaign runs on, and the faults that belong to the DCS itself.

Topologies: ``etcd`` (one server), ``etcd3`` (three-node cluster), ``zookeeper`` (standalone),
``zookeeper3`` (ensemble), ``consul`` (the emulator, in its own process so that the campaign's
own threads do not slow it down). Each exposes its servers' client addresses (the campaign puts
one link per member and server in front of them), the YAML section an agent needs for a given
list of endpoints, and:

* :meth:`DcsTopology.lose_quorum` / :meth:`DcsTopology.restore_quorum`: a majority of the
  servers killed (a single server: the server itself) and started again on the same data, so
  no key is lost -- as when a real cluster loses and regains its quorum;
* :meth:`DcsTopology.change_leader`: the servers' own leader killed and restarted (an election
  under the cluster); only for topologies with a leader (``etcd3``, ``zookeeper3``).

The Consul emulator stands in for a whole Consul cluster: "quorum loss" freezes it (SIGSTOP:
requests hang, as they do towards servers that lost their leader), and it has no leader change.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pgha.cli.localcluster import wait_tcp
from tests.support.consul_emulator import free_port as free_consul_port
from tests.support.etcd import EtcdCluster, EtcdServer
from tests.support.zookeeper import ZooKeeperEnsemble, ZooKeeperServer, zookeeper_unavailable

ROOT = Path(__file__).resolve().parents[3]
TOPOLOGIES = ("etcd", "etcd3", "zookeeper", "zookeeper3", "consul")


class DcsTopology(Protocol):
    name: str
    has_leader: bool
    timing: dict[str, float]  # ttl, loop_wait, retry_timeout for the agents

    def addresses(self) -> list[tuple[str, int]]: ...
    def section(self, endpoints: list[str]) -> dict[str, Any]: ...
    def lose_quorum(self) -> str: ...
    def restore_quorum(self) -> None: ...
    def change_leader(self) -> str: ...
    def close(self) -> None: ...


FAST = {"ttl": 5.0, "loop_wait": 1.0, "retry_timeout": 1.0}


class _Members:
    """Quorum faults over a list of servers with ``kill()`` and ``start()``."""

    def __init__(self, servers: list[Any]) -> None:
        self.servers = servers
        self.down: list[Any] = []

    def lose_quorum(self) -> str:
        majority = len(self.servers) // 2 + 1
        self.down = self.servers[-majority:]
        for server in self.down:
            server.kill()
        return f"{majority} of {len(self.servers)} servers killed"

    def restore_quorum(self) -> None:
        down, self.down = self.down, []
        for server in down:
            server.spawn()
        for server in down:
            server.wait_ready(60)


class Etcd:
    name = "etcd"
    has_leader = False
    timing = FAST

    def __init__(self, nodes: int = 1) -> None:
        self.cluster: EtcdCluster | None = None
        if nodes == 1:
            server = EtcdServer()
            server.start()
            self.servers = [server]
        else:
            self.name, self.has_leader = f"etcd{nodes}", True
            self.cluster = EtcdCluster(nodes)
            self.cluster.start()
            self.servers = list(self.cluster.members)
        self._quorum = _Members(self.servers)
        self._restart: EtcdServer | None = None

    def addresses(self) -> list[tuple[str, int]]:
        return [ep for s in self.servers for ep in s.endpoints]

    def section(self, endpoints: list[str]) -> dict[str, Any]:
        return {"etcd3": {"hosts": endpoints}}

    def lose_quorum(self) -> str:
        return self._quorum.lose_quorum()

    def restore_quorum(self) -> None:
        self._quorum.restore_quorum()

    def _leader(self) -> EtcdServer | None:
        for server in self.servers:
            with contextlib.suppress(OSError, ValueError):
                req = urllib.request.Request(f"{server.client_url}/v3/maintenance/status",
                                             data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as resp:
                    body = json.loads(resp.read())
                if body.get("leader") and body["leader"] == body["header"]["member_id"]:
                    return server
        return None

    def change_leader(self) -> str:
        leader = self._leader()
        if leader is None:
            return "no etcd leader found"
        leader.kill()
        leader.spawn()
        leader.wait_ready(60)
        return f"etcd leader {leader.name} killed and restarted"

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        else:
            for server in self.servers:
                server.close()


class ZooKeeper:
    name = "zookeeper"
    has_leader = False
    timing = FAST

    def __init__(self, nodes: int = 1) -> None:
        reason = zookeeper_unavailable()
        if reason:
            raise RuntimeError(reason)
        self.ensemble: ZooKeeperEnsemble | None = None
        if nodes == 1:
            server = ZooKeeperServer()
            server.start()
            self.servers = [server]
        else:
            self.name, self.has_leader = f"zookeeper{nodes}", True
            self.ensemble = ZooKeeperEnsemble(nodes)
            self.ensemble.start()
            self.servers = list(self.ensemble.members)
        self._quorum = _Members(self.servers)

    def addresses(self) -> list[tuple[str, int]]:
        return [h for s in self.servers for h in s.hosts]

    def section(self, endpoints: list[str]) -> dict[str, Any]:
        return {"zookeeper": {"hosts": endpoints}}

    def lose_quorum(self) -> str:
        return self._quorum.lose_quorum()

    def restore_quorum(self) -> None:
        self._quorum.restore_quorum()

    def change_leader(self) -> str:
        assert self.ensemble is not None
        index = self.ensemble.leader()
        if index is None:
            return "no ZooKeeper leader found"
        server = self.servers[index]
        server.kill()
        server.spawn()
        server.wait_ready(60)
        return f"ZooKeeper leader myid={server.myid} killed and restarted"

    def close(self) -> None:
        if self.ensemble is not None:
            self.ensemble.close()
        else:
            for server in self.servers:
                server.close()


class ConsulEmulatorProcess:
    """``python -m tests.support.consul_emulator`` in a process of its own, state kept for
    the whole campaign (it is never restarted, only frozen)."""

    name = "consul"
    has_leader = False
    # Consul sessions cannot be shorter than 10 s (the session TTL is ttl / 2)
    timing: ClassVar[dict[str, float]] = {"ttl": 20.0, "loop_wait": 2.0, "retry_timeout": 3.0}

    def __init__(self, log_dir: Path) -> None:
        self.port = free_consul_port()
        log = open(log_dir / "consul-emulator.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.consul_emulator", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        log.close()
        if not wait_tcp("127.0.0.1", self.port, 30):
            self.close()
            raise RuntimeError("the Consul emulator did not start")

    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    def section(self, endpoints: list[str]) -> dict[str, Any]:
        return {"consul": {"host": endpoints[0]}}

    def lose_quorum(self) -> str:
        self.proc.send_signal(signal.SIGSTOP)
        return "emulator frozen"

    def restore_quorum(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def change_leader(self) -> str:
        raise NotImplementedError("the Consul emulator has no leader")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_topology(name: str, log_dir: Path) -> DcsTopology:
    """Start the DCS ``name`` (one of :data:`TOPOLOGIES`)."""
    topo: DcsTopology
    if name == "etcd":
        topo = Etcd(1)
    elif name == "etcd3":
        topo = Etcd(3)
    elif name == "zookeeper":
        topo = ZooKeeper(1)
    elif name == "zookeeper3":
        topo = ZooKeeper(3)
    elif name == "consul":
        topo = ConsulEmulatorProcess(log_dir)
    else:
        raise ValueError(f"unknown DCS topology {name!r}: one of {', '.join(TOPOLOGIES)}")
    return topo
