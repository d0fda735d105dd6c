"""The replication slot plan (:mod:`pgha.core.slots`) and the decisions that carry it out.

Topologies follow Patroni's permanent-slot, ignored-slot and nostream scenarios: four members
pg0 (leader), pg1, pg2 and pg3 cascading from pg2, with a permanent physical slot
``test_physical`` and a permanent logical slot ``test_logical``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_decide import NOW, POS, SYSID, member, primary_pg, replica_pg, session_of

from pgha.agent.commands import CommandHandler
from pgha.agent.observe import Observer
from pgha.config.dynamic import DynamicConfig
from pgha.core.actions import CopyLogicalSlots, PublishStatus, SlotSpec, SyncSlots, Upstream
from pgha.core.commands import PatchConfig
from pgha.core.decide import Reason, decide
from pgha.core.model import (
    ClusterView,
    HaSettings,
    Leader,
    LocalState,
    Member,
    ObservedSlot,
    PgState,
    Tags,
)
from pgha.core.slots import (
    IgnoreRule,
    config_problems,
    failsafe_slots,
    logical_to_copy,
    permanent_slots,
    slot_on_primary,
    slot_parameters,
    slot_plan,
    status_slots,
    sync_slots,
)
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

LOGICAL = SlotSpec("test_logical", "logical", "postgres", "test_decoding")
CONFIG: dict[str, Any] = {
    "slots": {"test_physical": 0, "pg3": None,
              "test_logical": {"type": "logical", "database": "postgres",
                               "plugin": "test_decoding"}},
}


def cluster(*extra: Member, config: dict[str, Any] | None = None, status: dict[str, int]
            | None = None, retain: tuple[str, ...] = (), settings: HaSettings | None = None,
            leader: str = "pg0") -> ClusterView:
    members = [member("pg0", role="primary"), member("pg1"), member("pg2"),
               member("pg3", tags=Tags(replicatefrom="pg2")), *extra]
    return ClusterView(
        initialize=SYSID, settings=settings or HaSettings(), config=CONFIG if config is None
        else config, leader=Leader(leader, 1, session_of(leader)),
        members={m.name: m for m in members}, optime=POS, status_slots=status or {},
        retain_slots=retain)


def me(name: str, pg: PgState | None = None, tags: Tags | None = None,
       **kw: Any) -> LocalState:
    return LocalState(name=name, tags=tags or Tags(), pg=pg or replica_pg(),
                      lease_deadline=NOW + 20, session_id=session_of(name), **kw)


def slots(*specs: tuple[str, str] | tuple[str, str, int] | ObservedSlot) -> tuple[
        ObservedSlot, ...]:
    out = []
    for item in specs:
        if isinstance(item, ObservedSlot):
            out.append(item)
        elif item[1] == "logical":
            out.append(ObservedSlot(item[0], "logical", "postgres", "test_decoding",
                                    position=item[2] if len(item) > 2 else 100))
        else:
            out.append(ObservedSlot(item[0], position=item[2] if len(item) > 2 else 100))
    return tuple(out)


# ------------------------------------------------------------------ which slots, where

def test_leader_keeps_member_and_permanent_slots() -> None:
    plan = slot_plan(cluster(), me("pg0", primary_pg()), NOW, leader=True)
    assert set(plan.wanted) == {"pg1", "pg2", "pg3", "test_physical", "test_logical"}
    assert plan.wanted["test_logical"] == LOGICAL
    assert plan.wanted["pg3"] == SlotSpec("pg3")  # a permanent slot named after a member


def test_every_replica_keeps_the_slots_of_all_other_members_and_the_permanent_ones() -> None:
    for name in ("pg1", "pg2", "pg3"):
        plan = slot_plan(cluster(), me(name, tags=cluster().members[name].tags), NOW, False)
        others = {"pg0", "pg1", "pg2", "pg3"} - {name}
        assert set(plan.wanted) == others | {"test_physical", "test_logical"}, name


def test_a_permanent_physical_slot_named_after_this_member_is_not_created_on_it() -> None:
    plan = slot_plan(cluster(), me("pg3", tags=Tags(replicatefrom="pg2")), NOW, False)
    assert "pg3" not in plan.wanted


def test_nofailover_member_keeps_only_slots_of_members_cascading_from_it() -> None:
    view = cluster()
    plan = slot_plan(view, me("pg2", tags=Tags(nofailover=True)), NOW, leader=False)
    assert set(plan.wanted) == {"pg3"}
    plan = slot_plan(view, me("pg1", tags=Tags(nofailover=True)), NOW, leader=False)
    assert plan.wanted == {}


def test_nostream_members_get_no_slot_and_keep_no_logical_copy() -> None:
    archive = member("pg4", tags=Tags(nostream=True))
    cascade = member("pg5", tags=Tags(replicatefrom="pg4"))
    view = cluster(archive, cascade)
    for name in ("pg0", "pg1"):
        assert "pg4" not in slot_plan(view, me(name), NOW, leader=name == "pg0").wanted
    archive_plan = slot_plan(view, me("pg4", tags=archive.tags), NOW, leader=False)
    assert "test_logical" not in archive_plan.wanted
    assert "test_physical" in archive_plan.wanted
    cascade_plan = slot_plan(view, me("pg5", tags=cascade.tags), NOW, leader=False)
    assert "test_logical" not in cascade_plan.wanted  # no feedback path to the primary
    assert slot_on_primary(view, "pg5", cascade.tags) is None
    assert slot_on_primary(view, "pg3", Tags(replicatefrom="pg2")) == "pg2"
    assert slot_on_primary(view, "pg1", Tags()) == "pg1"


def test_a_replicatefrom_loop_has_no_slot_on_the_primary() -> None:
    a, b = member("a", tags=Tags(replicatefrom="b")), member("b", tags=Tags(replicatefrom="a"))
    assert slot_on_primary(cluster(a, b), "a", a.tags) is None


def test_members_gone_are_retained_for_member_slots_ttl() -> None:
    view = cluster(settings=HaSettings(member_slots_ttl=600))
    seen = {"gone-recently": NOW - 599, "gone-long-ago": NOW - 600}
    plan = slot_plan(view, me("pg0", primary_pg(), member_seen=seen), NOW, leader=True)
    assert "gone_recently" in plan.wanted and "gone_long_ago" not in plan.wanted
    # a replica also keeps what the leader retains
    replica = slot_plan(replace(view, retain_slots=("pg9",)), me("pg1"), NOW, leader=False)
    assert "pg9" in replica.wanted


def test_member_slots_ttl_zero_keeps_only_the_members_streaming_from_us() -> None:
    view = cluster(settings=HaSettings(member_slots_ttl=0), config={})
    assert set(slot_plan(view, me("pg0", primary_pg()), NOW, True).wanted) == {"pg1", "pg2"}
    assert set(slot_plan(view, me("pg2"), NOW, False).wanted) == {"pg3"}
    assert slot_plan(view, me("pg1"), NOW, False).wanted == {}


def test_use_slots_off_touches_nothing() -> None:
    view = cluster(settings=HaSettings(use_slots=False))
    plan = slot_plan(view, me("pg0", primary_pg()), NOW, True)
    assert plan.wanted == {}
    assert sync_slots(plan, slots(("stray", "physical")), True, False) is None
    assert status_slots(view, me("pg0", primary_pg()), NOW) == ({}, ())
    assert slot_parameters(view, me("pg1"), NOW) == {}


# ------------------------------------------------------------------ reconciling

def test_leader_creates_missing_drops_unknown_and_keeps_active_and_ignored() -> None:
    config = {**CONFIG, "ignore_slots": [{"name": "unmanaged_slot_0", "database": "postgres",
                                          "plugin": "test_decoding", "type": "logical"},
                                         {"name": "unmanaged_slot_1", "plugin": "test_decoding"},
                                         {"name": "unmanaged_slot_3"}]}
    view = cluster(config=config)
    plan = slot_plan(view, me("pg0", primary_pg()), NOW, leader=True)
    found = slots(("pg1", "physical"), ("unmanaged_slot_0", "logical"),
                  ("unmanaged_slot_1", "logical"), ("unmanaged_slot_3", "logical"),
                  ("dummy_slot", "logical"), ("stray", "physical"),
                  ObservedSlot("busy", active=True))
    work = sync_slots(plan, found, primary=True, paused=False)
    assert work is not None
    assert work.drop == ("dummy_slot", "stray")
    assert {s.name for s in work.create} == {"pg2", "pg3", "test_physical", "test_logical"}
    assert LOGICAL in work.create
    assert work.advance == ()
    assert sync_slots(plan, found, primary=True, paused=True) == replace(work, drop=())


def test_an_ignored_slot_is_never_created_even_if_permanent() -> None:
    view = cluster(config={**CONFIG, "ignore_slots": [{"type": "logical"}]})
    plan = slot_plan(view, me("pg0", primary_pg()), NOW, leader=True)
    work = sync_slots(plan, (), primary=True, paused=False)
    assert work is not None and LOGICAL not in work.create


def test_a_slot_of_the_wrong_kind_or_lost_is_dropped_and_created_again() -> None:
    plan = slot_plan(cluster(), me("pg0", primary_pg()), NOW, leader=True)
    found = (ObservedSlot("test_logical", "logical", "postgres", "pgoutput"),
             ObservedSlot("pg1", lost=True), ObservedSlot("test_physical", "logical", "x", "y"))
    work = sync_slots(plan, found, primary=True, paused=False)
    assert work is not None
    assert set(work.drop) == {"test_logical", "pg1", "test_physical"}
    assert {"test_logical", "pg1", "test_physical"} <= {s.name for s in work.create}


def test_replica_advances_copies_to_the_published_positions_and_never_back() -> None:
    status = {"pg0": 900, "pg2": 800, "test_physical": 700, "test_logical": 600}
    view = cluster(status=status)
    plan = slot_plan(view, me("pg1"), NOW, leader=False)
    found = slots(("pg0", "physical", 100), ("pg2", "physical", 850), ("pg3", "physical", 10),
                  ("test_physical", "physical", 100), ("test_logical", "logical", 100))
    work = sync_slots(plan, found, primary=False, paused=False)
    assert work is not None
    # pg3 cascades from pg2: advanced to pg3's own position; pg2 already ahead: untouched
    assert work.advance == (("pg0", 900), ("pg3", POS), ("test_logical", 600),
                            ("test_physical", 700))
    assert work.create == () and work.drop == ()


def test_the_leader_advances_only_the_slots_of_cascading_members() -> None:
    plan = slot_plan(cluster(), me("pg0", primary_pg()), NOW, leader=True)
    assert plan.positions == {"pg3": POS}
    found = slots(("pg1", "physical", 1), ("pg2", "physical", 1), ("pg3", "physical", 1),
                  ("test_physical", "physical", 1), ("test_logical", "logical", 1))
    work = sync_slots(plan, found, primary=True, paused=False)
    assert work == SyncSlots(advance=(("pg3", POS),))


def test_replica_never_creates_a_logical_slot_it_copies_it_once_the_leader_has_it() -> None:
    plan = slot_plan(cluster(), me("pg1"), NOW, leader=False)
    work = sync_slots(plan, (), primary=False, paused=False)
    assert work is not None and all(s.type == "physical" for s in work.create)
    assert logical_to_copy(cluster(), plan, ()) == ()  # the leader has not published it yet
    published = cluster(status={"test_logical": 500})
    assert logical_to_copy(published, plan, ()) == (LOGICAL,)
    assert logical_to_copy(published, plan, slots(("test_logical", "logical"))) == ()


# ------------------------------------------------------------------ what the leader publishes

def test_status_lists_permanent_and_member_slots_and_retains_non_permanent_members() -> None:
    view = cluster()
    found = slots(("pg1", "physical", 11), ("pg2", "physical", 12), ("pg3", "physical", 13),
                  ("test_physical", "physical", 14), ("test_logical", "logical", 15),
                  ("unknown", "physical", 16))
    positions, retain = status_slots(view, me("pg0", primary_pg(slots=found)), NOW)
    assert positions == {"pg0": POS, "pg1": 11, "pg2": 12, "pg3": POS, "test_physical": 14,
                         "test_logical": 15}
    assert retain == ("pg0", "pg1", "pg2")  # pg3 is a permanent slot
    archive = cluster(member("pg4", tags=Tags(nostream=True)))
    assert status_slots(archive, me("pg0", primary_pg(slots=found)), NOW)[1] == retain


def test_failsafe_body_carries_every_slot_and_our_own_position() -> None:
    pg = primary_pg(slots=slots(("pg1", "physical", 5), ("test_logical", "logical", 6)))
    assert failsafe_slots(pg, "pg0") == {"pg1": 5, "test_logical": 6, "pg0": POS}


# ------------------------------------------------------------------ parameters

def test_logical_slots_need_wal_level_logical_and_feedback_on_replicas_and_their_parents() -> None:
    view = cluster()
    assert slot_parameters(view, me("pg1"), NOW) == {"wal_level": "logical",
                                                      "hot_standby_feedback": True}
    archive = member("pg4", tags=Tags(nostream=True))
    params = slot_parameters(cluster(archive), me("pg4", tags=archive.tags), NOW)
    assert "hot_standby_feedback" not in params
    # a nofailover parent keeps no logical copy but its cascading child does
    view = cluster(member("pg5", tags=Tags(replicatefrom="pg1")))
    params = slot_parameters(view, me("pg1", tags=Tags(nofailover=True)), NOW)
    assert params["hot_standby_feedback"] is True
    assert slot_parameters(cluster(config={}), me("pg1"), NOW) == {}


def test_a_logical_slot_on_the_server_keeps_wal_level_logical() -> None:
    local = me("pg1", replica_pg(slots=slots(("kept", "logical"))))
    assert slot_parameters(cluster(config={}), local, NOW)["wal_level"] == "logical"


def test_max_replication_slots_is_raised_when_the_slots_need_more() -> None:
    many = {f"s{i}": 0 for i in range(12)}
    params = slot_parameters(cluster(config={"slots": many}), me("pg1"), NOW)
    assert params["max_replication_slots"] == 12 + 3 + 2  # permanent, members, headroom


# ------------------------------------------------------------------ configuration

@pytest.mark.parametrize(("config", "problem"), [
    ({"slots": {"cdc": {"type": "logical", "database": "postgres"}}},
     "slots.cdc.plugin: a logical slot needs its plugin"),
    ({"slots": {"Bad-Name": None}}, "slots.Bad-Name: a slot name may only contain"),
    ({"slots": {"x": {"type": "weird"}}}, "slots.x.type: must be physical or logical"),
    ({"slots": {"x": "physical"}}, "slots.x: expected a mapping"),
    ({"slots": ["x"]}, "slots: expected a mapping"),
    ({"ignore_slots": [{"nme": "x"}]}, "ignore_slots[0].nme: unknown field"),
    ({"ignore_slots": [{}]}, "ignore_slots[0]: an empty rule"),
    ({"ignore_slots": {"name": "x"}}, "ignore_slots: expected a list"),
])
def test_bad_slot_configuration_is_named(config: dict[str, Any], problem: str) -> None:
    found = config_problems(config)
    assert len(found) == 1 and found[0].startswith(problem), found
    assert permanent_slots(config).keys() <= {"x"}


@pytest.mark.parametrize("config", [
    {"slots": {"cdc": {"type": "logical", "database": "postgres"}}},
    {"ignore_slots": [{"type": "bogus"}]},
])
def test_bad_slot_configuration_is_refused_where_it_is_written(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="slots"):
        DynamicConfig.model_validate(config)


def test_patroni_slot_shorthands() -> None:
    config = {"slots": {"a": 0, "b": None, "c": {}, "d": {"type": "physical"},
                        "e": {"database": "db", "plugin": "pgoutput"},
                        "f": {"type": "physical", "cluster_type": "standby"}}}
    assert permanent_slots(config) == {
        "a": SlotSpec("a"), "b": SlotSpec("b"), "c": SlotSpec("c"), "d": SlotSpec("d"),
        "e": SlotSpec("e", "logical", "db", "pgoutput")}
    assert config_problems(config) == []


def test_ignore_rules_match_on_every_field_they_set() -> None:
    rule = IgnoreRule(name="a", plugin="test_decoding")
    assert rule.matches(ObservedSlot("a", "logical", "db", "test_decoding"))
    assert not rule.matches(ObservedSlot("a", "logical", "db", "pgoutput"))
    assert not rule.matches(ObservedSlot("b", "logical", "db", "test_decoding"))


# ------------------------------------------------------------------ decisions

def test_leader_decision_publishes_slots_and_syncs_them() -> None:
    found = slots(("pg1", "physical", 11))
    d = decide(cluster(), me("pg0", primary_pg(slots=found)), NOW)
    assert d.reason is Reason.LEADER_HEALTHY
    status = d.actions[0]
    assert isinstance(status, PublishStatus) and status.slots == {"pg0": POS, "pg1": 11,
                                                                  "pg3": POS}
    assert status.retain_slots == ("pg0", "pg1", "pg2")
    assert isinstance(d.actions[-1], SyncSlots)


def test_nothing_is_done_with_slots_that_were_not_observed() -> None:
    d = decide(cluster(), me("pg0", primary_pg(slots=None)), NOW)
    assert not any(isinstance(a, SyncSlots) for a in d.actions)
    d = decide(cluster(status={"test_logical": 5}), me("pg1", replica_pg(upstream="pg0")), NOW)
    assert d.reason is Reason.REPLICA_HEALTHY and d.actions == ()


def test_replica_copies_missing_logical_slots_from_the_running_leader_then_advances() -> None:
    view = cluster(status={"test_logical": 500, "pg0": 900})
    local = me("pg1", replica_pg(upstream="pg0", slots=()))
    d = decide(view, local, NOW)
    assert d.reason is Reason.COPY_LOGICAL_SLOTS
    assert d.actions == (CopyLogicalSlots(Upstream("pg0", member("pg0").conn_url),
                                          (LOGICAL,)),)
    found = slots(("test_logical", "logical", 100), ("pg0", "physical", 100),
                  ("pg2", "physical"), ("pg3", "physical"), ("test_physical", "physical"))
    d = decide(view, me("pg1", replica_pg(upstream="pg0", slots=found)), NOW)
    assert d.reason is Reason.REPLICA_HEALTHY
    assert d.actions == (SyncSlots(advance=(("pg0", 900), ("pg3", POS),
                                            ("test_logical", 500))),)


def test_no_copy_in_pause() -> None:
    view = cluster(status={"test_logical": 500}, settings=HaSettings(pause=True))
    d = decide(view, me("pg1", replica_pg(upstream="pg0", slots=())), NOW)
    assert d.reason is Reason.PAUSED and d.actions == ()


def test_replica_cut_off_from_the_dcs_advances_copies_from_the_failsafe_primary() -> None:
    view = cluster()
    found = slots(("test_logical", "logical", 100))
    local = me("pg1", replica_pg(upstream="pg0", slots=found), dcs_ok=False,
               failsafe_primary="pg0", failsafe_slots={"test_logical": 700, "stray": 1})
    d = decide(view, local, NOW)
    assert d.reason is Reason.DCS_UNREACHABLE
    work = d.actions[0]
    assert isinstance(work, SyncSlots) and work.drop == ()
    assert ("test_logical", 700) in work.advance
    assert decide(view, replace(local, failsafe_primary=None), NOW).actions == ()


async def test_patch_config_refuses_bad_slot_entries_and_writes_nothing() -> None:
    kv = MemoryStore(MemoryBackend(), ttl=30, timeout=2.0)
    store = ClusterStore(kv, "/service/", "demo", "m0")
    observer = Observer(store, SimpleNamespace(), SimpleNamespace(),  # type: ignore[arg-type]
                        HaSettings())
    handler = CommandHandler("m0", store, observer, SimpleNamespace(),  # type: ignore[arg-type]
                             asyncio.Event(), request_reload=lambda: None, restart_timeout=30.0)
    async with kv:
        assert await store.write_config({"ttl": 30})
        bad = await handler.submit(PatchConfig(patch={"slots": {"cdc": {"type": "logical",
                                                                        "database": "x"}}}))
        assert (bad.code, bad.message) == (
            400, "invalid configuration: slots: cdc.plugin: a logical slot needs its plugin")
        bad = await handler.submit(PatchConfig(patch={"ignore_slots": [{"nme": "x"}]}))
        assert bad.code == 400 and "ignore_slots: [0].nme: unknown field" in bad.message
        assert (await store.read_config())[0] == {"ttl": 30}
        good = await handler.submit(PatchConfig(patch={"slots": CONFIG["slots"]}))
        assert good.code == 200
