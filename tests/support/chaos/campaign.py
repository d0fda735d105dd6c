"""The campaign runner: a cluster on one DCS topology, a steady write load, a split-brain probe,
and a seeded series of faults, each healed and followed by a convergence check.

One fault cycle (:meth:`Campaign.cycle`):

1. the member that accepts writes is found by trying (never by asking pgha), the cluster's state
   recorded (each member: writable, timeline, position);
2. the fault is injected on its target (and, sometimes, an overlapping second one), held, healed;
3. the cluster must converge within ``settle_limit``: one writable member, every other one
   streaming on its timeline, replayed up to its position, with the same rows (writers paused
   for the comparison). A cluster that does not is recorded as needing an operator, repaired
   (agents started, ``POST /reinitialize`` to the members that do not stream) and the run goes
   on;
4. every write acknowledged so far is looked up on the primary; the ones missing are lost
   (attributed to this fault), and split-brain instants and overlapping commits since the
   fault started are counted.

``synchronous_mode`` can change between phases (``modes``): the writers are paused while the
new mode takes effect on the primary, so every write belongs to exactly one mode.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.chaos.checkers import (
    SplitBrainProbe,
    cluster_states,
    converged,
    fetch,
    find_primary,
    lost_writes,
    overlapping_commits,
)
from tests.support.chaos.cluster import ChaosCluster, chaos_cluster
from tests.support.chaos.dcs import DcsTopology, start_topology
from tests.support.chaos.discards import DiscardWatch, brief
from tests.support.chaos.faults import PlannedFault, Scheduler, Target, resolve, rest
from tests.support.writer import Write, Writer

# synchronous_standby_names on the primary once a mode has taken effect
MODE_CHECK = {"off": lambda ssn: ssn == "",
              "on": lambda ssn: ssn != "" and not ssn.upper().startswith("ANY"),
              "quorum": lambda ssn: ssn.upper().startswith("ANY")}


@dataclass
class CampaignConfig:
    base_dir: Path
    backend: str = "etcd"
    members: int = 3
    faults: int = 10  # per mode
    seed: int = 1
    modes: tuple[str, ...] = ("off",)
    kinds: tuple[str, ...] = ()
    overlap: float = 0.2
    writers: int = 3
    write_interval: float = 0.05
    probe_interval: float = 0.02
    mutation: str | None = None
    settle_limit: float | None = None  # default: max(90, 15 * ttl)
    maximum_lag_on_failover: int = 1048576
    stop_on_split_brain: bool = False
    progress_json: Path | None = None  # the report rewritten after every fault


@dataclass
class FaultRecord:
    index: int
    mode: str
    kind: str
    target: str | None
    hold: float
    note: str = ""
    second: dict[str, Any] | None = None
    started: float = 0.0  # seconds since the campaign started
    healed: float = 0.0
    settled: float | None = None
    leader_before: str | None = None
    leader_after: str | None = None
    before: list[dict[str, Any]] = field(default_factory=list)
    after: list[dict[str, Any]] = field(default_factory=list)
    write_gap: float | None = None  # longest time without an acknowledged write
    lost: list[int] = field(default_factory=list)  # seq of acknowledged writes lost
    lost_xids: list[int] = field(default_factory=list)
    unexplained_lost: list[int] = field(default_factory=list)  # no discard report names them
    discarded: list[dict[str, Any]] = field(default_factory=list)  # pgha's reports (brief)
    agent_restarts: int = 0  # agents that exited on their own, restarted by the supervisor
    split_brain: list[tuple[float, float, list[str]]] = field(default_factory=list)
    overlapping_commits: int = 0
    needs_operator: str | None = None
    error: str | None = None


class Campaign:
    """Run with :meth:`run`; results in :attr:`records` and :meth:`summary`."""

    def __init__(self, cfg: CampaignConfig) -> None:
        self.cfg = cfg
        self.records: list[FaultRecord] = []
        self.t0 = time.monotonic()
        self.topology: DcsTopology | None = None
        self.cluster: ChaosCluster | None = None
        self.writers: list[Writer] = []
        self.probe: SplitBrainProbe | None = None
        self.phases: list[tuple[float, str]] = []  # (monotonic start, mode)
        self.lost_seen: set[int] = set()
        self.discards: DiscardWatch | None = None
        self.final: dict[str, Any] = {}
        self.log_lines: list[str] = []
        self.extra: dict[str, Any] = {}  # merged into the report (machine, command, ...)

    # ------------------------------------------------------------------ plumbing
    def rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:8.2f}] {text}"
        self.log_lines.append(line)
        print(line, flush=True)

    @property
    def ttl(self) -> float:
        assert self.topology is not None
        return self.topology.timing["ttl"]

    def members(self) -> list[Any]:
        assert self.cluster is not None
        return list(self.cluster.procs.values())

    def writes(self) -> list[Write]:
        return [w for writer in self.writers for w in list(writer.writes)]

    def pause_writers(self, paused: bool) -> None:
        for writer in self.writers:
            if paused:
                writer.pause.set()
            else:
                writer.pause.clear()
        if paused:
            time.sleep(max(w.timeout for w in self.writers) + 0.1)

    def mode_of(self, t: float) -> str:
        mode = self.cfg.modes[0]
        for start, m in self.phases:
            if start <= t:
                mode = m
        return mode

    # ------------------------------------------------------------------ run
    def run(self) -> Campaign:
        cfg = self.cfg
        cfg.base_dir.mkdir(parents=True, exist_ok=True)
        self.topology = start_topology(cfg.backend, cfg.base_dir)
        try:
            self.cluster = chaos_cluster(
                cfg.base_dir / "cluster", self.topology, members=cfg.members,
                mutation=cfg.mutation, maximum_lag_on_failover=cfg.maximum_lag_on_failover,
                synchronous_mode=cfg.modes[0])
            with self.cluster:
                self._run_cluster()
        finally:
            self.topology.close()
        return self

    def _run_cluster(self) -> None:
        cfg, cluster = self.cfg, self.cluster
        assert cluster is not None and self.topology is not None
        cluster.start_all(stagger=0.3)
        self.log(f"cluster of {cfg.members} on {self.topology.name}, ttl {self.ttl}")
        if not self.settle(limit=240):
            raise RuntimeError("the cluster did not come up")
        primary = find_primary(self.members())
        assert primary is not None
        fetch(primary, "CREATE TABLE bench (seq bigint PRIMARY KEY)")
        self.writers = [Writer(self.members(), interval=cfg.write_interval, seq_start=i,
                               seq_step=cfg.writers) for i in range(cfg.writers)]
        self.probe = SplitBrainProbe(self.members(), interval=cfg.probe_interval)
        self.discards = DiscardWatch(self.members())
        threads = [w.run_in_thread() for w in self.writers] + [self.probe.run_in_thread(),
                                                               cluster.supervise()]
        scheduler = Scheduler(cfg.seed, self.ttl, self.topology.has_leader, cfg.kinds,
                              cfg.overlap)
        try:
            index = 0
            for mode in cfg.modes:
                self.set_mode(mode)
                for _ in range(cfg.faults):
                    index += 1
                    record = self.cycle(index, mode, scheduler.next(), scheduler)
                    self.records.append(record)
                    if cfg.progress_json is not None:
                        self.write_json(cfg.progress_json)
                    if cfg.stop_on_split_brain and record.split_brain:
                        return
        finally:
            for writer in self.writers:
                writer.stop.set()
            self.probe.stop.set()
            cluster.supervisor_stop.set()
            for t in threads:
                t.join(15)
            self.finish()

    def set_mode(self, mode: str) -> None:
        """``synchronous_mode`` = ``mode`` in effect on the primary, writers paused meanwhile."""
        self.pause_writers(True)
        try:
            self.settle()
            primary = find_primary(self.members())
            if primary is None:
                raise RuntimeError("no primary to change the mode on")
            code, text = rest("PATCH", f"{primary.api}/config", {"synchronous_mode": mode})
            if code != 200:
                raise RuntimeError(f"PATCH /config synchronous_mode={mode}: {code} {text}")
            check = MODE_CHECK[mode]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    ssn = fetch(primary, "SHOW synchronous_standby_names")[0][0]
                    if check(ssn):
                        break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"synchronous_mode {mode} did not take effect")
            self.phases.append((time.monotonic(), mode))
            self.log(f"synchronous_mode {mode}")
        finally:
            self.pause_writers(False)

    # ------------------------------------------------------------------ one fault
    def cycle(self, index: int, mode: str, plan: PlannedFault, scheduler: Scheduler
              ) -> FaultRecord:
        cluster, topology = self.cluster, self.topology
        assert cluster is not None and topology is not None
        names = list(cluster.procs)
        leader = find_primary(self.members())
        record = FaultRecord(index, mode, plan.kind.name, None, plan.hold,
                             leader_before=leader.name if leader else None,
                             before=[s.as_dict() for s in cluster_states(self.members())])
        busy: set[str] = set()
        heals = []
        restarts = cluster.restarts
        started = time.monotonic()
        record.started = self.rel(started)
        try:
            record.target = resolve(plan.aim, record.leader_before, names, scheduler.rng, busy)
            busy.add(record.target or "")
            target = Target(cluster, topology, record.target,
                            [n for n in names if n != record.target], scheduler.rng, self.ttl)
            self.log(f"#{index} {mode} {plan.kind.name} on {record.target or 'dcs'} "
                     f"for {plan.hold}s")
            heals.append(plan.kind.inject(target))
            record.note = target.note
            if record.note:
                self.log(f"#{index}   {record.note}")
            if plan.second is not None:
                time.sleep(plan.offset)
                second = plan.second
                who = resolve(second.aim, record.leader_before, names, scheduler.rng, busy)
                t2 = Target(cluster, topology, who, [n for n in names if n != who],
                            scheduler.rng, self.ttl)
                self.log(f"#{index}  + {second.kind.name} on {who or 'dcs'} "
                         f"for {second.hold}s")
                heals.append(second.kind.inject(t2))
                record.second = {"kind": second.kind.name, "target": who, "hold": second.hold,
                                 "offset": plan.offset, "note": t2.note}
                time.sleep(max(second.hold, plan.hold - plan.offset))
            else:
                time.sleep(plan.hold)
        except Exception as exc:  # a fault that could not be injected is recorded, not fatal
            record.error = f"{type(exc).__name__}: {exc}"
            self.log(f"#{index} injection failed: {record.error}")
        finally:
            for heal in reversed(heals):
                try:
                    heal()
                except Exception as exc:
                    record.error = f"heal: {type(exc).__name__}: {exc}"
            record.healed = self.rel(time.monotonic())
        settled = self.settle()
        if not settled:
            record.needs_operator = self.last_settle_problem
            self.log(f"#{index} NEEDS AN OPERATOR: {record.needs_operator}")
            self.repair()
            settled = self.settle()
        now = time.monotonic()
        record.settled = self.rel(now) if settled else None
        record.agent_restarts = cluster.restarts - restarts
        self.judge(record, started, now)
        return record

    last_settle_problem = ""

    def settle(self, limit: float | None = None) -> bool:
        """Wait until the cluster has converged (see the module docstring)."""
        if limit is None:
            limit = self.cfg.settle_limit or max(90.0, 15 * self.ttl)
        deadline = time.monotonic() + limit
        problem = ""
        while time.monotonic() < deadline:
            ok, problem = self._cheap_check()
            if ok:
                paused = any(w.pause.is_set() for w in self.writers)
                if self.writers and not paused:
                    self.pause_writers(True)
                try:
                    for _ in range(20):
                        ok, problem = converged(self.members())
                        if ok:
                            return True
                        time.sleep(0.25)
                finally:
                    if self.writers and not paused:
                        self.pause_writers(False)
            time.sleep(0.5)
        self.last_settle_problem = problem
        return False

    def _cheap_check(self) -> tuple[bool, str]:
        states = cluster_states(self.members())
        primaries = [s for s in states if s.writable]
        if len(primaries) != 1:
            return False, f"{len(primaries)} writable members"
        tl = primaries[0].timeline
        for s in states:
            if s is not primaries[0] and (not s.streaming or s.timeline != tl):
                return False, f"{s.name} not streaming on timeline {tl}: {s.as_dict()}"
        # the next fault starts from a cluster pgha has settled too: the writable member holds
        # the leader key and every agent answers
        assert self.cluster is not None
        primary = self.cluster.procs[primaries[0].name]
        code, text = rest("GET", f"{primary.api}/cluster", timeout=2)
        try:
            listed = json.loads(text).get("members", []) if code == 200 else []
        except ValueError:
            listed = []
        leaders = [m.get("name") for m in listed if m.get("role") == "leader"]
        if leaders != [primary.name]:
            return False, f"leader key {leaders}, writable member {primary.name}"
        for m in self.members():
            if rest("GET", f"{m.api}/liveness", timeout=2)[0] != 200:
                return False, f"agent {m.name} does not answer"
        return True, ""

    def repair(self) -> None:
        """What an operator would do: start dead agents, thaw, heal links, reinitialize the
        members that do not stream."""
        cluster = self.cluster
        assert cluster is not None
        for name, m in cluster.procs.items():
            cluster.thaw(name)
            cluster.heal_links(name)
            if not m.alive:
                cluster.start(name)
        time.sleep(2 * self.ttl)
        states = cluster_states(self.members())
        if sum(1 for s in states if s.writable) == 1:
            for s in states:
                if not s.writable and not s.streaming:
                    code, text = rest("POST", f"{cluster.procs[s.name].api}/reinitialize",
                                      {"force": True}, timeout=30)
                    self.log(f"repair: reinitialize {s.name}: {code} {text.strip()[:100]}")

    def judge(self, record: FaultRecord, started: float, now: float) -> None:
        assert self.probe is not None
        leader = find_primary(self.members())
        record.leader_after = leader.name if leader else None
        record.after = [s.as_dict() for s in cluster_states(self.members())]
        record.write_gap = longest_gap(self.writes(), started, now)
        record.split_brain = [(self.rel(a), self.rel(b), ms)
                              for a, b, ms in self.probe.overlaps(since=started)]
        record.overlapping_commits = len(overlapping_commits(self.writes(), since=started))
        if leader is not None:
            with contextlib.suppress(Exception):
                lost = [w for w in lost_writes(leader, self.writes(), until=now)
                        if w.seq not in self.lost_seen]
                self.lost_seen |= {w.seq for w in lost}
                record.lost = sorted(w.seq for w in lost)
                record.lost_xids = sorted(w.xid for w in lost if w.xid is not None)
        if self.discards is not None:
            record.discarded = [brief(r) for r in self.discards.new_reports()]
            lost_writes_ = [w for w in self.writes() if w.seq in set(record.lost)]
            record.unexplained_lost = sorted(
                w.seq for w in self.discards.unexplained(lost_writes_))
        change = (f" leader {record.leader_before}->{record.leader_after}"
                  if record.leader_before != record.leader_after else "")
        extra = [f"UNEXPLAINED {len(record.unexplained_lost)}"] if record.unexplained_lost else []
        extra += [f"discarded {d['member']} {d['bytes']} B {d['committed']} commits"
                  for d in record.discarded]
        extra += [f"ERROR {record.error}"] if record.error else []
        extra += [f"agent restarts {record.agent_restarts}"] if record.agent_restarts else []
        self.log(f"#{record.index} settled {record.settled}s{change}"
                 f" gap {record.write_gap}s lost {len(record.lost)}"
                 f" split-brain {len(record.split_brain)} " + " ".join(extra))

    def finish(self) -> None:
        writes = self.writes()
        self.final = {"acked": sum(1 for w in writes if w.acked is not None),
                      "attempted": len(writes),
                      "probe_samples": self.probe.samples if self.probe else 0}

    # ------------------------------------------------------------------ report
    def summary(self) -> dict[str, Any]:
        """Per mode: faults by kind, split-brain instants, overlapping commits, acknowledged
        and lost writes, write gaps by kind (median, p95, max), failovers, members needing an
        operator."""
        out: dict[str, Any] = {}
        writes = self.writes()
        for mode in self.cfg.modes:
            recs = [r for r in self.records if r.mode == mode]
            by_kind: dict[str, list[FaultRecord]] = {}
            for r in recs:
                by_kind.setdefault(r.kind, []).append(r)
                if r.second:
                    by_kind.setdefault(f"+{r.second['kind']}", [])
            out[mode] = {
                "faults": len(recs) + sum(1 for r in recs if r.second),
                "by_kind": {k: len(v) for k, v in sorted(by_kind.items()) if v},
                "overlapping_pairs": sum(1 for r in recs if r.second),
                "split_brain_instants": sum(len(r.split_brain) for r in recs),
                "overlapping_commits": sum(r.overlapping_commits for r in recs),
                "acked": sum(1 for w in writes if w.acked is not None
                             and self.mode_of(w.started) == mode),
                "lost": sum(len(r.lost) for r in recs),
                "lost_unexplained": sum(len(r.unexplained_lost) for r in recs),
                "rejoins_reported": sum(len(r.discarded) for r in recs),
                "discarded_bytes": stats([float(d["bytes"]) for r in recs for d in r.discarded
                                          if isinstance(d.get("bytes"), int)]),
                "discarded_over_lag_limit": sum(
                    1 for r in recs for d in r.discarded if isinstance(d.get("bytes"), int)
                    and d["bytes"] > self.cfg.maximum_lag_on_failover),
                "agent_restarts": sum(r.agent_restarts for r in recs),
                "failovers": sum(1 for r in recs if r.leader_before != r.leader_after),
                "needs_operator": sum(1 for r in recs if r.needs_operator),
                "errors": sum(1 for r in recs if r.error),
                "write_gap_s": {k: stats([r.write_gap for r in v if r.write_gap is not None])
                                for k, v in sorted(by_kind.items()) if v},
            }
        return out

    def report(self) -> dict[str, Any]:
        return {"config": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in asdict(self.cfg).items()},
                "ttl": self.ttl if self.topology else None,
                "summary": self.summary(), "final": self.final,
                "faults": [asdict(r) for r in self.records], **self.extra}

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report(), indent=1, default=str))


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median": round(statistics.median(ordered), 2),
            "p95": round(p95, 2), "max": round(ordered[-1], 2)}


def longest_gap(writes: list[Write], start: float, end: float) -> float | None:
    """The longest time between consecutive acknowledged writes (of all writers) from the last
    one before ``start`` up to ``end``; None when none was acknowledged in that window."""
    acked = sorted(w.acked for w in writes if w.acked is not None)
    before = [a for a in acked if a < start]
    inside = [a for a in acked if start <= a <= end]
    if not inside:
        return None
    points = before[-1:] + inside
    return round(max((b - a for a, b in itertools.pairwise(points)), default=0.0), 3)
