"""The decision core on operator requests: switchover/failover (the ``failover`` key), restart,
re-initialize, and their interplay with maintenance mode. Real core, no mocks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.unit.test_decide import (
    MB,
    ME,
    NOW,
    POS,
    kinds,
    local,
    member,
    peer,
    primary_pg,
    replica_pg,
    stopped_pg,
    up,
    view,
)

from pgha.core.actions import (
    AcquireLeader,
    ClearFailover,
    HandOver,
    Promote,
    Reinitialize,
    Rejoin,
    RestartPostgres,
)
from pgha.core.decide import Reason, decide, needs_peer_statuses
from pgha.core.model import ClusterView, HaSettings, Tags
from pgha.core.switchover import (
    FailoverRequest,
    candidate_problem,
    parse_failover,
    pick_candidate,
    switchover_problem,
)

WALL = 1_800_000_000.0  # the cycle's epoch time


def cluster(leader: str | None = ME, failover: dict[str, Any] | None = None,
            settings: HaSettings | None = None, optime: int | None = None,
            **tags: Tags) -> ClusterView:
    def role(name: str) -> str:
        return "primary" if name == leader else "replica"

    base = view(member(ME, role=role(ME)), member("pg2", role("pg2"), tags=tags.get("pg2")),
                member("pg3", role("pg3"), tags=tags.get("pg3")),
                leader=leader, settings=settings, optime=optime)
    return replace(base, failover=failover)


def peers(**over: Any) -> dict[str, Any]:
    out = {"pg2": peer("pg2", wal=POS - 10), "pg3": peer("pg3", wal=POS - 1000)}
    out.update(over)
    return out


class TestParseFailover:
    def test_fields_and_aliases(self) -> None:
        req = parse_failover({"master": "a", "candidate": "b",
                              "scheduled_at": "2027-01-01T10:00:00+01:00"})
        assert req == FailoverRequest("a", "b", 1798794000.0)

    @pytest.mark.parametrize("raw", [
        None, {}, {"leader": 3}, {"member": ["x"]}, {"scheduled_at": "2027-01-01"},
        {"leader": "a", "scheduled_at": "2027-01-01T10:00:00"},  # naive: refused
        {"leader": "a", "scheduled_at": "soon"}, {"leader": "a", "scheduled_at": 5},
    ])
    def test_unusable_values_give_none(self, raw: Any) -> None:
        assert parse_failover(raw) is None

    def test_round_trip(self) -> None:
        req = FailoverRequest("a", "b", WALL)
        assert parse_failover(req.to_json()) == req


class TestCandidates:
    def test_pick_prefers_position_then_priority_then_name(self) -> None:
        v = cluster()
        assert pick_candidate(v, peers(), ME) == "pg2"
        same = peers(pg3=peer("pg3", wal=POS - 10, tags=Tags(failover_priority=5)))
        assert pick_candidate(v, same, ME) == "pg3"
        tie = peers(pg3=peer("pg3", wal=POS - 10))
        assert pick_candidate(v, tie, ME) == "pg2"

    def test_unfit_candidates(self) -> None:
        v = cluster(pg3=Tags(nofailover=True))
        assert "nofailover" in (candidate_problem(v, "pg3", peer("pg3"), check_lag=True) or "")
        assert "REST API" in (candidate_problem(v, "pg2", None, check_lag=True) or "")
        assert "not running" in (candidate_problem(v, "pg2", peer("pg2", state="stopped"),
                                                   check_lag=True) or "")
        far = peer("pg2", wal=POS - 2 * MB)
        assert "maximum_lag_on_failover" in (candidate_problem(v, "pg2", far, check_lag=True)
                                             or "")
        assert candidate_problem(v, "pg2", far, check_lag=False) is None
        assert "not a member" in (candidate_problem(v, "pgX", far, check_lag=False) or "")

    def test_switchover_problem_reasons(self) -> None:
        v = cluster()
        assert switchover_problem(v, FailoverRequest(ME, "pg2"), peers()) is None
        assert "does not match" in (switchover_problem(v, FailoverRequest("pg3"), peers()) or "")
        assert "already the leader" in (switchover_problem(v, FailoverRequest(ME, ME), peers())
                                        or "")
        nobody = {"pg2": None, "pg3": None}
        assert "no good candidates" in (switchover_problem(v, FailoverRequest(ME), nobody)
                                        or "")
        alone = replace(v, members={ME: v.members[ME]})
        assert "except leader" in (switchover_problem(alone, FailoverRequest(ME), {}) or "")
        # scheduled: only names are checked now, health when it comes due
        assert switchover_problem(v, FailoverRequest(ME, "pg2", WALL + 60), nobody,
                                  check_health=False) is None
        # manual failover without a leader: lag is not held against the candidate
        leaderless = cluster(leader=None)
        far = {"pg2": peer("pg2", wal=POS - 50 * MB)}
        assert switchover_problem(leaderless, FailoverRequest(None, "pg2"), far) is None


class TestLeaderSide:
    def test_due_switchover_hands_over_to_the_named_candidate(self) -> None:
        v = cluster(failover={"leader": ME, "member": "pg2"})
        lo = local(primary_pg(), wall_time=WALL, peers=peers())
        assert needs_peer_statuses(v, lo)
        d = decide(v, lo, NOW)
        assert d.reason is Reason.SWITCHOVER
        assert d.actions == (HandOver(up("pg2")),)

    def test_switchover_to_any_picks_the_healthiest(self) -> None:
        v = cluster(failover={"leader": ME})
        d = decide(v, local(primary_pg(), wall_time=WALL, peers=peers()), NOW)
        assert d.actions == (HandOver(up("pg2")),)

    def test_not_due_yet_keeps_leading(self) -> None:
        v = cluster(failover=FailoverRequest(ME, "pg2", WALL + 30).to_json())
        lo = local(primary_pg(), wall_time=WALL)
        assert not needs_peer_statuses(v, lo)
        assert decide(v, lo, NOW).reason is Reason.LEADER_HEALTHY
        later = replace(lo, wall_time=WALL + 31, peers=peers())
        assert decide(v, later, NOW).reason is Reason.SWITCHOVER

    @pytest.mark.parametrize("failover,peer_map", [
        ({"leader": "pg3", "member": "pg2"}, peers()),  # names another leader: stale
        ({"leader": ME, "member": "pg2"}, peers(pg2=None)),  # candidate unreachable
        ({"leader": ME, "member": "pg2"}, peers(pg2=peer("pg2", wal=POS - 5 * MB))),  # lags
        ({"leader": ME}, {"pg2": None, "pg3": None}),  # nobody fit
        ({"garbage": True}, peers()),  # unusable key
    ])
    def test_impossible_requests_are_removed(self, failover: dict[str, Any],
                                             peer_map: dict[str, Any]) -> None:
        v = cluster(failover=failover)
        d = decide(v, local(primary_pg(), wall_time=WALL, peers=peer_map), NOW)
        assert d.reason is Reason.SWITCHOVER_IMPOSSIBLE
        assert d.actions == (ClearFailover(),)

    def test_fail_closed_wins_over_a_switchover(self) -> None:
        v = cluster(failover={"leader": ME, "member": "pg2"})
        d = decide(v, local(primary_pg(), wall_time=WALL, peers=peers(),
                            lease_deadline=NOW - 1), NOW)
        assert d.reason is Reason.LEASE_UNCONFIRMED


class TestReplicaSide:
    def test_named_candidate_takes_the_free_lock_without_comparing_positions(self) -> None:
        v = cluster(leader=None, failover={"leader": "pg3", "member": ME})
        ahead = {"pg2": peer("pg2", wal=POS + 500), "pg3": peer("pg3", state="stopped",
                                                                role="primary")}
        d = decide(v, local(replica_pg(), wall_time=WALL, peers=ahead), NOW)
        assert d.reason is Reason.SWITCHOVER_CANDIDATE
        assert kinds(d)[:3] == [AcquireLeader, Promote, ClearFailover]

    def test_switchover_candidate_still_honours_the_lag_limit(self) -> None:
        # the leader died before handing over: a planned switchover must not lose data
        v = cluster(leader=None, failover={"leader": "pg3", "member": ME}, optime=POS + 5 * MB)
        d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers()), NOW)
        assert d.reason is Reason.CANDIDATE_REFUSED_LAG and not d.actions
        # an operator's failover (no leader named) accepts the loss
        v = replace(v, failover={"member": ME})
        assert decide(v, local(replica_pg(), wall_time=WALL, peers=peers()),
                      NOW).reason is Reason.SWITCHOVER_CANDIDATE

    def test_candidate_never_promotes_next_to_a_running_primary(self) -> None:
        v = cluster(leader=None, failover={"member": ME})
        live = peers(pg3=peer("pg3", role="primary"))
        d = decide(v, local(replica_pg(), wall_time=WALL, peers=live), NOW)
        assert d.reason is Reason.CANDIDATE_REFUSED_PRIMARY_RUNNING and not d.actions

    def test_nofailover_candidate_never_takes_the_lock(self) -> None:
        v = cluster(leader=None, failover={"member": ME})
        lo = local(replica_pg(), wall_time=WALL, peers=peers(), tags=Tags(nofailover=True))
        assert decide(v, lo, NOW).reason is Reason.CANDIDATE_REFUSED_NOFAILOVER

    def test_others_stay_out_while_the_candidate_answers(self) -> None:
        v = cluster(leader=None, failover={"leader": "pg3", "member": "pg2"})
        d = decide(v, local(replica_pg(wal_position=POS + 100), wall_time=WALL,
                            peers=peers()), NOW)
        assert d.reason is Reason.SWITCHOVER_ELSEWHERE and not d.actions

    def test_others_race_when_the_candidate_is_gone_and_clear_the_request(self) -> None:
        v = cluster(leader=None, failover={"leader": "pg3", "member": "pg2"})
        d = decide(v, local(replica_pg(wal_position=POS + 100), wall_time=WALL,
                            peers=peers(pg2=None)), NOW)
        assert d.reason is Reason.RACE
        assert kinds(d)[:3] == [AcquireLeader, Promote, ClearFailover]


class TestRestartAndReinit:
    def test_restart_primary_holding_the_lock(self) -> None:
        d = decide(cluster(), local(primary_pg(), restart_requested=True), NOW)
        assert d.reason is Reason.RESTART
        assert d.actions == (RestartPostgres("primary"),)

    def test_restart_replica_keeps_its_upstream(self) -> None:
        v = cluster(leader="pg2")
        d = decide(v, local(replica_pg(upstream="pg2"), restart_requested=True), NOW)
        assert d.actions == (RestartPostgres("replica", up("pg2")),)

    def test_restart_never_makes_an_unlocked_primary_writable_again(self) -> None:
        v = cluster(leader="pg2")
        d = decide(v, local(primary_pg(), restart_requested=True), NOW)
        assert d.reason is Reason.OTHER_LEADER_DEMOTE

    def test_restart_runs_in_maintenance_mode(self) -> None:
        v = cluster(settings=HaSettings(pause=True))
        d = decide(v, local(primary_pg(), restart_requested=True), NOW)
        assert d.actions == (RestartPostgres("primary"),)

    def test_reinit_clones_from_the_leader_or_a_clonefrom_member(self) -> None:
        v = cluster(leader="pg2", pg3=Tags(clonefrom=True))
        d = decide(v, local(replica_pg(), reinit_requested=True), NOW)
        assert d.actions == (Reinitialize(up("pg3"), up("pg2")),)
        # from_leader: from the leader, and with pg_basebackup alone (the replica methods
        # configured are not used)
        d = decide(v, local(replica_pg(), reinit_requested=True, reinit_from_leader=True), NOW)
        assert d.actions == (Reinitialize(up("pg2"), up("pg2"), from_leader=True),)

    def test_reinit_refused_to_the_leader_and_without_one(self) -> None:
        d = decide(cluster(), local(primary_pg(), reinit_requested=True), NOW)
        assert d.reason is not Reason.REINITIALIZE
        d = decide(cluster(leader=None), local(replica_pg(), reinit_requested=True,
                                               peers=peers()), NOW)
        assert d.reason is not Reason.REINITIALIZE


class TestPaused:
    def test_switchover_to_a_named_candidate_works_in_pause(self) -> None:
        paused = HaSettings(pause=True)
        v = cluster(failover={"leader": ME, "member": "pg2"}, settings=paused)
        d = decide(v, local(primary_pg(), wall_time=WALL, peers=peers()), NOW)
        assert d.actions == (HandOver(up("pg2")),)
        v = cluster(leader=None, failover={"leader": "pg2", "member": ME}, settings=paused)
        d = decide(v, local(replica_pg(), wall_time=WALL, peers=peers()), NOW)
        assert kinds(d)[:3] == [AcquireLeader, Promote, ClearFailover]

    def test_switchover_without_candidate_is_refused_in_pause(self) -> None:
        v = cluster(failover={"leader": ME}, settings=HaSettings(pause=True))
        d = decide(v, local(primary_pg(), wall_time=WALL, peers=peers()), NOW)
        assert d.actions == (ClearFailover(),)

    def test_former_leader_rejoins_after_a_switchover_in_pause(self) -> None:
        v = view(member(ME), member("pg2", role="primary"), leader="pg2",
                 settings=HaSettings(pause=True))
        stopped = stopped_pg(stopped_by_agent=True)
        d = decide(v, local(stopped), NOW)
        assert d.reason is Reason.REJOIN and kinds(d) == [Rejoin]
        # a postmaster that died on its own is not restarted in pause
        assert decide(v, local(stopped_pg()), NOW).reason is Reason.PAUSED
