"""``postgresql.pre_promote`` in the decision core: a promotion runs the fencing command
first (only when one is set, before the synchronous-mode take-over of the ``sync`` key), and
a member whose command failed less than ``ttl`` ago (``LocalState.pre_promote_failed``, kept
by the agent) stays out of the race, withdraws a request naming it and gives back a lock it
still holds. Real snapshots through ``decide``, no mocks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.test_decide import ME, NOW, POS, local, member, primary_pg, replica_pg, view
from tests.unit.test_decide_operator import WALL, cluster, peers
from tests.unit.test_sync_plan import replica_view

from pgha.core.actions import (
    AcquireLeader,
    ClearFailover,
    PrePromote,
    Promote,
    ReleaseLeader,
    SetSyncStandbys,
    WriteSyncKey,
)
from pgha.core.decide import decide
from pgha.core.decision import RACE_REFUSALS, Reason
from pgha.core.model import ClusterView, HaSettings, SyncKey, Tags
from pgha.core.race import race_refusal


def race_view() -> ClusterView:
    return replace(cluster(leader=None), optime=POS)


def test_no_hook_no_pre_promote_action() -> None:
    d = decide(race_view(), local(replica_pg()), NOW)
    assert d.reason is Reason.RACE
    assert not any(isinstance(a, PrePromote) for a in d.actions)


def test_race_runs_the_hook_right_after_taking_the_lock() -> None:
    d = decide(race_view(), local(replica_pg(), pre_promote_hook=True), NOW)
    assert d.reason is Reason.RACE
    assert d.actions[:3] == (AcquireLeader(), PrePromote(), Promote())


def test_hook_runs_before_the_sync_key_take_over() -> None:
    """A failed hook must not leave the ``sync`` key naming us with no voter: nobody else
    could then take over."""
    v = replica_view(True, SyncKey("pg4", frozenset({"pg1"})))
    d = decide(v, local(replica_pg(), pre_promote_hook=True,
                        peers={"pg2": None, "pg3": None, "pg4": None}), 0.0)
    assert d.reason is Reason.RACE
    assert d.actions[:5] == (AcquireLeader(), PrePromote(), WriteSyncKey((), 0),
                             SetSyncStandbys(""), Promote())


def test_named_candidate_and_lock_holder_run_the_hook() -> None:
    v = cluster(leader=None, failover={"leader": "pg3", "member": ME}, optime=POS)
    d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers(), pre_promote_hook=True),
               NOW)
    assert d.reason is Reason.SWITCHOVER_CANDIDATE
    assert d.actions[:3] == (AcquireLeader(), PrePromote(), Promote(planned=True))
    held = view(member(ME), member("pg2"), leader=ME)
    d = decide(held, local(replica_pg(), pre_promote_hook=True), NOW)
    assert d.reason is Reason.PROMOTE_HOLDING_LOCK
    assert d.actions[:2] == (PrePromote(), Promote())


def test_race_refused_while_backing_off() -> None:
    loc = local(replica_pg(), pre_promote_hook=True, pre_promote_failed=True)
    refusal = race_refusal(race_view(), loc)
    assert refusal is not None and refusal.reason is Reason.RACE_REFUSED_PRE_PROMOTE
    assert "pre_promote" in refusal.message and refusal.actions == ()
    assert decide(race_view(), loc, NOW) == refusal
    assert Reason.RACE_REFUSED_PRE_PROMOTE in RACE_REFUSALS


def test_nofailover_still_says_nofailover() -> None:
    loc = local(replica_pg(), tags=Tags(nofailover=True), pre_promote_failed=True)
    refusal = race_refusal(race_view(), loc)
    assert refusal is not None and refusal.reason is Reason.RACE_REFUSED_NOFAILOVER


def test_named_candidate_withdraws_the_request_while_backing_off() -> None:
    """As in Patroni, where the request is deleted before the hook runs: the others may then
    race (the former leader included) instead of waiting for a candidate that backs off."""
    v = cluster(leader=None, failover={"leader": "pg3", "member": ME}, optime=POS)
    d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers(), pre_promote_failed=True),
               NOW)
    assert d.reason is Reason.PRE_PROMOTE_WITHDRAW
    assert d.actions == (ClearFailover(),)
    gone = decide(cluster(leader=None, optime=POS),
                  local(replica_pg(), wall_time=WALL, peers=peers(), pre_promote_failed=True),
                  NOW)
    assert gone.reason is Reason.RACE_REFUSED_PRE_PROMOTE


def test_paused_candidate_refuses_while_backing_off() -> None:
    v = cluster(leader=None, failover={"leader": "pg3", "member": ME}, optime=POS,
                settings=HaSettings(pause=True))
    d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers(), pre_promote_failed=True),
               NOW)
    assert d.reason is Reason.CANDIDATE_REFUSED_PRE_PROMOTE and d.actions == ()
    assert Reason.CANDIDATE_REFUSED_PRE_PROMOTE in RACE_REFUSALS


def test_lock_holder_gives_the_lock_back_instead_of_promoting() -> None:
    """The executor deletes the key when the hook fails; should that delete not reach the
    store, the next cycle releases it instead of promoting."""
    v = view(member(ME), member("pg2"), leader=ME)
    d = decide(v, local(replica_pg(), pre_promote_hook=True, pre_promote_failed=True), NOW)
    assert d.reason is Reason.RELEASE_LOCK_PRE_PROMOTE
    assert d.actions == (ReleaseLeader(),)


@pytest.mark.parametrize("failed", [False, True])
def test_other_members_are_not_affected(failed: bool) -> None:
    """Only the member's own failure counts; a running leader's lock is never touched."""
    v = view(member(ME, role="primary"), member("pg2"), leader=ME)
    d = decide(v, local(primary_pg(), pre_promote_hook=True, pre_promote_failed=failed), NOW)
    assert d.reason is Reason.LEADER_HEALTHY
