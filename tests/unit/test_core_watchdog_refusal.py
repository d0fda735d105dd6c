"""``watchdog.mode: required`` with a device that cannot be armed keeps the member out of the
leader race and out of a named candidacy (``LocalState.watchdog_ok``), with its own reason
code; real snapshots through ``decide``, no mocks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.test_decide import ME, NOW, POS, local, member, replica_pg, view
from tests.unit.test_decide_operator import WALL, cluster, peers

from pgha.core.actions import AcquireLeader, ReleaseLeader
from pgha.core.decide import decide
from pgha.core.decision import RACE_REFUSALS, Reason
from pgha.core.model import ClusterView, HaSettings
from pgha.core.race import race_refusal


def race_view() -> ClusterView:
    return replace(cluster(leader=None), optime=POS)


def test_race_refused_when_the_watchdog_cannot_be_armed() -> None:
    ok = decide(race_view(), local(replica_pg()), NOW)
    assert ok.reason is Reason.RACE and isinstance(ok.actions[0], AcquireLeader)
    loc = local(replica_pg(), watchdog_ok=False)
    refusal = race_refusal(race_view(), loc)
    assert refusal is not None and refusal.reason is Reason.RACE_REFUSED_WATCHDOG
    assert "watchdog" in refusal.message and refusal.actions == ()
    assert decide(race_view(), loc, NOW) == refusal
    assert Reason.RACE_REFUSED_WATCHDOG in RACE_REFUSALS


@pytest.mark.parametrize("paused", [False, True])
def test_named_candidate_refused_when_the_watchdog_cannot_be_armed(paused: bool) -> None:
    v = cluster(leader=None, failover={"leader": "pg3", "member": "pg1"}, optime=POS,
                settings=HaSettings(pause=paused))
    taken = decide(v, local(replica_pg(), wall_time=WALL, peers=peers()), NOW)
    assert taken.reason is Reason.SWITCHOVER_CANDIDATE
    d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers(), watchdog_ok=False), NOW)
    assert d.reason is Reason.CANDIDATE_REFUSED_WATCHDOG and d.actions == ()
    assert Reason.CANDIDATE_REFUSED_WATCHDOG in RACE_REFUSALS


def test_lock_holder_that_cannot_arm_a_required_watchdog_releases_instead_of_promoting() -> None:
    """A replica that already holds the lock (a promotion failed after the lock was taken, or
    the agent restarted) does not promote without its required watchdog: it gives the lock
    back so a member that can arm one takes it."""
    v = view(member(ME), member("pg2"), leader=ME)
    assert decide(v, local(replica_pg()), NOW).reason is Reason.PROMOTE_HOLDING_LOCK
    d = decide(v, local(replica_pg(), watchdog_ok=False), NOW)
    assert d.reason is Reason.RELEASE_LOCK_WATCHDOG
    assert d.actions == (ReleaseLeader(),)
