"""The fault catalogue and the seeded scheduler of a campaign.

A :class:`FaultKind` injects one fault into a running :class:`ChaosCluster` and returns the
function that heals it. Holds are drawn in multiples of the cluster's ``ttl`` so that a
Consul cluster (ttl 20) sees the same phases as an etcd one (ttl 5): shorter than the lease
(the leader must ride it out), and longer (someone else must take over).

The :class:`Scheduler` draws from a ``random.Random(seed)`` only: the same seed gives the same
plan of faults, targets, holds and overlaps (what the cluster does in between may differ with
the machine's timing -- the plan does not).
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.chaos.cluster import ChaosCluster
from tests.support.chaos.dcs import DcsTopology

Heal = Callable[[], None]


def _noop() -> None:
    return None


def rest(method: str, url: str, body: dict[str, Any] | None = None,
         timeout: float = 10.0) -> tuple[int, str]:
    """One REST call to an agent; (status, text), (0, error) when it did not answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


@dataclass
class Target:
    cluster: ChaosCluster
    topology: DcsTopology
    member: str | None  # None for DCS faults
    replicas: list[str]  # the other members
    rng: random.Random
    ttl: float
    note: str = ""


def node_death(t: Target) -> Heal:
    assert t.member is not None
    name = t.member
    t.cluster.kill_node_hard(name)
    return lambda: t.cluster.start(name) and None


def postmaster_crash(t: Target) -> Heal:
    assert t.member is not None
    t.cluster.kill_postmaster(t.member)
    return _noop


def agent_kill(t: Target) -> Heal:
    assert t.member is not None
    name = t.member
    t.cluster.kill_agent(name)
    return lambda: t.cluster.start(name) and None


def _member_fault(act: Callable[[ChaosCluster, str], None],
                  heal: Callable[[ChaosCluster, str], None]) -> Callable[[Target], Heal]:
    """A fault that does ``act`` to the target member and is healed by ``heal``."""
    def inject(t: Target) -> Heal:
        assert t.member is not None
        name = t.member
        act(t.cluster, name)
        return lambda: heal(t.cluster, name)

    return inject


def _isolate(cluster: ChaosCluster, name: str) -> None:
    cluster.cut_dcs(name)
    cluster.cut_peers(name)


agent_freeze = _member_fault(ChaosCluster.freeze_agent, ChaosCluster.thaw)
postgres_freeze = _member_fault(ChaosCluster.freeze_postgres, ChaosCluster.thaw)
dcs_cut = _member_fault(ChaosCluster.cut_dcs, ChaosCluster.heal_links)
peers_cut = _member_fault(ChaosCluster.cut_peers, ChaosCluster.heal_links)
isolated = _member_fault(_isolate, ChaosCluster.heal_links)


def dcs_slow(t: Target) -> Heal:
    assert t.member is not None
    name = t.member
    delay = round(t.rng.uniform(0.05, 0.4) * t.ttl / 5, 3)
    t.note = f"delay {delay}s per chunk"
    t.cluster.slow_dcs(name, delay)
    return lambda: t.cluster.heal_links(name)


def dcs_flap(t: Target) -> Heal:
    """The member's DCS links cut and healed alternately (a flapping link) until healed."""
    assert t.member is not None
    name = t.member
    period = round(t.rng.uniform(0.1, 0.4) * t.ttl, 2)
    t.note = f"flapping every {period}s"
    stop = threading.Event()

    def flap() -> None:
        cut = False
        while not stop.wait(period):
            cut = not cut
            if cut:
                t.cluster.cut_dcs(name)
            else:
                t.cluster.heal_links(name)

    thread = threading.Thread(target=flap, daemon=True, name=f"flap-{name}")
    thread.start()

    def heal() -> None:
        stop.set()
        thread.join(5)
        t.cluster.heal_links(name)

    return heal


def dcs_quorum_loss(t: Target) -> Heal:
    t.note = t.topology.lose_quorum()
    return t.topology.restore_quorum


def dcs_leader_change(t: Target) -> Heal:
    t.note = t.topology.change_leader()
    return _noop


def switchover(t: Target) -> Heal:
    assert t.member is not None
    candidate = t.rng.choice(t.replicas) if t.replicas else None
    body: dict[str, Any] = {"leader": t.member}
    if candidate is not None:
        body["candidate"] = candidate
    code, text = rest("POST", f"{t.cluster.procs[t.member].api}/switchover", body, timeout=60)
    t.note = f"-> {candidate}: {code} {text.strip()[:120]}"
    return _noop


def restart(t: Target) -> Heal:
    assert t.member is not None
    code, text = rest("POST", f"{t.cluster.procs[t.member].api}/restart", {}, timeout=90)
    t.note = f"{code} {text.strip()[:120]}"
    return _noop


@dataclass(frozen=True)
class FaultKind:
    """``aim``: ``leader`` (the member that accepts writes), ``replica``, ``member`` (either,
    leader twice as likely), ``dcs``. ``hold``: (min, max) in multiples of ttl."""

    name: str
    inject: Callable[[Target], Heal]
    aim: str
    hold: tuple[float, float]
    weight: int = 1
    needs_dcs_leader: bool = False


KINDS: tuple[FaultKind, ...] = (
    FaultKind("node_death", node_death, "member", (0.5, 3.0), 3),
    FaultKind("postmaster_crash", postmaster_crash, "member", (0.2, 1.0), 2),
    FaultKind("agent_kill", agent_kill, "member", (0.5, 2.5), 2),
    FaultKind("agent_freeze", agent_freeze, "leader", (1.2, 2.5), 2),
    FaultKind("postgres_freeze", postgres_freeze, "member", (0.5, 2.0), 1),
    FaultKind("dcs_cut", dcs_cut, "leader", (0.3, 3.0), 3),
    FaultKind("peers_cut", peers_cut, "leader", (0.5, 2.0), 1),
    FaultKind("isolated", isolated, "leader", (0.5, 3.0), 2),
    FaultKind("dcs_slow", dcs_slow, "member", (1.0, 3.0), 1),
    FaultKind("dcs_flap", dcs_flap, "leader", (1.0, 3.0), 1),
    FaultKind("dcs_quorum_loss", dcs_quorum_loss, "dcs", (0.5, 2.5), 2),
    FaultKind("dcs_leader_change", dcs_leader_change, "dcs", (0.0, 0.5), 1, True),
    FaultKind("switchover", switchover, "leader", (0.0, 0.0), 2),
    FaultKind("restart", restart, "member", (0.0, 0.0), 1),
)
BY_NAME = {k.name: k for k in KINDS}


@dataclass
class PlannedFault:
    kind: FaultKind
    aim: str  # the resolved aim: leader | replica | dcs
    hold: float  # seconds
    second: PlannedFault | None = None  # overlapping fault, starting ``offset`` s in
    offset: float = 0.0


@dataclass
class Scheduler:
    """Draws the next fault (and sometimes an overlapping second one) from ``seed``."""

    seed: int
    ttl: float
    has_dcs_leader: bool
    kinds: tuple[str, ...] = ()  # restrict to these names (empty: all)
    overlap: float = 0.2  # probability of a second, overlapping fault
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        pool = [k for k in KINDS if (not self.kinds or k.name in self.kinds)
                and (self.has_dcs_leader or not k.needs_dcs_leader)]
        if not pool:
            raise ValueError(f"no fault kind left of {self.kinds}")
        self.pool = pool

    def _one(self, exclude_dcs: bool = False) -> PlannedFault:
        pool = [k for k in self.pool if not (exclude_dcs and k.aim == "dcs")] or self.pool
        kind = self.rng.choices(pool, weights=[k.weight for k in pool])[0]
        aim = kind.aim
        if aim == "member":
            aim = "leader" if self.rng.random() < 2 / 3 else "replica"
        hold = round(self.rng.uniform(*kind.hold) * self.ttl, 2)
        return PlannedFault(kind, aim, hold)

    def next(self) -> PlannedFault:
        first = self._one()
        if first.hold > 0 and self.rng.random() < self.overlap:
            second = self._one(exclude_dcs=first.aim == "dcs")
            if second.hold > 0:
                first.second = second
                first.offset = round(self.rng.uniform(0, first.hold), 2)
                if second.aim == first.aim and first.aim != "dcs":
                    second.aim = "replica" if first.aim == "leader" else "leader"
        return first


def resolve(aim: str, leader: str | None, names: list[str], rng: random.Random,
            busy: set[str]) -> str | None:
    """The member an ``aim`` points at now (None for DCS faults or when nobody fits)."""
    if aim == "dcs":
        return None
    free = [n for n in names if n not in busy]
    if aim == "leader" and leader in free:
        return leader
    replicas = [n for n in free if n != leader]
    if replicas:
        return rng.choice(replicas)
    return rng.choice(free) if free else None


