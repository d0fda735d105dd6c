"""Bounded exhaustive exploration of a small simulated cluster (every schedule up to a depth).

The random simulation (:mod:`tests.sim.test_sim`) samples schedules by seed; this module
enumerates them. A *state* is a :class:`~tests.sim.scenario.Scenario` (a
:class:`~tests.sim.cluster.Sim`: the real ``decide``, executor and DCS store over fake
PostgreSQL and a fake clock) between two commands. An *event* is one command of the golden
script language (``tests/sim/golden/README.md``), drawn from a finite :class:`Menu`: time
passing (``run 2s``: every agent runs its cycles and keep-alives on its own schedule), one
member's loop waking out of turn (``cycle m1``), node death and return, the agent alone
killed (its PostgreSQL runs on), postmaster crash, a network partition of one node (from the
DCS and from its peers) and its heal, broken keep-alives, a replication stall, an operator
switchover, and commits on the primary (``write``, acknowledged by the standbys its commits
wait for). So a violation's event sequence, after the setup commands, is a script that can
be pasted into a golden file.

Search: breadth-first from the state the setup script leaves, so the first violation found
is reached by a shortest event sequence. Each state is kept as a pickle (a Sim is picklable
between events), and every successor is an unpickled copy with one more event applied:
cheaper than replaying the sequence from the start (measured: unpickling a state takes about
a third of the time of an average event). Successors are deduplicated by
:func:`~tests.sim.abstract.fingerprint`, an abstraction of the state: roles, PostgreSQL
states, timelines, WAL positions as their order (and whether they are past the lag limit)
rather than their bytes, DCS keys, lease and session deadlines as buckets of time relative to
now, fault switches. Two states with one fingerprint are explored once (the abstraction may
merge states whose futures differ in details: the exploration is exhaustive over the
abstract states).

Every state is checked with the Sim's own invariants (raised by its hooks while an event
runs, and :meth:`~tests.sim.cluster.Sim.check_invariants` after each event); an exception of
any other kind is reported as an error with its sequence too. Nothing here reads the wall
clock or draws randomness of its own: a run depends on its arguments alone (wall time is
measured for the report only).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pgha.core.model import PgRole
from tests.sim.abstract import fingerprint
from tests.sim.cluster import InvariantViolation, Sim
from tests.sim.scenario import SEPARATOR, Scenario

SETUP = """
sim n=3 ttl=10 loop_wait=2 seed=1 {opts}
start m0
run 5s
start m1 m2
run 25s
"""
"""A healthy three-member cluster: m0 leads, m1 and m2 stream from it."""

FAULTS = frozenset({"kill-node", "kill-agent", "crash-postmaster", "partition",
                    "break-keepalive", "stall", "switchover", "write"})
"""Event kinds counted against :attr:`Menu.max_faults`; time, cycles and repairs are not."""

KINDS = FAULTS | {"run", "cycle", "restart-node", "heal"}

INSTANT = frozenset({"kill-node", "kill-agent", "restart-node", "crash-postmaster",
                     "partition", "heal", "break-keepalive", "stall"})
"""Event kinds that act on one member at once (no time passes, no cycle runs)."""


@dataclass(frozen=True)
class Menu:
    """The events offered in each state. ``steps``: the durations of ``run``; ``kinds``: the
    event kinds offered (:data:`KINDS`); ``max_faults``: at most this many events of
    :data:`FAULTS` kinds on a path (None: unbounded). An event is offered only where it can
    apply (``heal`` only to a partitioned member, ``switchover`` only from the leader to a
    running replica when no request is pending, ...)."""

    steps: tuple[str, ...] = ("2s", "12s")  # loop_wait; past ttl (expiry and the race)
    kinds: frozenset[str] = KINDS
    max_faults: int | None = None
    write: str = "10kB"
    fault_for: str = "10m"  # duration of a stall or of broken keep-alives

    def events(self, sim: Sim, faults: int, after: int = 0,
               upto: int | None = None) -> list[str]:
        """The events enabled in ``sim`` for a path that used ``faults`` so far and whose
        last event was an instant one on the ``after``-th member (0 otherwise): see
        :func:`instant_member`. With ``upto`` only the instant events on the members
        ``after`` to ``upto - 1`` (the ones a previous visit of the state pruned)."""
        allowed = {k for k in self.kinds
                   if k not in FAULTS or self.max_faults is None or faults < self.max_faults}
        if upto is not None:
            allowed &= INSTANT
        now = sim.now()
        out = [f"run {s}" for s in self.steps] if "run" in allowed else []
        for index, (name, m) in enumerate(sim.members.items()):
            kv = m.kv
            broken = kv is not None and kv.keepalive_broken_until > now
            offered = {
                "cycle": m.agent_alive,
                "kill-node": m.agent_alive,
                "kill-agent": m.agent_alive and m.pg.running,
                "restart-node": not m.agent_alive,
                "crash-postmaster": m.pg.running,
                "partition": m.agent_alive and not m.partitioned,
                "heal": m.partitioned or broken,
                "break-keepalive": m.agent_alive and not broken,
                "stall": (m.pg.running and m.pg.role is PgRole.REPLICA
                          and m.pg.stalled_until <= now),
            }
            in_order = index >= after and (upto is None or index < upto)
            for kind, ok in offered.items():
                if ok and kind in allowed and (kind not in INSTANT or in_order):
                    out.append(_command(kind, name, self.fault_for))
        leader = sim.leader
        if "switchover" in allowed and leader is not None and sim._key("failover") is None:
            out.extend(f"switchover {leader} -> {name}" for name, m in sim.members.items()
                       if name != leader and m.pg.running and m.pg.role is PgRole.REPLICA)
        if "write" in allowed and sim.primary() is not None:
            out.append(f"write {self.write}")
        return out


def _command(kind: str, name: str, fault_for: str) -> str:
    return {"partition": f"partition {name} from all",
            "break-keepalive": f"break-keepalive {name} for {fault_for}",
            "stall": f"stall {name} for {fault_for}"}.get(kind, f"{kind} {name}")


def is_fault(event: str) -> bool:
    return event.split()[0] in FAULTS




def instant_member(sim: Sim, event: str) -> int:
    """Partial-order reduction: two instant events (no time passes, no cycle runs) on two
    different members commute, so of the two orders only the one by member index is
    explored. Returns the index of the member ``event`` acts on when it is such an event
    (the next event may then act on it or a later member only), else 0."""
    words = event.split()
    if words[0] not in INSTANT:
        return 0
    return list(sim.members).index(words[1])


# -- the search ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    """A broken invariant (``kind`` ``"invariant"``) or an unexpected exception
    (``"error"``), reached by ``events`` after the setup script."""

    kind: str
    events: tuple[str, ...]
    message: str

    def script(self, setup: str) -> str:
        """The setup and the events: a golden script (commands only) reproducing it."""
        lines = [line.strip() for line in setup.strip().splitlines() if line.strip()]
        return "\n".join([*lines, *self.events]) + "\n"


@dataclass
class Report:
    """What a run explored. ``per_depth[d]``: new distinct states first reached by ``d``
    events (``per_depth[0]`` is the start state); ``complete``: every state up to the depth
    was expanded (no ``max_states`` cut)."""

    depth: int
    expanded: int = 0
    transitions: int = 0
    per_depth: list[int] = field(default_factory=lambda: [1])
    seconds: float = 0.0
    complete: bool = True
    revisits: int = 0  # states reached again with less pruning (for the events pruned)
    violation: Violation | None = None

    @property
    def distinct(self) -> int:
        return sum(self.per_depth)

    @property
    def depth_reached(self) -> int:
        return len(self.per_depth) - 1

    def summary(self) -> dict[str, Any]:
        return {"depth": self.depth, "depth_reached": self.depth_reached,
                "distinct_states": self.distinct, "expanded": self.expanded,
                "transitions": self.transitions, "per_depth": self.per_depth,
                "revisits": self.revisits,
                "seconds": round(self.seconds, 2), "complete": self.complete,
                "states_per_second": round(self.distinct / self.seconds, 1)
                if self.seconds else None,
                "violation": None if self.violation is None else {
                    "kind": self.violation.kind, "events": list(self.violation.events),
                    "message": self.violation.message.splitlines()[0]}}


@dataclass
class _Node:
    blob: bytes
    path: int  # index into Explorer's path table
    faults: int
    after: int  # see Menu.events
    upto: int | None = None  # a revisit: only the events a previous visit pruned


@contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("pgha")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


class Explorer:
    """Breadth-first search over the events of ``menu`` from the state ``setup`` (golden
    script commands) leaves. ``overrides`` go to the Sim (a mutated ``decide_fn``, a broken
    ``fake``); they must be picklable (module-level functions and classes)."""

    def __init__(self, setup: str, menu: Menu | None = None, *, quantum: float = 0.5,
                 compress: bool = False, **overrides: Any) -> None:
        self.setup, self.menu, self.quantum = setup, menu or Menu(), quantum
        self.compress, self.overrides = compress, overrides
        self._paths: list[tuple[int, str]] = [(-1, "")]

    def start(self) -> Scenario:
        """The state the setup script leaves."""
        scenario = Scenario(**self.overrides)
        with _quiet():
            for line in self.setup.strip().splitlines():
                if line.strip() and not line.startswith("#"):
                    scenario.execute(line.strip())
        return scenario

    def _dump(self, scenario: Scenario) -> bytes:
        sim = scenario.sim
        assert sim is not None
        sim.decisions.clear()  # output of past commands, caches: not state
        sim.views.clear()
        del sim.log[:-30]
        sim.backend.compact()
        blob = pickle.dumps(scenario, protocol=pickle.HIGHEST_PROTOCOL)
        return zlib.compress(blob, 1) if self.compress else blob

    def _load(self, blob: bytes) -> Scenario:
        scenario: Scenario = pickle.loads(zlib.decompress(blob) if self.compress else blob)
        return scenario

    def _key(self, scenario: Scenario, faults: int) -> bytes:
        """The dedup key: the fingerprint, and the faults used (they restrict what follows)
        when the menu bounds them."""
        assert scenario.sim is not None
        fp = (fingerprint(scenario.sim, self.quantum),
              faults if self.menu.max_faults is not None else 0)
        return hashlib.blake2b(repr(fp).encode(), digest_size=16).digest()

    def _events(self, path: int) -> tuple[str, ...]:
        out: list[str] = []
        while path > 0:
            path, event = self._paths[path]
            out.append(event)
        return tuple(reversed(out))

    def run(self, depth: int, max_states: int | None = None,
            stop_at_first: bool = True) -> Report:
        """Explore every event sequence of up to ``depth`` events (at most ``max_states``
        distinct states). Stops at the first violation unless ``stop_at_first`` is False
        (then the report holds the first one found)."""
        started = time.perf_counter()
        report = Report(depth)
        with _quiet():
            root = self.start()
            seen = {self._key(root, 0): 0}
            level = [_Node(self._dump(root), 0, 0, 0)]
            for d in range(depth):
                known = len(seen)
                nxt = self._expand(level, seen, report, max_states, stop_at_first,
                                   last=d == depth - 1)
                if report.violation is not None and stop_at_first:
                    break
                report.per_depth.append(len(seen) - known)
                level = nxt
                if not level or not report.complete:
                    break
        report.seconds = time.perf_counter() - started
        return report

    def _expand(self, level: list[_Node], seen: dict[bytes, int], report: Report,
                max_states: int | None, stop_at_first: bool, last: bool) -> list[_Node]:
        """The next level: each new state once, or again when reached with fewer successors
        pruned by the partial-order reduction (``seen``: key -> the least ``after``). The
        states of the ``last`` level are counted, not kept (none will be expanded)."""
        nxt: list[_Node] = []
        for node in level:
            parent = self._load(node.blob)
            assert parent.sim is not None
            events = self.menu.events(parent.sim, node.faults, node.after, node.upto)
            report.expanded += 1
            for i, event in enumerate(events):
                child = parent if i == len(events) - 1 else self._load(node.blob)
                assert child.sim is not None
                report.transitions += 1
                faults = node.faults + is_fault(event)
                after = instant_member(child.sim, event)
                try:
                    child.execute(event)
                    child.sim.check_invariants()
                except InvariantViolation as e:
                    self._found(report, "invariant", node.path, event, e)
                except Exception as e:
                    self._found(report, "error", node.path, event, e)
                else:
                    key = self._key(child, faults)
                    pruned = seen.get(key)
                    if pruned is not None and pruned <= after:
                        continue
                    report.revisits += pruned is not None
                    seen[key] = after
                    if not last:
                        self._paths.append((node.path, event))
                        nxt.append(_Node(self._dump(child), len(self._paths) - 1, faults,
                                         after, pruned))
                    if max_states is not None and len(seen) >= max_states:
                        report.complete = False
                        return nxt
                    continue
                if stop_at_first:
                    return nxt
        return nxt

    def _found(self, report: Report, kind: str, path: int, event: str,
               error: BaseException) -> None:
        if report.violation is None:
            message = f"{type(error).__name__}: {error}" if kind == "error" else str(error)
            report.violation = Violation(kind, (*self._events(path), event), message)


def transcript(setup: str, events: tuple[str, ...], **overrides: Any) -> str:
    """Replay ``setup`` and ``events`` from scratch and render them as a golden file (each
    command with the decisions it produced); the command that breaks an invariant is followed
    by the violation's first line. Shows that a sequence reproduces without the explorer."""
    scenario = Scenario(**overrides)
    out: list[str] = []
    commands = [line.strip() for line in setup.strip().splitlines() if line.strip()]
    with _quiet():
        for command in [*commands, *events]:
            out.extend([command, SEPARATOR])
            mark = len(scenario.sim.decisions) if scenario.sim is not None else 0
            try:
                out.extend(scenario.execute(command))
                if scenario.sim is not None:
                    scenario.sim.check_invariants()
            except AssertionError as e:
                assert scenario.sim is not None
                out.extend(scenario.decision_lines(mark))
                out.append(f"!! {str(e).splitlines()[0]}")
                break
            out.append("")
    return "\n".join(out) + "\n"

