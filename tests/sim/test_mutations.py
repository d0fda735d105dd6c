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

from pgha.core.actions import AcquireLeader, Promote, StartPostgres
from pgha.core.decide import decide
from pgha.core.decision import Decision, Reason
from pgha.core.model import ClusterView, LocalState, PgRole
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

PARTITIONED_LEADER = CLUSTER + """
partition m0 from dcs
run 30s
"""

OLD_PRIMARY_RETURNS = FAILOVER + """
restart-node m0
run 20s
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


CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("promote_without_lock", FAILOVER, "promoting without the lock",
     {"decide_fn": promote_without_lock}),
    ("ignore_lag_limit", LAGGING_FAILOVER.format(opts="max_lag=50kB write_rate=40kB"),
     "behind the last optime", {"decide_fn": ignore_lag_limit}),
    ("no_fail_closed", PARTITIONED_LEADER, "two writable primaries",
     {"decide_fn": no_fail_closed}),
    ("rejoin_as_primary", OLD_PRIMARY_RETURNS, "started as primary without the lock",
     {"decide_fn": rejoin_as_primary}),
    ("loses_data_on_promote", FAILOVER.format(opts="write_rate=400kB"),
     "behind the last optime", {"fake": LosesDataOnPromote}),
    ("rejoins_without_rewind", DIVERGED_OLD_PRIMARY.format(opts="write_rate=40kB"),
     "rejoined m", {"fake": RejoinsWithoutRewind}),
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
