"""Why a member did or did not take the free lock (``pgha.core.explain``): the standings behind
real race and candidate decisions, taken by the real ``decide()`` on the snapshots the race
tests use."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.unit.test_core_race import race_view
from tests.unit.test_decide import MB, ME, NOW, POS, SAMPLES, local, peer, replica_pg
from tests.unit.test_decide_operator import WALL, cluster, peers

from pgha.core.decide import decide
from pgha.core.decision import RACE_REFUSALS, Reason
from pgha.core.explain import CODES, Standing, explain, size_text
from pgha.core.model import ClusterView, HaSettings, LocalState, SyncKey, SyncMode, Tags


def standings(v: ClusterView, loc: LocalState) -> tuple[Reason, dict[str, Standing]]:
    d = decide(v, loc, NOW)
    out = explain(v, loc, d)
    assert out[0].name == ME  # this member first, then the others by name
    assert [s.name for s in out[1:]] == sorted(s.name for s in out[1:])
    return d.reason, {s.name: s for s in out}


def both_peers(**over: Any) -> dict[str, Any]:
    out = {"pg2": peer("pg2", wal=POS - 10), "pg3": peer("pg3", wal=POS - 1000)}
    out.update(over)
    return out


def test_own_lag_over_the_limit_names_bytes_and_limit() -> None:
    reason, s = standings(race_view(), local(replica_pg(wal_position=POS - 3 * MB),
                                             peers=both_peers()))
    assert reason is Reason.RACE_REFUSED_LAG
    me = s[ME]
    assert (me.code, me.summary, me.lag, me.limit, me.eligible) == (
        "lag", "lag 3 MB > 1 MB", 3 * MB, MB, False)
    assert "maximum_lag_on_failover" in me.detail
    # the peers are judged by the same rules: pg2 is within the limit and ahead of us
    assert s["pg2"].code == "ahead" and s["pg2"].eligible


def test_a_lagging_peer_is_named_with_its_lag() -> None:
    reason, s = standings(race_view(), local(replica_pg(), peers=both_peers(
        pg3=peer("pg3", wal=POS - 5 * MB))))
    assert reason is Reason.RACE
    assert s[ME].code == "eligible" and s[ME].eligible
    assert (s["pg3"].code, s["pg3"].summary, s["pg3"].lag) == ("lag", "lag 5 MB > 1 MB", 5 * MB)
    assert s["pg2"].code == "behind" and s["pg2"].eligible


def test_nofailover_self_and_peer() -> None:
    reason, s = standings(race_view(), local(replica_pg(), tags=Tags(nofailover=True),
                                             peers=both_peers()))
    assert reason is Reason.RACE_REFUSED_NOFAILOVER
    assert (s[ME].code, s[ME].summary) == ("nofailover", "nofailover")
    # a nofailover peer ahead of us does not keep us out; it is named for its tag
    reason, s = standings(race_view(), local(replica_pg(), peers=both_peers(
        pg2=peer("pg2", wal=POS + 100, tags=Tags(nofailover=True)))))
    assert reason is Reason.RACE
    assert (s["pg2"].code, s["pg2"].eligible) == ("nofailover", False)


def test_unreachable_peer_and_vanished_leader() -> None:
    v = replace(race_view(), status_leader=("pg0", "postgres://pg0.example:5432/postgres"))
    reason, s = standings(v, local(replica_pg(), peers=both_peers(pg2=None)))
    assert reason is Reason.RACE  # unreachable peers are no refusal
    assert (s["pg2"].code, s["pg2"].summary) == ("unreachable", "unreachable")
    assert "neither its agent nor its PostgreSQL answered" in s["pg2"].detail
    # the last leader: its member key expired with it, its server did not answer
    assert s["pg0"].code == "unreachable" and "not in the DCS" in s["pg0"].detail


def test_silent_agent_with_a_writable_primary() -> None:
    silent = replace(peer("pg2", role="primary", wal=POS - 10 * MB), agent_silent=True)
    reason, s = standings(race_view(), local(replica_pg(), peers=both_peers(pg2=silent)))
    assert reason is Reason.RACE_REFUSED_PRIMARY_RUNNING
    assert s[ME].code == "primary_running"
    assert (s["pg2"].code, s["pg2"].summary) == ("primary_running",
                                                 "running primary (agent silent)")


def test_ahead_peer() -> None:
    reason, s = standings(race_view(), local(replica_pg(), peers=both_peers(
        pg3=peer("pg3", wal=POS + 0x100))))
    assert reason is Reason.RACE_REFUSED_PEER_AHEAD
    assert s[ME].code == "peer_ahead" and "pg3 is ahead" in s[ME].detail
    assert (s["pg3"].code, s["pg3"].summary) == ("ahead", "ahead (0/5000100 > 0/5000000)")


def test_priority_tie_break() -> None:
    reason, s = standings(race_view(), local(replica_pg(), peers=both_peers(
        pg2=peer("pg2", wal=POS, tags=Tags(failover_priority=3)))))
    assert reason is Reason.RACE_REFUSED_PEER_PRIORITY
    assert s[ME].code == "peer_priority"
    assert (s["pg2"].code, s["pg2"].summary, s["pg2"].priority) == (
        "higher_priority", "higher failover_priority (3 > 1)", 3)
    # the same position and a lower priority: we win the tie
    reason, s = standings(race_view(), local(replica_pg(), tags=Tags(failover_priority=5),
                                             peers=both_peers(pg2=peer("pg2", wal=POS))))
    assert reason is Reason.RACE and s["pg2"].code == "behind"


def test_synchronous_mode_not_in_the_sync_set() -> None:
    v = replace(race_view(), settings=HaSettings(synchronous_mode=SyncMode.ON),
                sync=SyncKey("pg9", frozenset({"pg2"}), 0))
    reason, s = standings(v, local(replica_pg(), peers=both_peers()))
    assert reason is Reason.RACE_REFUSED_NOT_SYNC
    assert (s[ME].code, s[ME].summary) == ("not_sync", "not in the synchronous set")
    assert s["pg2"].code == "behind" and s["pg2"].eligible  # the voter: it may take over
    assert s["pg3"].code == "not_sync"


def test_quorum_votes_are_judged_from_each_member_as_far_as_we_know() -> None:
    v = replace(race_view(), settings=HaSettings(synchronous_mode=SyncMode.QUORUM),
                sync=SyncKey("pg9", frozenset({ME, "pg2"}), 1))
    reason, s = standings(v, local(replica_pg(), peers=both_peers()))
    assert reason is Reason.RACE  # pg2 is not ahead: its vote is ours
    # pg2 would need our vote, and we are ahead of it
    assert (s["pg2"].code, s["pg2"].summary) == ("quorum", "too few quorum votes")


def test_named_candidate_is_not_compared_by_position() -> None:
    v = cluster(leader=None, failover={"leader": "pg3", "member": ME}, optime=POS)
    loc = local(replica_pg(wal_position=POS - 5 * MB), wall_time=WALL,
                peers=peers(pg2=peer("pg2", wal=POS + 1), pg3=None))
    reason, s = standings(v, loc)
    assert reason is Reason.CANDIDATE_REFUSED_LAG
    assert (s[ME].code, s[ME].summary) == ("lag", "lag 5 MB > 1 MB")
    assert s["pg2"].code == "not_compared" and s["pg3"].code == "unreachable"
    reason, s = standings(v, replace(loc, pg=replica_pg()))
    assert reason is Reason.SWITCHOVER_CANDIDATE and s[ME].code == "eligible"


def test_other_decisions_have_no_standings() -> None:
    v = cluster(leader="pg2", optime=POS)
    d = decide(v, local(replica_pg()), NOW)
    assert d.reason not in RACE_REFUSALS and explain(v, local(replica_pg()), d) == ()


@pytest.mark.parametrize(("n", "text"), [(3 * MB, "3 MB"), (MB + MB // 2, "1.5 MB"),
                                         (16384, "16 kB"), (100, "100 bytes")])
def test_size_text(n: int, text: str) -> None:
    assert size_text(n) == text


def test_standings_agree_with_every_sampled_decision() -> None:
    """On the random snapshots of test_decide: this member is eligible exactly when it takes
    the lock; a refusal because of a peer names that peer with the matching code; every code
    is a known one."""
    seen = 0
    by_peer = {Reason.RACE_REFUSED_PEER_AHEAD: "ahead",
               Reason.RACE_REFUSED_PEER_PRIORITY: "higher_priority",
               Reason.RACE_REFUSED_PRIMARY_RUNNING: "primary_running"}
    for v, loc in SAMPLES:
        if v is None:
            continue
        d = decide(v, loc, NOW)
        out = explain(v, loc, d)
        if not out:
            continue
        seen += 1
        assert out[0].eligible is (d.reason in (Reason.RACE, Reason.SWITCHOVER_CANDIDATE))
        assert all(s.code in CODES for s in out), out
        if d.reason in by_peer:
            culprits = [s for s in out[1:] if d.message.startswith(
                (f"{s.name} ", f"primary {s.name} "))]
            assert culprits and culprits[0].code == by_peer[d.reason], (d, out)
    assert seen >= 10
