"""A LocalCluster whose every network path runs through a :class:`~tests.support.chaos.links.Link`,
and the process faults a campaign injects into its members.

Paths, per member ``m``:

* ``m`` -> DCS: one link per DCS server, written into ``m``'s DCS section;
* peers -> ``m``'s PostgreSQL and REST API: one link each, published as ``m``'s
  ``connect_address`` (replication, pg_rewind and pg_basebackup from ``m``, and every peer's
  REST call to ``m`` go through them).

So "``m`` cut from the DCS" cuts ``m``'s DCS links; "``m`` cut from its peers" cuts the links
into ``m`` (nobody streams from it or reaches its API). ``m``'s own calls out to a peer's API
still pass (the links know no source): with a loopback proxy a one-sided cut is the closest
stand-in; those calls only matter in failsafe mode. Clients of the checkers connect to each
PostgreSQL directly over its unix socket: they stand outside every partition, like an
application server that can still reach the old primary -- the worst case for split brain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgha.cli.localcluster import LocalCluster, MemberProc
from tests.support.chaos.dcs import DcsTopology
from tests.support.chaos.links import Link, LinkHub
from tests.support.cluster import PG_BIN, SRC

ROOT = SRC.parent


@dataclass
class MemberLinks:
    dcs: list[Link]
    pg: Link
    api: Link

    @property
    def inbound(self) -> list[Link]:
        return [self.pg, self.api]


@dataclass
class ChaosCluster(LocalCluster):
    """``topology`` is the running DCS; ``hub`` owns the links. ``mutation`` (a name from
    :mod:`tests.support.chaos.mutant`) runs every agent with that deliberate defect."""

    topology: DcsTopology | None = None
    hub: LinkHub = field(default_factory=LinkHub)
    links: dict[str, MemberLinks] = field(default_factory=dict)
    frozen: dict[str, list[int]] = field(default_factory=dict)
    mutation: str | None = None
    restart_after: float = 5.0  # the supervisor's delay, as systemd's RestartSec
    restarts: int = 0
    supervisor_stop: threading.Event = field(default_factory=threading.Event)
    _starting: threading.Lock = field(default_factory=threading.Lock)

    def member_config(self, m: MemberProc) -> dict[str, Any]:
        assert self.topology is not None
        links = self.links.get(m.name)
        if links is None:
            links = self.links[m.name] = MemberLinks(
                [self.hub.link(f"{m.name}->dcs{i}", addr)
                 for i, addr in enumerate(self.topology.addresses())],
                self.hub.link(f"->{m.name}:pg", ("127.0.0.1", m.pg_port)),
                self.hub.link(f"->{m.name}:api", ("127.0.0.1", m.api_port)))
        cfg = super().member_config(m)
        for key in ("etcd3", "zookeeper", "consul"):
            cfg.pop(key, None)
        cfg.update(self.topology.section([link.endpoint for link in links.dcs]))
        cfg["restapi"]["connect_address"] = links.api.endpoint
        cfg["postgresql"]["connect_address"] = links.pg.endpoint
        return cfg

    def start(self, name: str) -> MemberProc:
        if self.mutation is not None:
            self.env = {**self.env, "PGHA_CHAOS_MUTATION": self.mutation}
        with self._starting:
            return super().start(name)

    def supervise(self) -> threading.Thread:
        """A daemon thread standing in for systemd's ``Restart=on-failure``: an agent that
        exited on its own (not one a fault killed: those have no process until the fault is
        healed) is started again ``restart_after`` seconds later; :attr:`restarts` counts."""
        def loop() -> None:
            exited: dict[str, float] = {}
            while not self.supervisor_stop.wait(0.5):
                now = time.monotonic()
                for name, m in self.procs.items():
                    if m.proc is None or m.proc.poll() is None:
                        exited.pop(name, None)
                        continue
                    since = exited.setdefault(name, now)
                    if now - since >= self.restart_after:
                        exited.pop(name)
                        with self._starting:
                            if m.proc is not None and m.proc.poll() is not None:
                                m.proc = None
                                self.restarts += 1
                                LocalCluster.start(self, name)

        thread = threading.Thread(target=loop, daemon=True, name="chaos-supervisor")
        thread.start()
        return thread

    # ------------------------------------------------------------------ network faults
    def cut_dcs(self, name: str) -> None:
        for link in self.links[name].dcs:
            link.cut()

    def cut_peers(self, name: str) -> None:
        for link in self.links[name].inbound:
            link.cut()

    def slow_dcs(self, name: str, seconds: float) -> None:
        for link in self.links[name].dcs:
            link.slow(seconds)

    def heal_links(self, name: str) -> None:
        links = self.links[name]
        for link in [*links.dcs, *links.inbound]:
            link.heal()

    # ------------------------------------------------------------------ process faults
    def postmaster_group(self, name: str) -> int | None:
        pid = self.procs[name].postmaster_pid()
        if pid is None:
            return None
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return group if group != os.getpgrp() else None

    def kill_node_hard(self, name: str) -> None:
        """Node death: the agent's process group and the postmaster's (every PostgreSQL
        process) SIGKILLed back to back."""
        m = self.procs[name]
        groups = [m.proc.pid] if m.proc is not None and m.proc.poll() is None else []
        group = self.postmaster_group(name)
        if group is not None:
            groups.append(group)
        for g in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
        self.frozen.pop(name, None)
        self.kill_node(name)

    def freeze_agent(self, name: str) -> None:
        m = self.procs[name]
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGSTOP)
            self.frozen.setdefault(name, []).append(-m.proc.pid)

    def freeze_postgres(self, name: str) -> None:
        """SIGSTOP to every PostgreSQL process of ``name`` (a hung I/O path, a paused VM's
        database while its agent goes on)."""
        group = self.postmaster_group(name)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGSTOP)
                self.frozen.setdefault(name, []).append(group)

    def thaw(self, name: str) -> None:
        """SIGCONT to whatever :meth:`freeze_agent` / :meth:`freeze_postgres` stopped."""
        for ident in self.frozen.pop(name, []):
            with contextlib.suppress(ProcessLookupError):
                if ident < 0:
                    os.kill(-ident, signal.SIGCONT)
                else:
                    os.killpg(ident, signal.SIGCONT)

    def stop_all(self) -> None:
        self.supervisor_stop.set()
        for name in list(self.frozen):
            self.thaw(name)
        for name in self.links:
            self.heal_links(name)
        time.sleep(0.1)
        super().stop_all()
        self.hub.close()


def chaos_cluster(base: Path, topology: DcsTopology, members: int = 3,
                  mutation: str | None = None, **dynamic: Any) -> ChaosCluster:
    """A ChaosCluster on free ports, agents running this checkout's code (and, with
    ``mutation``, the mutant wrapper) with ``topology``'s timing unless ``dynamic`` overrides
    it."""
    dyn = {**topology.timing, **dynamic}
    pythonpath = os.pathsep.join(p for p in (str(SRC), str(ROOT), os.environ.get("PYTHONPATH"))
                                 if p)
    return ChaosCluster(base, members=members, dynamic=dyn, first_pg_port=None,
                        first_api_port=None, etcd_port=None, dcs_section={},
                        env={"PYTHONPATH": pythonpath}, bin_dir=str(PG_BIN),
                        topology=topology, mutation=mutation,
                        agent_module="pgha.cli.main" if mutation is None
                        else "tests.support.chaos.mutant")
