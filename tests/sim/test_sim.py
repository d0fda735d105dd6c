"""Seeded multi-member simulations of the real decision core and executor (see
tests/sim/cluster.py)."""

from __future__ import annotations

import pytest

from pgha.core.decision import Reason
from tests.sim.agent_parts import SimFence
from tests.sim.cluster import InvariantViolation, Sim
from tests.sim.scenario import run_commands
from tests.support.fake_pg import wal_end

SEEDS = range(300)


@pytest.mark.parametrize("seed", SEEDS)
def test_never_two_writable_primaries_and_no_promotion_past_lag_limit(seed: int) -> None:
    fast = seed % 2 == 0
    sim = Sim(seed, n=3 + seed % 3, ttl=5.0 if fast else 10.0, loop_wait=1.0 if fast else 2.0,
              cdc=seed % 3 == 0,  # a third with a logical slot and its consumer
              # ttl 5 leaves no room for a device timeout (none is armed); half the others run
              # without a device
              watchdog="off" if seed % 4 == 3 else "lease")
    sim.run(until=600.0)  # check_invariants() raises on the first violation
    assert sim.initialize == "42"


# synchronous replication: (mode, strict, synchronous_node_count) and seeds; the fault mix
# also switches the mode (off -> on -> quorum -> off) and the node count on the running cluster
SYNC_CASES = [("on", False, 1, range(30)), ("quorum", False, 1, range(30)),
              ("on", True, 1, range(15)), ("quorum", True, 1, range(15)),
              ("on", False, 2, range(15)), ("quorum", False, 2, range(15))]


@pytest.mark.parametrize(("mode", "strict", "node_count", "seed"), [
    pytest.param(mode, strict, count, seed,
                 id=f"{mode}-{'strict-' if strict else ''}n{count}-{seed}")
    for mode, strict, count, seeds in SYNC_CASES for seed in seeds])
def test_synchronous_mode_never_loses_an_acknowledged_commit(mode: str, strict: bool,
                                                             node_count: int, seed: int) -> None:
    """Every promotion and start as primary in synchronous mode holds the latest commit
    acknowledged while ``synchronous_standby_names`` named standbys (checked by the Sim,
    "acknowledged commit lost"), besides the invariants of the run above."""
    sim = Sim(seed, n=3 + seed % 3, sync_mode=mode, strict=strict, node_count=node_count)
    sim.run(until=600.0)
    assert sim.initialize == "42"


def heal(sim: Sim) -> None:
    """Stop injecting faults and heal everything."""
    sim.events = [e for e in sim.events if e[3] != "fault"]
    for m in sim.members.values():
        m.partitioned = False
        m.pg.stalled_until = 0.0
        if not m.agent_alive:
            sim.schedule(0.0, m.name, "restart_agent")


@pytest.mark.parametrize("seed", range(50))
def test_cluster_recovers_a_leader_after_faults(seed: int) -> None:
    sim = Sim(seed, n=3, strict_lock_session=True)  # safety rule 7 checked as well
    sim.run(until=300.0)
    # stop injecting faults, heal everything, and let the cluster settle
    heal(sim)
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


def test_a_member_whose_pre_promote_fails_never_promotes() -> None:
    """Every member has a ``pre_promote``; m2's always fails. m2 never promotes, the failed
    attempts release the lock (the invariants hold throughout), and the others' hooks pass."""
    sims = [Sim(seed, n=3, fenced=2) for seed in range(30)]
    for sim in sims:
        sim.run(until=400.0)
        assert all(name != "m2" for _, name, _ in sim.promotions)
    fences = [m.fence for sim in sims for m in sim.members.values()]
    assert sum(f.failures for f in fences if isinstance(f, SimFence)) > 0  # path exercised
    assert sum(f.runs - f.failures for f in fences if isinstance(f, SimFence)) > 0


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


@pytest.mark.parametrize(("mode", "strict", "seed"), [
    pytest.param(mode, strict, seed, id=f"{mode}-{'strict-' if strict else ''}{seed}")
    for mode, strict in (("on", False), ("quorum", False), ("on", True)) for seed in range(8)])
def test_synchronous_cluster_recovers_after_faults(mode: str, strict: bool, seed: int) -> None:
    """Liveness in synchronous mode: after the faults heal (and the operator set the mode
    back), a leader runs, its sync key names a standby, and commits are acknowledged
    again."""
    sim = Sim(seed, n=3, sync_mode=mode, strict=strict)
    sim.run(until=300.0)
    heal(sim)
    config, revision = sim.run_async(sim.operator.read_config())
    assert config is not None
    config.update(synchronous_mode=mode, synchronous_node_count=1)
    assert sim.run_async(sim.operator.compare_and_set_config(config, revision))
    healed = sim.now()
    sim.run(until=healed + 120.0)
    leader = sim.leader
    primary = sim.primary()
    assert leader is not None and primary is not None and primary.name == leader, sim.log
    key = sim.dcs_sync_key()
    assert key is not None and key.leader == leader and key.sync_standby, (key, sim.log)
    assert sim.acked_at is not None and sim.acked_at > healed + 60.0, sim.log
    assert wal_end(sim.acked) > 0


# A leader in quorum mode stops cleanly right after m2's replication stalled: m1 received and
# acknowledged (ANY 1) commits m2 lacks. Were GET /patroni to answer with the WAL position of
# the peer's last cycle, m2 would see m1 "not ahead", count its vote and take over.
STALE_PEER_POSITION = """
sim n=3 ttl=10 loop_wait=2 seed=3 sync=quorum write_rate=200kB
start m0
run 5s
start m1 m2
run 25s
run 1.7s
stall m2 for 60s
run 300ms
stop-agent m0
run 30s
"""


def test_quorum_vote_counts_live_peer_positions() -> None:
    """A voter's vote counts only when it is not ahead, judged on the WAL its PostgreSQL has
    at the time of the race (GET /patroni reads it live): m1, which holds the acknowledged
    commits, takes over."""
    scenario = run_commands(STALE_PEER_POSITION)
    assert scenario.sim is not None
    assert [name for _, name, _ in scenario.sim.promotions] == ["m1"]


def test_votes_on_positions_of_the_peers_last_cycle_lose_acknowledged_commits() -> None:
    """The mutation the test above guards against (pgha before the fix): the positions of
    the peers' last cycles let a candidate missing acknowledged commits gather its votes."""
    with pytest.raises(InvariantViolation, match="acknowledged commit lost"):
        run_commands(STALE_PEER_POSITION, stale_peer_positions=True)


ISOLATED_LEADER = """
sim n=3 ttl=10 loop_wait=2 seed=7
start m0
run 5s
start m1 m2
run 25s
partition m0 from all
{agent}
run 30s
"""


def test_an_isolated_primary_whose_agent_died_is_recorded_as_unfenced() -> None:
    """The one case beyond fencing by software (see Sim.check_invariants): the leader's node
    is cut off from everyone, then its agent dies. Its lease runs out, a replica promotes,
    and the old primary's server, which nobody can reach and no agent demotes, stays
    writable. The Sim records it in ``unfenced`` rather than as a violation; a watchdog
    (issue 14) is what would reset that node."""
    scenario = run_commands(ISOLATED_LEADER.format(agent="kill-agent m0"), watchdog="off")
    sim = scenario.sim
    assert sim is not None
    assert [name for _, name in sim.unfenced] == ["m0"]
    assert sim.members["m0"].pg.writable and sim.leader in {"m1", "m2"}
    # the same with the agent alive: it demotes before its lease ends, nothing unfenced
    alive = run_commands(ISOLATED_LEADER.format(agent=""), watchdog="off").sim
    assert alive is not None and alive.unfenced == []
    assert not alive.members["m0"].pg.writable


@pytest.mark.parametrize("pause", ["", "run 3s"])
def test_the_watchdog_resets_an_isolated_leader_whose_agent_died(pause: str) -> None:
    """With a device held by the agent, the same case is fenced: the agent killed right after
    the partition, or after it has seen the DCS fail ("run 3s": its lease still valid, so the
    device stays armed), leaves the device running, which resets the node before its leader
    key can expire and a replica promote."""
    sim = run_commands(ISOLATED_LEADER.format(agent=f"{pause}\nkill-agent m0"),
                       watchdog="lease").sim
    assert sim is not None and sim.unfenced == []
    device = sim.members["m0"].device
    assert device is not None and len(device.resets) == 1
    assert not sim.members["m0"].pg.writable and sim.leader in {"m1", "m2"}
    assert device.resets[0] < min(t for t, _, _ in sim.promotions if t > 30)
