"""Standby clusters (:mod:`pgha.core.standby`): the standby leader follows the remote and never
promotes, the others follow it, demote-cluster / promote-cluster, and the configuration."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.unit.test_decide import (
    NOW,
    POS,
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
    CloneReplica,
    Demote,
    Follow,
    Promote,
    PublishStatus,
    Rejoin,
    ReleaseLeader,
    StartPostgres,
    StopMode,
    Upstream,
)
from pgha.core.decide import Reason, decide
from pgha.core.model import ControlState, DataState, PgState, Tags
from pgha.core.standby import REMOTE, parse_standby_cluster, standby_cluster
from pgha.core.status import AgentStatus

ME = "pg1"
SECTION = {"host": "10.0.0.9", "port": 5433, "primary_slot_name": "dc2",
           "restore_command": "cp /archive/%f %p"}
CONFIG: dict[str, Any] = {"standby_cluster": SECTION}
REMOTE_UP = Upstream(REMOTE, "postgres://10.0.0.9:5433/postgres", slot="dc2",
                     recovery=(("restore_command", "cp /archive/%f %p"),))


def standby_view(*members: Any, leader: str | None = ME, **kw: Any) -> Any:
    return view(*members, leader=leader, config=CONFIG, **kw)


def test_the_remote_carries_its_slot_and_recovery_settings() -> None:
    section = parse_standby_cluster(SECTION)
    assert not isinstance(section, str) and section is not None
    assert section.remote == REMOTE_UP
    archive_only = parse_standby_cluster({"restore_command": "cp /a/%f %p"})
    assert not isinstance(archive_only, str) and archive_only is not None
    assert archive_only.remote.conn_url == ""


@pytest.mark.parametrize(("section", "problem"), [
    ({"host": "a,b"}, "host: several hosts are not supported"),
    ({"host": "a", "port": "x"}, "port: expected a port number"),
    ({"host": "a", "port": 70000}, "port: expected a port number"),
    ({"port": 5432}, "needs a host to stream from, a restore_command"),
    ({"host": "a", "create_replica_methods": "basebackup"}, "create_replica_methods: expected"),
    ({"host": "a", "restore_command": "a\nb"}, "restore_command: expected a single-line"),
    ("10.0.0.9", "expected a mapping"),
])
def test_bad_sections_are_named(section: Any, problem: str) -> None:
    found = parse_standby_cluster(section)
    assert isinstance(found, str) and found.startswith(problem)
    assert standby_cluster(view(config={"standby_cluster": section})) is None


def test_standby_leader_follows_the_remote_and_never_promotes() -> None:
    v = standby_view(member(ME), member("pg2"))
    d = decide(v, local(replica_pg(upstream="pg9")), NOW)
    assert d.reason is Reason.STANDBY_LEADER
    assert d.actions[0] == Follow(REMOTE_UP)
    assert isinstance(d.actions[1], PublishStatus)
    assert not any(isinstance(a, Promote) for a in d.actions)
    d = decide(v, local(replica_pg(upstream=REMOTE)), NOW)
    assert d.reason is Reason.STANDBY_LEADER
    assert not any(isinstance(a, Follow | Promote) for a in d.actions)


def test_a_switchover_in_a_standby_cluster_is_a_release_of_the_lock() -> None:
    v = replace(standby_view(member(ME), member("pg2")),
                failover={"leader": ME, "member": "pg2"})
    pg = replica_pg(upstream=REMOTE)
    d = decide(v, local(pg, peers={"pg2": peer("pg2", wal=POS)}), NOW)
    assert (d.reason, d.actions) == (Reason.SWITCHOVER, (ReleaseLeader(),))
    # the candidate takes the free lock and follows the remote, without promoting
    candidate = replace(v, leader=None)
    d = decide(candidate, replace(local(replica_pg(upstream=ME)), name="pg2",
                                  session_id="session-pg2"), NOW)
    assert d.reason is Reason.SWITCHOVER_CANDIDATE
    assert d.actions[:2] == (AcquireLeader(), Follow(REMOTE_UP))
    assert not any(isinstance(a, Promote) for a in d.actions)


def test_race_winner_of_a_standby_cluster_takes_the_lock_without_promoting() -> None:
    v = standby_view(member(ME), member("pg2"), leader=None, optime=POS)
    d = decide(v, local(replica_pg(upstream="pg2"), peers={"pg2": peer("pg2")}), NOW)
    assert d.reason is Reason.RACE
    assert d.actions[:2] == (AcquireLeader(), Follow(REMOTE_UP))
    assert not any(isinstance(a, Promote) for a in d.actions)


def test_demote_cluster_stops_the_primary_keeping_the_lock_then_rejoins_the_remote() -> None:
    v = standby_view(member(ME, role="primary"))
    d = decide(v, local(primary_pg()), NOW)
    assert (d.reason, d.actions) == (Reason.DEMOTE_CLUSTER, (Demote(StopMode.FAST),))
    stopped = stopped_pg(control_state=ControlState.SHUT_DOWN)
    d = decide(v, local(stopped), NOW)
    assert (d.reason, d.actions) == (Reason.REJOIN, (Rejoin(REMOTE_UP, False),))
    d = decide(v, local(stopped_pg()), NOW)
    assert d.actions == (StartPostgres("replica", REMOTE_UP),)


def test_promote_cluster_promotes_the_standby_leader() -> None:
    v = view(member(ME), leader=ME)  # standby_cluster removed
    d = decide(v, local(replica_pg(upstream=REMOTE)), NOW)
    assert d.reason is Reason.PROMOTE_HOLDING_LOCK
    assert Promote() in d.actions


def test_a_new_standby_cluster_is_cloned_from_the_remote() -> None:
    v = standby_view(leader=None, initialize=None)
    d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
    assert d.reason is Reason.CLONE
    assert d.actions == (CloneReplica(REMOTE_UP), StartPostgres("replica", REMOTE_UP))


def test_before_the_dcs_has_a_config_the_bootstrap_config_says_standby() -> None:
    v = view(leader=None, initialize=None)  # no config key yet
    d = decide(v, local(PgState(data=DataState.EMPTY), bootstrap_config=CONFIG), NOW)
    assert d.actions == (CloneReplica(REMOTE_UP), StartPostgres("replica", REMOTE_UP))
    d = decide(v, local(PgState(data=DataState.EMPTY), bootstrap_config={}), NOW)
    assert d.reason is Reason.BOOTSTRAP


def test_a_standby_cluster_may_be_created_with_its_own_replica_methods() -> None:
    section = {**SECTION, "create_replica_methods": ["from_repo", "basebackup"]}
    v = view(leader=None, initialize=None, config={"standby_cluster": section})
    d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
    remote = replace(REMOTE_UP, methods=("from_repo", "basebackup"))
    assert d.actions == (CloneReplica(remote), StartPostgres("replica", remote))
    only_methods = {"standby_cluster": {"create_replica_methods": ["from_repo"]}}
    d = decide(view(leader=None, initialize=None, config=only_methods),
               local(PgState(data=DataState.EMPTY)), NOW)
    assert d.reason is Reason.CLONE and isinstance(d.actions[0], CloneReplica)


def test_members_clone_from_and_follow_the_standby_leader() -> None:
    v = standby_view(member("pg2", role="standby_leader"), leader="pg2")
    d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
    assert d.actions == (CloneReplica(up("pg2")), StartPostgres("replica", up("pg2")))
    d = decide(v, local(replica_pg(upstream=REMOTE)), NOW)
    assert (d.reason, d.actions) == (Reason.FOLLOW, (Follow(up("pg2")),))
    d = decide(v, local(stopped_pg()), NOW)
    assert d.actions == (StartPostgres("replica", up("pg2")),)


def test_the_lock_holder_publishes_the_standby_leader_role() -> None:
    status = AgentStatus(ME, "demo", Tags(), "", "", pg=replica_pg(), holds_lock=True,
                         view=standby_view(member(ME)))
    assert status.role == "standby_leader"
    assert replace(status, holds_lock=False).role == "replica"
    assert replace(status, view=view(member(ME), leader=ME)).role == "replica"
