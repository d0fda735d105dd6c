"""Bounded exhaustive exploration of three-member clusters (tests/sim/explore.py): every event
sequence up to the depth, each state checked with the simulation's invariants.

The CI form is shallow (depth 3); the long form, with the figures, is
``benchmarks/explore.py``.
"""

from __future__ import annotations

import pickle

import pytest

from tests.sim.abstract import fingerprint
from tests.sim.cluster import InvariantViolation
from tests.sim.explore import KINDS, SETUP, Explorer, Menu, transcript
from tests.sim.scenario import Scenario, run_commands
from tests.sim.test_mutations import no_fail_closed, race_ignores_sync_key

VARIANTS = [
    # (opts, least distinct states at depth 3: about 2,800 each when written)
    pytest.param("", 2000, id="async"),
    pytest.param("sync=on", 2000, id="sync_on"),
    pytest.param("sync=quorum", 2000, id="quorum"),
]


@pytest.mark.parametrize(("opts", "least"), VARIANTS)
def test_every_schedule_up_to_depth_3_keeps_the_invariants(opts: str, least: int) -> None:
    """Every sequence of three events of the full menu (time steps, out-of-turn cycles,
    node death and return, agent death, postmaster crash, network partition and heal, broken
    keep-alives, replication stalls, switchovers, acknowledged commits) from a healthy
    cluster."""
    explorer = Explorer(SETUP.format(opts=opts), Menu())
    report = explorer.run(depth=3)
    assert report.violation is None, report.violation.script(explorer.setup) + \
        report.violation.message
    assert report.complete and report.depth_reached == 3
    assert report.distinct >= least, report.summary()
    assert report.transitions > report.distinct  # some successors were duplicates


def test_explorer_finds_a_primary_that_keeps_running_without_its_lease() -> None:
    """Mutation (tests/sim/test_mutations.py ``no_fail_closed``, no watchdog device): the
    shortest sequence is a partition of the leader and time past its lease; replayed from
    scratch it breaks the invariant again."""
    explorer = Explorer(SETUP.format(opts=""), Menu(), decide_fn=no_fail_closed, watchdog="off")
    report = explorer.run(depth=3)
    violation = report.violation
    assert violation is not None and violation.kind == "invariant"
    assert "two writable primaries" in violation.message
    assert len(violation.events) <= 3
    assert "partition m0 from all" in violation.events, violation.events
    text = transcript(explorer.setup, violation.events, decide_fn=no_fail_closed, watchdog="off")
    assert "!! " in text and "two writable primaries" in text, text
    with pytest.raises(InvariantViolation, match="two writable primaries"):
        run_commands(violation.script(explorer.setup), decide_fn=no_fail_closed, watchdog="off")


def test_explorer_finds_an_async_member_racing_past_the_sync_key() -> None:
    """Mutation ``race_ignores_sync_key`` in synchronous mode: a commit acknowledged by the
    synchronous standby only, the leader and that standby die, the async member left takes
    over. Four events; the unmutated core refuses (no violation in the same space)."""
    menu = Menu(kinds=frozenset({"run", "write", "kill-node"}))
    explorer = Explorer(SETUP.format(opts="sync=on"), menu, decide_fn=race_ignores_sync_key)
    report = explorer.run(depth=4)
    violation = report.violation
    assert violation is not None and "acknowledged commit lost" in violation.message
    assert len(violation.events) == 4, violation.events
    assert {"write 10kB", "kill-node m0", "kill-node m1"} <= set(violation.events)
    with pytest.raises(InvariantViolation, match="acknowledged commit lost"):
        run_commands(violation.script(explorer.setup), decide_fn=race_ignores_sync_key)
    unmutated = Explorer(SETUP.format(opts="sync=on"), menu).run(depth=4)
    assert unmutated.violation is None and unmutated.distinct > 100


def test_explorer_is_deterministic() -> None:
    menu = Menu(steps=("2s",), kinds=frozenset({"run", "cycle", "crash-postmaster"}))
    runs = [Explorer(SETUP.format(opts=""), menu).run(depth=2).summary() for _ in range(2)]
    for summary in runs:
        summary.pop("seconds")
        summary.pop("states_per_second")
    assert runs[0] == runs[1]
    assert runs[0]["distinct_states"] > 10


def _outputs(scenario: Scenario, commands: list[str]) -> list[str]:
    return [line for c in commands for line in scenario.execute(c)]


def test_a_pickled_state_continues_as_the_original() -> None:
    """The explorer branches by unpickling: a copy taken between two commands must run on
    exactly as the original does (same decisions, same abstract state)."""
    original = run_commands(SETUP.format(opts="sync=on") + "write 10kB\nrun 3s\n")
    copy: Scenario = pickle.loads(pickle.dumps(original))
    later = ["kill-node m0", "run 12s", "restart-node m0", "run 20s", "state"]
    assert _outputs(copy, later) == _outputs(original, later)
    assert copy.sim is not None and original.sim is not None
    assert fingerprint(copy.sim) == fingerprint(original.sim)
    assert copy.sim.now() == original.sim.now()


def test_fingerprint_abstracts_absolute_time_and_wal_bytes() -> None:
    """A healthy cluster a few loop_waits later is the same abstract state (positions differ
    in bytes, not in order); a fault makes a different one."""
    scenario = run_commands(SETUP.format(opts="") + "run 10s\n")
    assert scenario.sim is not None
    before = fingerprint(scenario.sim)
    scenario.execute("run 10s")
    assert fingerprint(scenario.sim) == before
    scenario.execute("crash-postmaster m1")
    assert fingerprint(scenario.sim) != before


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_menu_kind_is_offered_somewhere(kind: str) -> None:
    """Each kind of event appears in the menu of the start state or after a node death (so
    the CI runs above do exercise it)."""
    menu = Menu()
    start = Explorer(SETUP.format(opts="")).start()
    assert start.sim is not None
    offered = {e.split()[0] for e in menu.events(start.sim, 0)}
    start.execute("kill-node m2")
    start.execute("partition m1 from all")
    offered |= {e.split()[0] for e in menu.events(start.sim, 0)}
    assert kind in offered
