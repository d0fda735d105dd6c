"""Refusals of a free leader lock (``pgha.core.race`` and the named candidate's in
``pgha.core.operator``): one reason code per rule, all of them in ``RACE_REFUSALS``, never with
an action. The scenarios themselves are in ``test_decide.py`` / ``test_decide_operator.py``."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.test_decide import ME, NOW, POS, SAMPLES, local, peer, replica_pg
from tests.unit.test_decide_operator import WALL, cluster, peers

from pgha.core.decide import decide
from pgha.core.decision import RACE_REFUSALS, Reason
from pgha.core.model import ClusterView, HaSettings, HistoryEntry, SyncKey, SyncMode, Tags
from pgha.core.race import cluster_timeline, race_refusal


def test_every_refusal_code_is_a_race_refusal() -> None:
    refusals = {r for r in Reason
                if r.name.startswith(("RACE_REFUSED_", "CANDIDATE_REFUSED_"))}
    assert refusals == RACE_REFUSALS
    assert Reason.RACE not in RACE_REFUSALS and Reason.SWITCHOVER_ELSEWHERE not in RACE_REFUSALS


def test_reason_values_are_snake_case_and_unique() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    for value in values:
        assert value == value.lower() and " " not in value and "-" not in value


def test_refusals_never_carry_actions() -> None:
    seen = set()
    for v, loc in SAMPLES:
        d = decide(v, loc, NOW)
        if d.reason in RACE_REFUSALS:
            seen.add(d.reason)
            assert d.actions == (), (v, loc)
    assert len(seen) >= 4  # the random samples reach several of them


def race_view(**kw: object) -> ClusterView:
    return replace(cluster(leader=None), optime=POS, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "reason", "words"), [
    ({"tags": Tags(nofailover=True)}, Reason.RACE_REFUSED_NOFAILOVER, "nofailover"),
    ({"failsafe_primary": "pg3"}, Reason.RACE_REFUSED_FAILSAFE_PRIMARY_ALIVE, "pg3"),
    ({"pg": replica_pg(wal_position=None)}, Reason.RACE_REFUSED_POSITION_UNKNOWN, "unknown"),
    ({"pg": replica_pg(wal_position=POS - 2 * 1048576)}, Reason.RACE_REFUSED_LAG,
     "maximum_lag_on_failover"),
    ({"peers": {"pg2": peer("pg2", role="primary")}}, Reason.RACE_REFUSED_PRIMARY_RUNNING,
     "pg2"),
    ({"peers": {"pg2": replace(peer("pg2", role="primary", wal=POS - 10 * 1048576),
                               agent_silent=True)}},
     Reason.RACE_REFUSED_PRIMARY_RUNNING, "its agent does not answer"),
    ({"peers": {"pg2": peer("pg2", wal=POS + 1)}}, Reason.RACE_REFUSED_PEER_AHEAD, "ahead"),
    ({"peers": {"pg2": peer("pg2", wal=POS, tags=Tags(failover_priority=2))}},
     Reason.RACE_REFUSED_PEER_PRIORITY, "failover_priority"),
])
def test_race_refusal_codes(kw: dict[str, object], reason: Reason, words: str) -> None:
    kw = dict(kw)
    pg = kw.pop("pg", replica_pg())
    loc = local(pg, **kw)  # type: ignore[arg-type]
    refusal = race_refusal(race_view(), loc)
    assert refusal is not None and refusal.reason is reason and words in refusal.message
    assert decide(race_view(), loc, NOW) == refusal


def test_timeline_refusal_needs_check_timeline() -> None:
    v = replace(race_view(), history=(HistoryEntry(1, POS - 1),))
    assert cluster_timeline(v) == 2
    assert race_refusal(v, local(replica_pg())) is None
    v = replace(v, settings=HaSettings(check_timeline=True))
    refusal = race_refusal(v, local(replica_pg()))
    assert refusal is not None and refusal.reason is Reason.RACE_REFUSED_TIMELINE_BEHIND


def test_unreachable_peers_are_no_refusal() -> None:
    assert race_refusal(race_view(), local(replica_pg(), peers={"pg2": None})) is None


@pytest.mark.parametrize(("failover", "kw", "reason"), [
    ({"member": ME}, {"tags": Tags(nofailover=True)}, Reason.CANDIDATE_REFUSED_NOFAILOVER),
    ({"leader": "pg3", "member": ME}, {"pg": replica_pg(wal_position=POS - 5 * 1048576)},
     Reason.CANDIDATE_REFUSED_LAG),
    ({"member": ME}, {"failsafe_primary": "pg3"},
     Reason.CANDIDATE_REFUSED_FAILSAFE_PRIMARY_ALIVE),
    ({"member": ME}, {"peers": peers(pg3=peer("pg3", role="primary"))},
     Reason.CANDIDATE_REFUSED_PRIMARY_RUNNING),
])
@pytest.mark.parametrize("paused", [False, True])
def test_candidate_refusal_codes(failover: dict[str, str], kw: dict[str, object],
                                 reason: Reason, paused: bool) -> None:
    v = cluster(leader=None, failover=failover, optime=POS,
                settings=HaSettings(pause=paused))
    kw = {"peers": peers(), **kw}
    pg = kw.pop("pg", replica_pg())
    d = decide(v, local(pg, wall_time=WALL, **kw), NOW)  # type: ignore[arg-type]
    assert d.reason is reason and d.actions == ()
    assert d.message.startswith("paused: ") is paused


@pytest.mark.parametrize(("mode", "voters", "quorum", "key_leader"), [
    # the wedge the chaos campaign found (quorum mode): the former primary pg2 died, ME took
    # the lock and the key over (no voter), died before promoting, came back; pg2, ahead with
    # WAL no standby acknowledged and outside the key, must not keep ME out for good
    (SyncMode.QUORUM, (), 0, ME),
    # mode on: an asynchronous replica that received more WAL than the synchronous standby
    # must not keep the standby out of the race (it may not take the lock itself)
    (SyncMode.ON, (ME,), 0, "pg9"),
])
def test_members_outside_the_sync_key_are_not_compared(
        mode: SyncMode, voters: tuple[str, ...], quorum: int, key_leader: str) -> None:
    settings = HaSettings(synchronous_mode=mode)
    v = replace(race_view(), settings=settings,
                sync=SyncKey(key_leader, frozenset(voters), quorum))
    ahead = {"pg2": peer("pg2", wal=POS + 336)}
    assert race_refusal(v, local(replica_pg(), peers=ahead)) is None
    # a voter that is ahead is still compared
    v2 = replace(v, sync=SyncKey(key_leader, frozenset(voters) | {"pg2"}, quorum))
    refusal = race_refusal(v2, local(replica_pg(), peers=ahead))
    assert refusal is not None and refusal.reason in (Reason.RACE_REFUSED_PEER_AHEAD,
                                                      Reason.RACE_REFUSED_QUORUM)
    # and a member outside the key that runs as primary still keeps everyone out
    running = {"pg2": peer("pg2", role="primary", wal=POS - 1)}
    refusal = race_refusal(v, local(replica_pg(), peers=running))
    assert refusal is not None and refusal.reason is Reason.RACE_REFUSED_PRIMARY_RUNNING
