"""The pure synchronous-replication rules (:mod:`pgha.core.sync`) and how ``decide`` uses them.

Real values throughout; the randomized test walks the leader's plan through many changes of the
standbys and checks that every pair of ``synchronous_standby_names`` and ``sync`` key that can
be in force at once (either write may be applied first) is safe.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from tests.unit.test_decide import POS, local, member, peer, primary_pg, replica_pg, view

from pgha.core.actions import (
    AcquireLeader,
    Action,
    ClearSyncKey,
    Promote,
    PublishStatus,
    SetSyncStandbys,
    SyncSlots,
    WriteSyncKey,
)
from pgha.core.decide import Reason, decide
from pgha.core.model import (
    ClusterView,
    HaSettings,
    Leader,
    LocalState,
    Member,
    PeerStatus,
    StandbyConn,
    SyncKey,
    Tags,
)
from pgha.core.switchover import FailoverRequest, switchover_problem
from pgha.core.sync import (
    PLACEHOLDER,
    SyncNames,
    before_promote,
    failover_refusal,
    is_safe,
    parse_sync_names,
    plan,
)

ME = "pg1"


def sync_view(*members: Member, mode: Any = True, key: SyncKey | None = None,
              leader: str | None = ME, strict: bool = False, node_count: int = 1,
              max_lag_syncnode: int = -1) -> ClusterView:
    config = {"synchronous_mode": mode, "synchronous_mode_strict": strict,
              "synchronous_node_count": node_count,
              "maximum_lag_on_syncnode": max_lag_syncnode}
    v = view(member(ME, role="primary"), *members, leader=leader, config=config,
             settings=HaSettings.from_config(config))
    return replace(v, sync=key)


def conn(name: str, flush: int = POS, state: str = "streaming",
         sync_state: str = "async") -> StandbyConn:
    return StandbyConn(name, state, sync_state, flush)


def leader_local(*standbys: StandbyConn, names: str = "", since: int | None = POS,
                 managed: bool = True, **kw: Any) -> LocalState:
    return local(primary_pg(standbys=standbys, sync_standby_names=names,
                            sync_names_since=since, sync_managed=managed), **kw)


def key(*voters: str, quorum: int = 0, leader: str = ME) -> SyncKey:
    return SyncKey(leader, frozenset(voters), quorum)


# --------------------------------------------------------------------------- the values


@pytest.mark.parametrize(("text", "names", "num", "quorum"), [
    ("", (), 0, False),
    ("pg2", ("pg2",), 1, False),
    ("pg2, pg3", ("pg2", "pg3"), 1, False),
    ("2 (pg2,pg3)", ("pg2", "pg3"), 2, False),
    ("FIRST 1 (pg2, \"Node-3\")", ("pg2", "Node-3"), 1, False),
    ("any 2 (a,b,c)", ("a", "b", "c"), 2, True),
    ('"a ""b"""', ('a "b"',), 1, False),
    ("*", ("*",), 1, False),
])
def test_synchronous_standby_names_are_parsed_as_postgresql_does(
        text: str, names: tuple[str, ...], num: int, quorum: bool) -> None:
    assert parse_sync_names(text) == SyncNames(names, num, quorum)


def test_values_render_and_parse_back() -> None:
    for value in (SyncNames(("pg2",), 1), SyncNames(("pg2", "node-3"), 2),
                  SyncNames(("a", "b", "c"), 1, True), SyncNames((PLACEHOLDER,), 1)):
        assert parse_sync_names(value.render()) == value
    assert SyncNames(("node-3",), 1).render() == 'FIRST 1 ("node-3")'
    assert SyncNames(("a", "b"), 1, True).render() == "ANY 1 (a,b)"
    assert SyncNames().render() == ""


@pytest.mark.parametrize(("pg", "voters", "quorum", "safe"), [
    ("FIRST 1 (a)", {"a"}, 0, True),
    ("FIRST 2 (a,b)", {"a", "b"}, 0, True),
    ("FIRST 1 (a,b)", {"a"}, 0, False),  # b alone may have acknowledged
    ("FIRST 1 (a)", {"a", "b"}, 0, False),  # b is not waited for
    ("", {"a"}, 0, False),  # nothing protected, yet a could lead
    ("", set(), 0, True),
    ("ANY 1 (a,b)", {"a", "b"}, 1, True),
    ("ANY 1 (a,b)", {"a", "b"}, 0, False),
    ("ANY 2 (a,b,c)", {"a", "b", "c"}, 1, True),
    ("ANY 1 (a,b,c)", {"a", "b", "c"}, 1, False),
    ("ANY 2 (a,b,c)", {"a", "b"}, 1, True),
    ("ANY 2 (a,b,c)", {"a", "b", "d"}, 1, False),  # d was never waited for
    ("ANY 1 (a,b)", {"a"}, 1, True),  # nobody can gather two votes: unavailable, not unsafe
    ("*", {"a"}, 0, False),  # '*': any standby may be the one that acknowledged
])
def test_is_safe(pg: str, voters: set[str], quorum: int, safe: bool) -> None:
    assert is_safe(parse_sync_names(pg), voters, quorum) is safe


# --------------------------------------------------------------------------- plan: mode on


def test_a_standby_is_named_in_postgresql_before_it_enters_the_key() -> None:
    v = sync_view(member("pg2"), member("pg3"))
    p = plan(v, leader_local(conn("pg2"), conn("pg3", flush=POS - 100)))
    assert p.actions == (WriteSyncKey((), 0), SetSyncStandbys("FIRST 1 (pg2)"))
    assert p.pending is not None


def test_it_joins_the_key_once_postgresql_waited_for_it_since_a_position_it_has() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key())
    behind = plan(v, leader_local(conn("pg2", flush=POS - 1, sync_state="sync"),
                                  names="FIRST 1 (pg2)", since=POS))
    assert behind.actions == () and behind.pending is not None
    caught_up = plan(v, leader_local(conn("pg2", flush=POS, sync_state="sync"),
                                     names="FIRST 1 (pg2)", since=POS))
    assert caught_up.actions == (WriteSyncKey(("pg2",), 0),) and caught_up.pending is None


def test_a_settled_leader_does_nothing() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key("pg2"))
    p = plan(v, leader_local(conn("pg2", sync_state="sync"), conn("pg3"),
                             names="FIRST 1 (pg2)"))
    assert p.actions == () and p.pending is None


def test_a_gone_standby_leaves_the_key_before_postgresql_stops_waiting() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key("pg2"))
    p = plan(v, leader_local(conn("pg3"), names="FIRST 1 (pg2)"))
    assert p.actions == (WriteSyncKey((), 0), SetSyncStandbys("FIRST 1 (pg3)"))


def test_without_any_standby_non_strict_goes_asynchronous_after_emptying_the_key() -> None:
    v = sync_view(member("pg2"), key=key("pg2"))
    p = plan(v, leader_local(names="FIRST 1 (pg2)"))
    assert p.actions == (WriteSyncKey((), 0), SetSyncStandbys(""))


def test_strict_keeps_the_names_and_the_key_when_no_standby_is_left() -> None:
    v = sync_view(member("pg2"), key=key("pg2"), strict=True)
    p = plan(v, leader_local(names="FIRST 1 (pg2)"))
    assert p.actions == ()


def test_strict_without_anyone_ever_names_the_placeholder() -> None:
    v = sync_view(member("pg2"), key=key(), strict=True)
    p = plan(v, leader_local(names=""))
    assert p.actions == (SetSyncStandbys(f"FIRST 1 ({PLACEHOLDER})"),)
    settled = plan(v, leader_local(names=f"FIRST 1 ({PLACEHOLDER})"))
    assert settled.actions == ()


def test_nosync_priority_zero_nostream_and_lagging_standbys_are_never_synchronous() -> None:
    v = sync_view(member("pg2", tags=Tags(nosync=True)), member("pg3", tags=Tags(sync_priority=0)),
                  member("pg4", tags=Tags(nostream=True)), member("pg5"), member("pg6"),
                  max_lag_syncnode=1000)
    p = plan(v, leader_local(conn("pg2"), conn("pg3"), conn("pg4"), conn("pg5", flush=POS - 5000),
                             conn("pg6", flush=POS - 10), conn("stranger")))
    assert SetSyncStandbys("FIRST 1 (pg6)") in p.actions


def test_higher_sync_priority_first_then_the_current_voter_then_the_most_advanced() -> None:
    v = sync_view(member("pg2"), member("pg3", tags=Tags(sync_priority=5)), member("pg4"),
                  key=key("pg4"), node_count=2)
    p = plan(v, leader_local(conn("pg2", flush=POS), conn("pg3", flush=POS - 50),
                             conn("pg4", flush=POS - 100, sync_state="sync"),
                             names="FIRST 1 (pg4)"))
    assert SetSyncStandbys("FIRST 2 (pg3,pg4)") in p.actions


def test_two_synchronous_standbys() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key(), node_count=2)
    p = plan(v, leader_local(conn("pg2"), conn("pg3")))
    assert p.actions == (SetSyncStandbys("FIRST 2 (pg2,pg3)"),)
    p = plan(v, leader_local(conn("pg2", sync_state="sync"), conn("pg3", sync_state="sync"),
                             names="FIRST 2 (pg2,pg3)"))
    assert p.actions == (WriteSyncKey(("pg2", "pg3"), 0),)


def test_a_key_written_by_another_leader_is_taken_over_with_no_voter_first() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key("pg1", "pg3", leader="pg2"))
    p = plan(v, leader_local(conn("pg3", sync_state="sync", flush=POS - 1),
                             names="FIRST 1 (pg3)"))
    assert p.actions == (WriteSyncKey((), 0),)  # pg3 not caught up since we saw the value
    p = plan(v, leader_local(conn("pg3", sync_state="sync"), names="FIRST 1 (pg3)"))
    assert p.actions == (WriteSyncKey(("pg3",), 0),)


def test_mode_off_deletes_the_key_then_gives_the_parameter_back() -> None:
    v = sync_view(member("pg2"), mode="off", key=key("pg2"))
    assert plan(v, leader_local(conn("pg2"), names="FIRST 1 (pg2)")).actions == (
        ClearSyncKey(), SetSyncStandbys(None))
    v = sync_view(member("pg2"), mode=False)
    assert plan(v, leader_local(conn("pg2"), managed=False)).actions == ()


# --------------------------------------------------------------------------- plan: quorum


def test_quorum_mode_raises_num_before_the_quorum_falls() -> None:
    v = sync_view(member("pg2"), member("pg3"), mode="quorum", key=key())
    first = plan(v, leader_local(conn("pg2"), conn("pg3")))
    # no voter yet, quorum 0: every listed standby must acknowledge until they are voters
    assert first.actions == (SetSyncStandbys("ANY 2 (pg2,pg3)"),)
    joined = plan(v, leader_local(conn("pg2", sync_state="quorum"),
                                  conn("pg3", sync_state="quorum"), names="ANY 2 (pg2,pg3)"))
    assert joined.actions == (WriteSyncKey(("pg2", "pg3"), 1),)
    v = sync_view(member("pg2"), member("pg3"), mode="quorum", key=key("pg2", "pg3", quorum=1))
    lowered = plan(v, leader_local(conn("pg2", sync_state="quorum"),
                                   conn("pg3", sync_state="quorum"), names="ANY 2 (pg2,pg3)"))
    assert lowered.actions == (SetSyncStandbys("ANY 1 (pg2,pg3)"),)
    settled = plan(v, leader_local(conn("pg2", sync_state="quorum"),
                                   conn("pg3", sync_state="quorum"), names="ANY 1 (pg2,pg3)"))
    assert settled.actions == () and settled.pending is None


def test_quorum_node_count_two_of_three() -> None:
    v = sync_view(member("pg2"), member("pg3"), member("pg4"), mode="quorum",
                  key=key("pg2", "pg3", "pg4", quorum=2), node_count=2)
    standbys = [conn(n, sync_state="quorum") for n in ("pg2", "pg3", "pg4")]
    p = plan(v, leader_local(*standbys, names="ANY 1 (pg2,pg3,pg4)"))
    assert p.actions == (SetSyncStandbys("ANY 2 (pg2,pg3,pg4)"),)
    p = plan(v, leader_local(*standbys, names="ANY 2 (pg2,pg3,pg4)"))
    assert p.actions == (WriteSyncKey(("pg2", "pg3", "pg4"), 1),)


# --------------------------------------------------------------------------- the plan, walked


def _apply(state: dict[str, Any], action: Action, standbys: set[str]) -> None:
    """Carry out ``action`` on the modelled leader and check the pairs in force."""
    pg: SyncNames = state["pg"]
    if isinstance(action, WriteSyncKey):
        assert is_safe(pg, action.voters, action.quorum), (pg, action)
        joined = set(action.voters) - state["voters"]
        # a joining voter was waited for since a position it has (it flushed everything)
        assert joined <= state["confirmed"], (joined, state)
        state["voters"], state["quorum"] = set(action.voters), action.quorum
    elif isinstance(action, SetSyncStandbys):
        new = parse_sync_names(action.value)
        assert is_safe(new, state["voters"], state["quorum"]), (new, state)
        state["pg"] = new
        # PostgreSQL now waits for the new names: a standby counts as caught up from the
        # next observation on, when it has flushed the position of that moment
        state["confirmed"] = set()


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("mode", [True, "quorum"])
def test_every_pair_the_plan_goes_through_is_safe(seed: int, mode: Any) -> None:
    rng = random.Random(seed)
    names = ["pg2", "pg3", "pg4", "pg5"]
    state: dict[str, Any] = {"pg": SyncNames(), "voters": set(), "quorum": 0,
                             "confirmed": set()}
    strict = rng.random() < 0.3
    for _ in range(60):
        node_count = rng.choice([1, 1, 2, 3])
        up = {n for n in names if rng.random() < 0.7}
        v = sync_view(*(member(n) for n in names), mode=mode, strict=strict,
                      node_count=node_count,
                      key=key(*state["voters"], quorum=state["quorum"]))
        # a standby named since the last change has caught up with a probability
        folded = state["pg"].folded
        state["confirmed"] |= {n for n in up if n in folded and rng.random() < 0.6}
        standbys = [conn(n, flush=POS if n in state["confirmed"] else POS - 1) for n in sorted(up)]
        p = plan(v, leader_local(*standbys, names=state["pg"].render(), since=POS))
        for action in p.actions:
            _apply(state, action, up)
        assert is_safe(state["pg"], state["voters"], state["quorum"])
        assert not strict or not state["pg"].empty, state  # strict never empties the names
    # with every standby up and caught up, the plan settles on the target
    v_all = {n for n in names}
    for _ in range(8):
        v = sync_view(*(member(n) for n in names), mode=mode, strict=strict, node_count=1,
                      key=key(*state["voters"], quorum=state["quorum"]))
        state["confirmed"] |= set(state["pg"].folded) & v_all
        p = plan(v, leader_local(*(conn(n) for n in names), names=state["pg"].render(), since=POS))
        for action in p.actions:
            _apply(state, action, v_all)
    assert p.actions == () and p.pending is None, state
    assert state["voters"], state


# --------------------------------------------------------------------------- who may take over


def as_member(name: str, **kw: Any) -> LocalState:
    return replace(local(replica_pg(), **kw), name=name)


def replica_view(mode: Any, sync_key: SyncKey | None, *members: Member) -> ClusterView:
    config = {"synchronous_mode": mode}
    v = view(member("pg2"), member("pg3"), member("pg4"), *members, leader=None, config=config,
             settings=HaSettings.from_config(config))
    return replace(v, sync=sync_key)


def test_mode_on_only_a_voter_or_the_former_leader_may_take_over() -> None:
    v = replica_view(True, SyncKey("pg2", frozenset({"pg3"})))
    assert failover_refusal(v, local(replica_pg())) is not None  # pg1: async
    assert failover_refusal(v, as_member("pg3")) is None
    assert failover_refusal(v, as_member("pg2")) is None  # former leader
    assert failover_refusal(replace(v, sync=None), local(replica_pg())) is None  # no key yet


def test_quorum_needs_enough_voters_not_ahead() -> None:
    v = replica_view("quorum", SyncKey("pg4", frozenset({"pg1", "pg2", "pg3"}), quorum=1))
    alone = local(replica_pg(), peers={"pg2": None, "pg3": None})
    assert failover_refusal(v, alone) is not None
    seen = local(replica_pg(), peers={"pg2": peer("pg2", wal=POS), "pg3": None})
    assert failover_refusal(v, seen) is None
    ahead = local(replica_pg(), peers={"pg2": peer("pg2", wal=POS + 1), "pg3": None})
    assert failover_refusal(v, ahead) is not None
    # a non-voter needs quorum + 1 votes
    outsider = as_member("pg5", peers={"pg1": peer("pg1", wal=POS), "pg2": peer("pg2", wal=POS)})
    assert failover_refusal(v, outsider) is None
    outsider = replace(outsider, peers={"pg1": peer("pg1", wal=POS)})
    assert failover_refusal(v, outsider) is not None


def test_the_race_refuses_an_async_replica_with_its_reason_code() -> None:
    v = replica_view(True, SyncKey("pg4", frozenset({"pg3"})))
    d = decide(v, local(replica_pg(), peers={"pg2": None, "pg3": None, "pg4": None}), 0.0)
    assert d.reason is Reason.RACE_REFUSED_NOT_SYNC and d.actions == ()
    v = replica_view("quorum", SyncKey("pg4", frozenset({"pg1", "pg2", "pg3"}), quorum=2))
    d = decide(v, local(replica_pg(), peers={"pg2": peer("pg2"), "pg3": None, "pg4": None}), 0.0)
    assert d.reason is Reason.RACE_REFUSED_QUORUM


def test_the_former_leader_is_not_compared_in_synchronous_mode() -> None:
    v = replica_view(True, SyncKey("pg4", frozenset({"pg1"})))
    stopped_ahead = PeerStatus("pg4", "replica", "running", POS + 10**6, 1)
    d = decide(v, local(replica_pg(), peers={"pg2": None, "pg3": None, "pg4": stopped_ahead}),
               0.0)
    assert d.reason is Reason.RACE
    assert d.actions[:4] == (AcquireLeader(), WriteSyncKey((), 0), SetSyncStandbys(""),
                             Promote())


def test_before_promote() -> None:
    v = replica_view(True, SyncKey("pg4", frozenset({"pg1", "pg3"})))
    assert before_promote(v, local(replica_pg())) == (WriteSyncKey((), 0), SetSyncStandbys(""))
    assert before_promote(v, local(replica_pg(sync_standby_names=""))) == (WriteSyncKey((), 0),)
    strict_cfg = {"synchronous_mode": True, "synchronous_mode_strict": True}
    strict = replace(v, settings=HaSettings.from_config(strict_cfg))
    assert before_promote(strict, local(replica_pg())) == (
        WriteSyncKey((), 0), SetSyncStandbys("FIRST 1 (pg3,pg4)"))
    nobody = replace(strict, sync=SyncKey("pg1", frozenset()))
    assert before_promote(nobody, local(replica_pg())) == (
        WriteSyncKey((), 0), SetSyncStandbys(f"FIRST 1 ({PLACEHOLDER})"))
    managed = local(replica_pg(sync_managed=True, sync_standby_names=""))
    assert before_promote(v, managed) == (WriteSyncKey((), 0),)  # nothing to reload
    off = replica_view(False, None)
    assert before_promote(off, local(replica_pg(sync_managed=True))) == (SetSyncStandbys(None),)
    assert before_promote(off, local(replica_pg())) == ()


def test_switchover_only_to_a_synchronous_standby() -> None:
    v = sync_view(member("pg2"), member("pg3"), key=key("pg2"))
    peers = {"pg2": peer("pg2"), "pg3": peer("pg3")}
    assert switchover_problem(v, FailoverRequest(ME, "pg3"), peers) == \
        "candidate name does not match with sync_standby"
    assert switchover_problem(v, FailoverRequest(ME, "pg2"), peers) is None
    assert switchover_problem(v, FailoverRequest(None, "pg3"), peers) is None  # a failover
    empty = replace(v, sync=key())
    assert switchover_problem(empty, FailoverRequest(ME, None), peers) == \
        "can not find sync_standby"


def test_leader_housekeeping_publishes_first_then_sync_then_slots() -> None:
    v = replace(sync_view(member("pg2")), leader=Leader(ME, 1, "session-pg1"))
    local = leader_local(conn("pg2"))
    d = decide(v, replace(local, pg=replace(local.pg, slots=())), 0.0)
    assert isinstance(d.actions[0], PublishStatus)
    assert d.actions[1:3] == (WriteSyncKey((), 0), SetSyncStandbys("FIRST 1 (pg2)"))
    assert isinstance(d.actions[3], SyncSlots)
    assert d.reason is Reason.SYNC_PENDING


def test_primary_stop_timeout_bounds_a_clean_stop_in_synchronous_mode_only() -> None:
    from pgha.core.actions import ReleaseLeader, StopMode, StopPostgres
    cfg = {"synchronous_mode": True, "primary_stop_timeout": 7}
    v = replace(sync_view(member("pg2")), leader=Leader(ME, 1, "session-pg1"),
                settings=HaSettings.from_config(cfg))
    d = decide(v, replace(leader_local(), shutting_down=True), 0.0)
    assert d.actions == (StopPostgres(StopMode.FAST, 7.0), ReleaseLeader())
    off = replace(v, settings=HaSettings.from_config({**cfg, "synchronous_mode": False}))
    d = decide(off, replace(leader_local(), shutting_down=True), 0.0)
    assert d.actions == (StopPostgres(StopMode.FAST, None), ReleaseLeader())
