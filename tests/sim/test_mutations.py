"""Each invariant of the simulation catches a deliberate mutation.

A mutation is an explicit wrapper around the real ``decide`` (or a fake PostgreSQL with one
behaviour broken); everything else is real. Each test first runs the same scenario unmutated
(no violation: the scenario is fair), then mutated, and expects :class:`InvariantViolation`
naming the broken invariant.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pgha.core.actions import (
    AcquireLeader,
    Action,
    Promote,
    SetSyncStandbys,
    StartPostgres,
    SyncSlots,
    WriteSyncKey,
)
from pgha.core.decide import decide
from pgha.core.decision import Decision, Reason
from pgha.core.model import ClusterView, LocalState, PgRole
from pgha.core.sync import SyncNames, parse_sync_names
from tests.sim.cluster import InvariantViolation
from tests.sim.scenario import run_commands
from tests.support.fake_pg import INITDB_WAL, FakePostgres, truncate

CLUSTER = """
sim n=3 ttl=10 loop_wait=2 seed=7 {opts}
start m0
run 5s
start m1 m2
run 25s
"""

FAILOVER = CLUSTER + """
kill-node m0
run 20s
"""

LAGGING_FAILOVER = CLUSTER + """
stall m1 m2 for 120s
run 20s
kill-node m0
run 30s
"""

# cut off from the DCS and from its peers (who could otherwise find its server accepting writes)
PARTITIONED_LEADER = CLUSTER + """
partition m0 from all
run 30s
"""

OLD_PRIMARY_RETURNS = FAILOVER + """
restart-node m0
run 20s
"""

# the leader's agent dies, its PostgreSQL runs on as primary; its session and keys expire
LEADER_AGENT_DIES = CLUSTER + """
kill-agent m0
run 30s
"""

# the leader is cut off from everyone; its agent sees the DCS fail (its lease still valid),
# then dies: only its watchdog device can stop the primary it leaves behind
ISOLATED_LEADER_AGENT_DIES = CLUSTER.replace("{opts}", "watchdog=lease") + """
partition m0 from all
run 3s
kill-agent m0
run 30s
"""

DIVERGED_OLD_PRIMARY = CLUSTER + """
stall m1 m2 for 60s
run 10s
kill-node m0
run 20s
restart-node m0
run 20s
"""


def promote_without_lock(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation: a running replica that sees no leader promotes without taking the lock."""
    d = decide(view, local, now)
    if view is not None and view.leader is None and local.pg.running \
            and local.pg.role is PgRole.REPLICA:
        return replace(d, actions=(Promote(),))
    return d


def ignore_silent_agents(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation: a peer whose agent is silent counts as unreachable even though its
    PostgreSQL was found accepting writes."""
    peers = {n: None if p is not None and p.agent_silent else p for n, p in local.peers.items()}
    return decide(view, replace(local, peers=peers), now)


def ignore_lag_limit(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation: a replica too far behind races anyway."""
    d = decide(view, local, now)
    if d.reason is Reason.RACE_REFUSED_LAG:
        return replace(d, reason=Reason.RACE, actions=(AcquireLeader(), Promote()))
    return d


def no_fail_closed(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation: a primary whose lease is not confirmed keeps running."""
    d = decide(view, local, now)
    if d.reason is Reason.LEASE_UNCONFIRMED:
        return replace(d, actions=())
    return d


def rejoin_as_primary(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation: a former primary comes back writable instead of rejoining."""
    d = decide(view, local, now)
    if d.reason is Reason.REJOIN:
        return replace(d, actions=(StartPostgres("primary"),))
    return d


class LosesDataOnPromote(FakePostgres):
    """Mutation: promotion drops every WAL record written after initdb."""

    async def promote(self) -> bool:
        self.segments = truncate(self.segments, INITDB_WAL)
        return await super().promote()


class RejoinsWithoutRewind(FakePostgres):
    """Mutation: pg_rewind that does nothing (diverged data rejoins as is)."""

    def rewind(self, src: FakePostgres) -> None:
        return None


# -- synchronous replication: one mutation per ordering rule of pgha.core.sync -------------
SYNC_CLUSTER = CLUSTER.replace("{opts}", "sync=on")

# m1 is the synchronous standby; m2's replication stalls while m0 writes (m1 acknowledges);
# m0 and m1 die together: only m2 is left, and it lacks acknowledged commits
ASYNC_LEFT_ALONE = SYNC_CLUSTER + """
stall m2 for 120s
run 10s
kill-node m0
kill-node m1
run 30s
"""

# m1, the synchronous standby, dies: m0 waits for m2 instead (m1 leaves the key first); m1
# comes back, stalled behind; m0 and m2 die together: only m1 is left
FORMER_VOTER_LEFT_ALONE = SYNC_CLUSTER + """
kill-node m1
run 6s
restart-node m1
stall m1 for 120s
run 10s
kill-node m0
kill-node m2
run 30s
"""

# quorum, ANY 2 of three (key quorum 1); m2 and m3 stall, so m1 alone holds the commits
# acknowledged from now on (none while ANY 2 needs two); synchronous_node_count drops to 1:
# the key's quorum must rise to 2 before PostgreSQL waits for ANY 1. m0 and m1 die within
# the leader's next loop_wait (the window a wrong order opens): m2 and m3 are left
QUORUM_LOWERED = """
sim n=4 ttl=10 loop_wait=2 seed=1 sync=quorum node_count=2
start m0
run 5s
start m1 m2 m3
run 25s
stall m2 m3 for 120s
run 5s
set-config synchronous_node_count=1
run 2s
kill-node m0
kill-node m1
run 30s
"""

# m0 leads with m3 as its synchronous standby (m0 keeps 'FIRST 1 (m3)' in postgresql.conf
# after it steps down); switchovers m0 -> m3 -> m1 with synchronous_node_count 2 make m1
# the leader with voters m0 and m2. m2 stalls; m1 dies; m0 wins the race and promotes. Its
# DCS access fails right after the promotion (the next cycle would rewrite the key), m3
# follows it, and m0 runs until its lease ends; then m0 and m3 die: m2, stalled, is left
STALE_NAMES_PROMOTION = """
sim n=4 ttl=10 loop_wait=2 seed=1 sync=on
start m0
run 5s
start m3
run 10s
start m1 m2
run 15s
switchover m0 -> m3
run 20s
set-config synchronous_node_count=2
run 10s
switchover m3 -> m1
run 20s
stall m2 for 120s
run 10s
kill-node m1
run 10.16s
partition m0 from dcs
run 10s
kill-node m0
kill-node m3
run 30s
"""


def _with_key_writes(d: Decision, write: Any) -> Decision:
    return replace(d, actions=tuple(write(a) if isinstance(a, WriteSyncKey) else a
                                    for a in d.actions))


def key_names_every_standby(view: ClusterView | None, local: LocalState,
                            now: float) -> Decision:
    """Mutation (a voter joins the key before PostgreSQL waits for it): every sync key
    write names every member streaming from the leader."""
    d = decide(view, local, now)
    members = view.members if view is not None else {}
    streaming = tuple(sorted(c.name for c in local.pg.standbys if c.name in members))
    return _with_key_writes(d, lambda a: WriteSyncKey(streaming, a.quorum))


def key_keeps_voters(view: ClusterView | None, local: LocalState, now: float) -> Decision:
    """Mutation (a voter leaves PostgreSQL before the key): a sync key write never drops a
    voter of the leader's current key."""
    d = decide(view, local, now)
    key = view.sync if view is not None else None
    kept = key.sync_standby if key is not None and key.leader == local.name else frozenset()
    return _with_key_writes(d, lambda a: WriteSyncKey(tuple(sorted(kept | set(a.voters))),
                                                      a.quorum))


def race_ignores_sync_key(view: ClusterView | None, local: LocalState,
                          now: float) -> Decision:
    """Mutation (the race ignores the sync key): a replica that sees no leader decides as
    if there were no ``sync`` key (the usual rules only)."""
    if view is not None and view.leader is None and local.pg.running \
            and local.pg.role is PgRole.REPLICA:
        return decide(replace(view, sync=None), local, now)
    return decide(view, local, now)


def quorum_num_lowered_first(view: ClusterView | None, local: LocalState,
                             now: float) -> Decision:
    """Mutation (quorum: ``num`` lowered before the key's quorum rises): where the leader
    raises its key's quorum (same voters), it lowers PostgreSQL's ``ANY num`` to match
    instead; the quorum rises only in its next cycle."""
    d = decide(view, local, now)
    key = view.sync if view is not None else None
    observed = parse_sync_names(local.pg.sync_standby_names)
    if (key is None or key.leader != local.name or not observed.quorum or observed.empty
            or any(isinstance(a, SetSyncStandbys) for a in d.actions)):
        return d

    def lowered(a: Action) -> Action:
        if (isinstance(a, WriteSyncKey) and a.quorum > key.quorum
                and set(a.voters) == key.sync_standby):
            num = len(observed.names) - a.quorum
            return SetSyncStandbys(SyncNames(observed.names, num, True).render())
        return a

    return replace(d, actions=tuple(lowered(a) for a in d.actions))


def promote_without_before_promote(view: ClusterView | None, local: LocalState,
                                   now: float) -> Decision:
    """Mutation (promotion without :func:`pgha.core.sync.before_promote`): the sync key and
    ``synchronous_standby_names`` are left as they are when a replica promotes."""
    d = decide(view, local, now)
    at = next((i for i, a in enumerate(d.actions) if isinstance(a, Promote)), None)
    if at is None:
        return d
    kept = tuple(a for a in d.actions[:at] if not isinstance(a, WriteSyncKey | SetSyncStandbys))
    return replace(d, actions=kept + d.actions[at:])


def advance_copies_to_own_wal(view: ClusterView | None, local: LocalState,
                              now: float) -> Decision:
    """Mutation: a replica advances its slot copies as far as its own WAL goes instead of to
    the positions the leader published."""
    d = decide(view, local, now)
    ahead = tuple(replace(a, advance=tuple((n, p + (1 << 30)) for n, p in a.advance))
                  if isinstance(a, SyncSlots) else a for a in d.actions)
    return replace(d, actions=ahead)


LOST = "acknowledged commit lost"
# a watchdog device would reset the node that software failed to fence: the software rules
# are shown to hold on their own, without one ("watchdog": "off")

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("promote_without_lock", FAILOVER, "promoting without the lock",
     {"decide_fn": promote_without_lock}),
    ("ignore_lag_limit", LAGGING_FAILOVER.format(opts="max_lag=50kB write_rate=40kB"),
     "behind the last optime", {"decide_fn": ignore_lag_limit}),
    ("no_fail_closed", PARTITIONED_LEADER, "two writable primaries",
     {"decide_fn": no_fail_closed, "watchdog": "off"}),
    ("ignore_silent_agents", LEADER_AGENT_DIES, "two writable primaries",
     {"decide_fn": ignore_silent_agents, "watchdog": "off"}),
    ("watchdog_follows_the_lock", ISOLATED_LEADER_AGENT_DIES, "two writable primaries",
     {"watchdog": "lock"}),
    ("rejoin_as_primary", OLD_PRIMARY_RETURNS, "started as primary without the lock",
     {"decide_fn": rejoin_as_primary}),
    ("loses_data_on_promote", FAILOVER.format(opts="write_rate=400kB"),
     "behind the last optime", {"fake": LosesDataOnPromote}),
    ("rejoins_without_rewind", DIVERGED_OLD_PRIMARY.format(opts="write_rate=40kB"),
     "rejoined m", {"fake": RejoinsWithoutRewind}),
    ("sync_voter_joins_key_first", ASYNC_LEFT_ALONE, LOST,
     {"decide_fn": key_names_every_standby}),
    ("sync_voter_leaves_pg_first", FORMER_VOTER_LEFT_ALONE, LOST,
     {"decide_fn": key_keeps_voters}),
    ("sync_race_ignores_key", ASYNC_LEFT_ALONE, LOST, {"decide_fn": race_ignores_sync_key}),
    ("sync_quorum_num_lowered_first", QUORUM_LOWERED, LOST,
     {"decide_fn": quorum_num_lowered_first}),
    ("sync_promotion_without_before_promote", STALE_NAMES_PROMOTION, LOST,
     {"decide_fn": promote_without_before_promote}),
    ("slot_copy_ahead_of_its_consumer", FAILOVER.format(opts="cdc=on write_rate=100kB"),
     "past the .* its consumer confirmed", {"decide_fn": advance_copies_to_own_wal}),
]


@pytest.mark.parametrize(("script", "expected", "mutation"),
                         [pytest.param(s, e, m, id=name) for name, s, e, m in CASES])
def test_invariant_catches_mutation(script: str, expected: str,
                                    mutation: dict[str, Any]) -> None:
    script = script.format(opts="")
    run_commands(script)  # unmutated: the scenario itself is fair
    with pytest.raises(InvariantViolation, match=expected):
        run_commands(script, **mutation)


def test_unmutated_lagging_failover_does_not_promote() -> None:
    """Control for ``ignore_lag_limit``: the real core refuses, so nobody is promoted."""
    scenario = run_commands(LAGGING_FAILOVER.format(opts="max_lag=50kB write_rate=40kB"))
    assert scenario.sim is not None
    assert scenario.sim.promotions == []
    reasons = {d.reason for _, _, d in scenario.sim.decisions}
    assert Reason.RACE_REFUSED_LAG in reasons


@pytest.mark.parametrize(("script", "refusal", "promoted"), [
    pytest.param(ASYNC_LEFT_ALONE, Reason.RACE_REFUSED_NOT_SYNC, [], id="async_left_alone"),
    pytest.param(FORMER_VOTER_LEFT_ALONE, Reason.RACE_REFUSED_NOT_SYNC, [],
                 id="former_voter_left_alone"),
    pytest.param(QUORUM_LOWERED, Reason.RACE_REFUSED_QUORUM, [], id="quorum_lowered"),
    pytest.param(STALE_NAMES_PROMOTION, Reason.RACE_REFUSED_NOT_SYNC, ["m3", "m1", "m0"],
                 id="stale_names_promotion"),
])
def test_unmutated_sync_scenarios_refuse_the_member_left(script: str, refusal: Reason,
                                                         promoted: list[str]) -> None:
    """Controls for the synchronous-replication mutations: the real core leaves the cluster
    without a leader rather than promote the member that lacks acknowledged commits."""
    scenario = run_commands(script)
    assert scenario.sim is not None
    assert [name for _, name, _ in scenario.sim.promotions] == promoted
    assert refusal in {d.reason for _, _, d in scenario.sim.decisions}
    assert scenario.sim.leader is None
