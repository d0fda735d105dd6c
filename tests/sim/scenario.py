"""Scripted simulation runs: the interpreter of the golden files in ``tests/sim/golden/``.

A script is a list of commands (format in ``tests/sim/golden/README.md``); each produces output
lines: the decisions the members made while it ran (a member's decision is shown when its
reason or actions differ from the last one shown for it) or, for ``state``, a snapshot of the
cluster. :func:`run_script` replays a file and returns it with the outputs filled in, so a test
can compare it with the file or (update mode) write it back.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from pgha.core.actions import Action, CopyLogicalSlots, StopMode, SyncSlots, Upstream
from pgha.core.decision import Decision
from tests.sim.cluster import Sim
from tests.support.fake_pg import wal_end

SEPARATOR = "----"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_SIZE = re.compile(r"^(\d+)(B|kB|MB)?$")


def duration(text: str) -> float:
    """``30s``, ``1.5s``, ``200ms``, ``2m`` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def size(text: str) -> int:
    """``1000``, ``64kB``, ``1MB`` -> bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * {None: 1, "B": 1, "kB": 1000, "MB": 1_000_000}[match.group(2)]


_SHOWN_NUMBERS = frozenset({"quorum"})  # int fields shown as name=value (not positions)


def render_action(action: Action) -> str:
    """``Rejoin(m1, use_pg_rewind)``: member names, modes and true flags; strings (quoted
    when empty or with spaces), name tuples (``m1 m2``, ``-`` when empty) and the sync key's
    ``quorum=N``; positions, slot sets and failsafe maps are left out (they vary without
    changing the decision). Slot work names its slots: ``SyncSlots(+a b, -c, >d)`` creates,
    drops, advances."""
    if isinstance(action, SyncSlots):
        parts = [sign + " ".join(names) for sign, names in (
            ("+", [s.name for s in action.create]), ("-", list(action.drop)),
            (">", [n for n, _ in action.advance])) if names]
        return f"SyncSlots({', '.join(parts)})"
    if isinstance(action, CopyLogicalSlots):
        names = " ".join(s.name for s in action.slots)
        return f"CopyLogicalSlots({action.source.name}, {names})"
    args: list[str] = []
    for f in fields(action):
        value = getattr(action, f.name)
        if isinstance(value, Upstream):
            args.append(value.name)
        elif isinstance(value, StopMode):
            args.append(value.value)
        elif value is True:
            args.append(f.name)
        elif isinstance(value, str):
            args.append(repr(value) if not value or " " in value else value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            args.append(" ".join(value) or "-")
        elif f.name in _SHOWN_NUMBERS and isinstance(value, int):
            args.append(f"{f.name}={value}")
    name = type(action).__name__
    return f"{name}({', '.join(args)})" if args else name


def render_decision(decision: Decision) -> str:
    actions = ", ".join(render_action(a) for a in decision.actions)
    return f"{decision.reason.value}: {actions}" if actions else decision.reason.value


class Scenario:
    """Runs commands against one Sim (built by the ``sim`` command or with defaults)."""

    def __init__(self, **overrides: Any) -> None:
        """``overrides`` are passed to :class:`Sim` (e.g. a mutated ``decide_fn``)."""
        self.sim: Sim | None = None
        self.shown: dict[str, str] = {}
        self.overrides = overrides

    def sim_or_default(self) -> Sim:
        if self.sim is None:
            self.configure([])
        assert self.sim is not None
        return self.sim

    def configure(self, args: list[str]) -> None:
        """``sim n=3 ttl=10 loop_wait=2 max_lag=1MB seed=1 write_rate=20kB sync=on
        strict=true node_count=2 cdc=on watchdog=lease`` (``cdc``: a permanent logical slot
        and its consumer, :mod:`tests.sim.consumer`; ``watchdog``: a device per node held by
        the agent, :mod:`tests.sim.watchdog_device`, off by default in scripts)."""
        opts = dict(a.split("=", 1) for a in args)
        sync = opts.get("sync")
        if sync not in (None, "on", "quorum"):
            raise ValueError(f"sync: 'on' or 'quorum', not {sync!r}")
        self.sim = Sim(int(opts.get("seed", "1")), n=int(opts.get("n", "3")),
                       ttl=float(opts.get("ttl", "10")),
                       loop_wait=float(opts.get("loop_wait", "2")),
                       max_lag=size(opts.get("max_lag", "1MB")), faults=False, autostart=False,
                       write_rate=size(opts.get("write_rate", "20kB")), lags=(0,),
                       peer_loss=0.0, sync_mode=sync,
                       strict=opts.get("strict", "false") == "true",
                       node_count=int(opts.get("node_count", "1")),
                       cdc=opts.get("cdc", "off") == "on",
                       **({"watchdog": opts.get("watchdog", "off")} | self.overrides))

    def execute(self, command: str) -> list[str]:
        """Run one command line; returns its output lines."""
        words = command.split()
        verb, args = words[0], words[1:]
        if verb == "sim":
            if self.sim is not None:
                raise ValueError("'sim' must come first")
            self.configure(args)
            return ["ok"]
        sim = self.sim_or_default()
        mark = len(sim.decisions)
        if verb == "start":
            for name in args:
                sim.start_agent(name, delay=sim.rng.uniform(0, 0.5))
        elif verb == "run":
            sim.run(until=sim.now() + duration(args[0]))
        elif verb == "kill-node":
            sim.kill_agent(args[0])
        elif verb == "restart-node":
            sim.start_agent(args[0], delay=0.1)
        elif verb == "kill-agent":  # SIGKILL of the agent alone: PostgreSQL runs on
            sim.kill_agent_only(args[0])
        elif verb == "restart-agent":  # its supervisor starts it again
            sim.start_agent(args[0], delay=0.1)
        elif verb == "stop-agent":
            sim.clean_stop(args[0])
        elif verb == "crash-postmaster":
            m = sim.members[args[0]]
            m.pg.crash()
            if m.agent_alive:  # the postmaster watch wakes the loop
                sim.schedule_agent(0.05, m, "cycle")
        elif verb == "switchover":  # switchover m0 -> m1
            request = {"leader": args[0], "member": args[2]}
            sim.run_async(sim.operator.write_failover(request))
        elif verb == "partition":  # partition m0 from dcs | partition m0 from all
            sim.members[args[0]].partitioned = True
            sim.members[args[0]].pg.isolated = args[-1] == "all"
        elif verb == "heal":  # a partition and broken keep-alives
            for name in args or list(sim.members):
                sim.members[name].partitioned = sim.members[name].pg.isolated = False
                kv = sim.members[name].kv
                if kv is not None:
                    kv.keepalive_broken_until = 0.0
        elif verb == "break-keepalive":  # break-keepalive m0 for 60s
            kv = sim.members[args[0]].kv
            if kv is not None:
                kv.keepalive_broken_until = sim.now() + duration(args[-1])
        elif verb == "cycle":  # the loop of m0 wakes now (a watch event, an API command)
            m = sim.members[args[0]]
            if m.agent_alive:
                sim.schedule_agent(0.0, m, "cycle")
                sim.run(until=sim.now())
        elif verb == "write":
            self.write(size(args[0]))
        elif verb == "dcs-down":
            sim.backend.fail = True
        elif verb == "dcs-up":
            sim.backend.fail = False
            sim.wake_all()
        elif verb == "stall":  # stall m1 m2 for 20s
            until = sim.now() + duration(args[-1])
            for name in args[:-2]:
                sim.members[name].pg.stalled_until = until
        elif verb == "set-config":  # set-config synchronous_node_count=1
            self.set_config(args)
        elif verb == "state":
            return self.state_lines()
        else:
            raise ValueError(f"unknown command {verb!r}")
        return self.decision_lines(mark) or ["ok"]

    def write(self, nbytes: int) -> None:
        """The primary accepts ``nbytes`` of commits: the standbys its commits wait for
        (:meth:`~tests.support.fake_pg.FakePostgres.acknowledgers`) flush them at once unless
        stalled (then they are acknowledged); the other replicas have not received them yet."""
        sim = self.sim_or_default()
        prim = sim.primary()
        if prim is None:
            return
        prim.pg.write(nbytes)
        for name in prim.pg.acknowledgers():
            standby = sim.members[name].pg
            if standby.stalled_until <= sim.now():
                standby.receive(prim.pg, prim.pg.wal)
        if sim.sync_mode is not None:
            sim.acknowledge_now(prim.pg)
        sim.check_invariants()

    def set_config(self, args: list[str]) -> None:
        """An operator's PATCH of the dynamic configuration: ``key=value`` (integers, ``true``
        / ``false``, else strings)."""
        sim = self.sim_or_default()
        config, revision = sim.run_async(sim.operator.read_config())
        if config is None:
            raise ValueError("set-config: no configuration in the DCS yet")
        for arg in args:
            key, _, text = arg.partition("=")
            value: Any = text
            if text in ("true", "false"):
                value = text == "true"
            elif text.isdigit():
                value = int(text)
            config[key] = value
        if not sim.run_async(sim.operator.compare_and_set_config(config, revision)):
            raise ValueError("set-config: the configuration changed meanwhile")

    def decision_lines(self, mark: int) -> list[str]:
        sim = self.sim_or_default()
        out: list[str] = []
        for t, name, decision in sim.decisions[mark:]:
            text = render_decision(decision)
            if self.shown.get(name) != text:
                self.shown[name] = text
                out.append(f"t={t:.1f} {name} {text}")
        return out

    def state_lines(self) -> list[str]:
        sim = self.sim_or_default()
        out = [f"t={sim.now():.1f} leader={sim.leader or '-'}"]
        for name, m in sim.members.items():
            pg = m.pg
            role = (pg.role.value if pg.running and pg.role else "stopped")
            if pg.data.value != "valid":
                role = pg.data.value
            extra = f" upstream={pg.upstream}" if pg.running and pg.upstream else ""
            if pg.rewinds:
                extra += f" rewinds={pg.rewinds}"
            if sim.sync_mode is not None and pg.writable:
                extra += f" synchronous_standby_names={pg.sync_names!r}"
            agent = "up" if m.agent_alive else "down"
            out.append(f"{name} agent={agent} pg={role} timeline={pg.timeline}{extra}")
        if sim.sync_mode is not None:
            out.extend(self.sync_lines())
        return out

    def sync_lines(self) -> list[str]:
        """The sync key, and whether the primary's commits are all acknowledged (protected)."""
        sim = self.sim_or_default()
        key = sim.dcs_sync_key()
        if key is None:
            out = ["sync key: none"]
        else:
            voters = " ".join(sorted(key.sync_standby)) or "-"
            out = [f"sync key: leader={key.leader or '-'} voters={voters} quorum={key.quorum}"]
        prim = sim.primary()
        when = f"last at t={sim.acked_at:.1f}" if sim.acked_at is not None else "none yet"
        if prim is None:
            state = "no primary"
        elif wal_end(sim.acked) >= prim.pg.wal:
            state = "every commit of the primary acknowledged"
        else:
            state = "the primary's later commits wait"
        out.append(f"acknowledged commits: {when}; {state}")
        return out


def run_script(text: str) -> str:
    """Replay ``text`` (a golden file) and return it with every output block recomputed."""
    scenario = Scenario()
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.startswith("#"):
            out.append(line)
            continue
        out.append(line)
        out.append(SEPARATOR)
        out.extend(scenario.execute(line.strip()))
        if i < len(lines) and lines[i] == SEPARATOR:  # skip the recorded output
            i += 1
            while i < len(lines) and lines[i].strip():
                i += 1
        out.append("")
        while i < len(lines) and not lines[i].strip():
            i += 1
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


def run_commands(commands: str, **overrides: Any) -> Scenario:
    """Run ``commands`` (one per line, no outputs) on a new Scenario; returns it."""
    scenario = Scenario(**overrides)
    for line in commands.strip().splitlines():
        if line.strip() and not line.startswith("#"):
            scenario.execute(line.strip())
    return scenario


def golden_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.txt"))
