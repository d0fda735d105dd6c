"""Seeded multi-member simulations of the real decision core and executor (see
tests/sim/cluster.py)."""

from __future__ import annotations

import pytest

from pgha.core.decision import Reason
from tests.sim.cluster import Sim
from tests.sim.scenario import run_commands

SEEDS = range(300)


@pytest.mark.parametrize("seed", SEEDS)
def test_never_two_writable_primaries_and_no_promotion_past_lag_limit(seed: int) -> None:
    fast = seed % 2 == 0
    sim = Sim(seed, n=3 + seed % 3, ttl=5.0 if fast else 10.0, loop_wait=1.0 if fast else 2.0)
    sim.run(until=600.0)  # check_invariants() raises on the first violation
    assert sim.initialize == "42"


@pytest.mark.parametrize("seed", range(50))
def test_cluster_recovers_a_leader_after_faults(seed: int) -> None:
    sim = Sim(seed, n=3, strict_lock_session=True)  # safety rule 7 checked as well
    sim.run(until=300.0)
    # stop injecting faults, heal everything, and let the cluster settle
    sim.events = [e for e in sim.events if e[3] != "fault"]
    for m in sim.members.values():
        m.partitioned = False
        m.pg.stalled_until = 0.0
        if not m.agent_alive:
            sim.schedule(0.0, m.name, "restart_agent")
    sim.run(until=sim.now() + 120.0)
    leader = sim.leader
    assert leader is not None, sim.log
    primary = sim.primary()
    assert primary is not None and primary.name == leader
    for m in sim.members.values():
        if m.name != leader:
            assert m.pg.running and m.pg.upstream == leader, (m.name, m.pg, sim.log)


@pytest.mark.parametrize("seed", range(30))
def test_nofailover_member_never_promotes(seed: int) -> None:
    sim = Sim(seed, n=3, nofailover=2)
    sim.run(until=400.0)
    assert all(name != "m2" for _, name, _ in sim.promotions)
    # m2 may only be leader if it bootstrapped the cluster (timeline 1, never promoted)


def test_switchover_requests_are_carried_out() -> None:
    """The fault mix includes operator switchovers; they must really hand over (not only be
    refused), or the invariant runs above would not cover the hand-over path."""
    sims = [Sim(seed, n=3) for seed in range(20)]
    for sim in sims:
        sim.run(until=600.0)
    assert sum(sim.switchovers for sim in sims) > 0


def test_restarted_leader_agent_rebinds_the_lock_before_acting_as_leader() -> None:
    """The leader's node dies and comes back before its session expired. Its new agent must
    rebind the leader key to its new session (compare-and-set on its name) before it starts
    PostgreSQL as primary; checked with ``strict_lock_session``."""
    scenario = run_commands("""
        sim n=3 ttl=10 loop_wait=2 seed=7
        start m0
        run 5s
        start m1 m2
        run 25s
        kill-node m0
        run 2s
        restart-node m0
        run 20s
    """, strict_lock_session=True)
    sim = scenario.sim_or_default()
    rebinds = [(t, name) for t, name, d in sim.decisions if d.reason is Reason.LEADER_REBIND]
    assert rebinds and rebinds[0][1] == "m0", sim.log
    assert sim.leader == "m0" and sim.members["m0"].pg.writable
