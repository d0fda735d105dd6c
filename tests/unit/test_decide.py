"""Table-style tests of the pure decision core ``decide(view, local, now)``.

Every test builds real ``ClusterView`` / ``LocalState`` values; nothing in the core is mocked.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from pgha.core.actions import (
    AcquireLeader,
    Action,
    BootstrapCluster,
    ClearFailover,
    CloneReplica,
    Demote,
    Follow,
    HandOver,
    Promote,
    PublishStatus,
    Rejoin,
    ReleaseLeader,
    SlotSpec,
    StartPostgres,
    StopMode,
    StopPostgres,
    SyncSlots,
    Upstream,
    WriteInitialize,
    slot_name,
)
from pgha.core.decide import Decision, Reason, decide, needs_peer_statuses
from pgha.core.model import (
    ClusterView,
    ControlState,
    DataState,
    HaSettings,
    HistoryEntry,
    Leader,
    LocalState,
    Member,
    ObservedSlot,
    PeerStatus,
    PgRole,
    PgState,
    Tags,
)

NOW = 10_000.0
ME = "pg1"
SYSID = "7123456789012345678"
MB = 1024 * 1024
POS = 0x5000000  # a WAL position used as "the leader's position"


# --------------------------------------------------------------------------- builders


def url(name: str) -> str:
    return f"postgres://{name}.example:5432/postgres"


def member(name: str, role: str = "replica", state: str = "running", *,
           xlog: int | None = POS, timeline: int | None = 1, tags: Tags | None = None,
           conn_url: str | None = None) -> Member:
    return Member(name=name, conn_url=url(name) if conn_url is None else conn_url,
                  api_url=f"http://{name}.example:8008/patroni", role=role, state=state,
                  xlog_location=xlog, timeline=timeline, tags=tags or Tags())


def session_of(name: str) -> str:
    """The DCS session of member ``name``'s agent in these tests (``local()`` gives ME its
    own): a leader key built by ``view()`` is bound to the session of the member it names."""
    return f"session-{name}"


def view(*members: Member, leader: str | None = None, initialize: str | None = SYSID,
         settings: HaSettings | None = None, config: dict[str, Any] | None = None,
         optime: int | None = None, history: tuple[HistoryEntry, ...] = ()) -> ClusterView:
    return ClusterView(
        initialize=initialize,
        settings=settings or HaSettings(),
        config=config,
        leader=Leader(leader, 1, session_of(leader)) if leader else None,
        members={m.name: m for m in members},
        optime=optime,
        history=history,
    )


def primary_pg(**kw: Any) -> PgState:
    base = PgState(data=DataState.VALID, running=True, accepting=True, role=PgRole.PRIMARY,
                   sysid=SYSID, timeline=1, wal_position=POS,
                   control_state=ControlState.IN_PRODUCTION)
    return replace(base, **kw)


def replica_pg(**kw: Any) -> PgState:
    base = PgState(data=DataState.VALID, running=True, accepting=True, role=PgRole.REPLICA,
                   sysid=SYSID, timeline=1, wal_position=POS,
                   control_state=ControlState.IN_ARCHIVE_RECOVERY)
    return replace(base, **kw)


def starting_pg(**kw: Any) -> PgState:
    base = PgState(data=DataState.VALID, running=True, accepting=False, role=PgRole.PRIMARY,
                   sysid=SYSID, timeline=1, control_state=ControlState.IN_CRASH_RECOVERY,
                   down_since=NOW - 5)
    return replace(base, **kw)


def stopped_pg(**kw: Any) -> PgState:
    base = PgState(data=DataState.VALID, running=False, accepting=False, role=None,
                   sysid=SYSID, timeline=1, wal_position=POS,
                   control_state=ControlState.SHUT_DOWN_IN_RECOVERY, down_since=NOW - 5)
    return replace(base, **kw)


def local(pg: PgState, **kw: Any) -> LocalState:
    kw.setdefault("lease_deadline", NOW + 20)
    kw.setdefault("session_id", session_of(ME))
    return LocalState(name=ME, pg=pg, **kw)


def peer(name: str, wal: int | None = POS - 100, role: str = "replica",
         state: str = "running", tags: Tags | None = None,
         timeline: int | None = 1) -> PeerStatus:
    return PeerStatus(name=name, role=role, state=state, wal_position=wal, timeline=timeline,
                      tags=tags or Tags())


def up(name: str) -> Upstream:
    return Upstream(name, url(name))


def kinds(decision: Decision) -> list[type]:
    return [type(a) for a in decision.actions]


def published(*members: str) -> PublishStatus:
    """The ``status`` a leader ME at POS publishes with ``members`` (besides itself) in the
    cluster: its own slot at its position, every member slot retained."""
    return PublishStatus(optime=POS, slots={ME: POS},
                         retain_slots=tuple(sorted({ME, *(slot_name(m) for m in members)})))


def created(*slots: str) -> SyncSlots:
    """The slot work of a member whose server has no slot yet and wants ``slots``."""
    return SyncSlots(create=tuple(SlotSpec(s) for s in sorted(slots)))


# Three-member cluster views used by many tests.
def leader_view(leader: str = "pg2", **kw: Any) -> ClusterView:
    return view(member(ME), member("pg2", role="primary", timeline=1),
                member("pg3"), leader=leader, **kw)


# --------------------------------------------------------------------------- shutdown


class TestShutdown:
    def test_leader_stops_postgres_then_releases_lock(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        d = decide(v, local(primary_pg(), shutting_down=True), NOW)
        assert d.reason is Reason.SHUTDOWN
        assert d.actions == (StopPostgres(StopMode.FAST), ReleaseLeader())

    def test_primary_with_lease_but_no_dcs_view_still_releases_after_stop(self) -> None:
        d = decide(None, local(primary_pg(), shutting_down=True, dcs_ok=False), NOW)
        assert d.actions == (StopPostgres(StopMode.FAST), ReleaseLeader())

    def test_replica_only_stops_postgres(self) -> None:
        d = decide(leader_view(), local(replica_pg(upstream="pg2"), shutting_down=True), NOW)
        assert d.reason is Reason.SHUTDOWN
        assert d.actions == (StopPostgres(StopMode.FAST),)

    @pytest.mark.parametrize("pg", [primary_pg(), replica_pg()], ids=["primary", "replica"])
    def test_paused_leaves_everything_running(self, pg: PgState) -> None:
        v = view(member(ME, role="primary"), leader=ME,
                 settings=HaSettings(pause=True))
        d = decide(v, local(pg, shutting_down=True), NOW)
        assert d.reason is Reason.SHUTDOWN_PAUSED
        assert d.actions == ()


# --------------------------------------------------------------------------- fail closed


class TestFailClosed:
    @pytest.mark.parametrize("deadline", [None, NOW, NOW - 0.001, NOW - 1000],
                             ids=["none", "equal-now", "just-expired", "long-expired"])
    def test_unconfirmed_lease_demotes_even_when_view_says_we_hold_the_lock(
            self, deadline: float | None) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        d = decide(v, local(primary_pg(), lease_deadline=deadline), NOW)
        assert d.reason is Reason.LEASE_UNCONFIRMED
        assert d.actions == (Demote(StopMode.IMMEDIATE),)
        assert d.actions[0] == Demote(mode=StopMode.IMMEDIATE, release_lock=False)

    @pytest.mark.parametrize("dcs_view", [None, "stale"])
    def test_unconfirmed_lease_demotes_when_dcs_unreachable(self, dcs_view: str | None) -> None:
        v = view(member(ME, role="primary"), leader=ME) if dcs_view else None
        d = decide(v, local(primary_pg(), lease_deadline=NOW - 1, dcs_ok=False), NOW)
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_starting_primary_with_expired_lease_is_also_stopped(self) -> None:
        # not yet accepting, but a primary role: it may accept writes any moment
        v = view(member(ME, role="primary"), leader=ME)
        d = decide(v, local(starting_pg(), lease_deadline=None), NOW)
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    @pytest.mark.parametrize("dcs_view", [None, "stale"])
    def test_dcs_unreachable_with_valid_lease_stays_primary(self, dcs_view: str | None) -> None:
        v = view(member(ME, role="primary"), leader=ME) if dcs_view else None
        d = decide(v, local(primary_pg(), lease_deadline=NOW + 0.001, dcs_ok=False), NOW)
        assert d.reason is Reason.DCS_UNREACHABLE_LEASE_VALID
        assert d.actions == ()

    def test_valid_lease_with_lock_is_healthy_leader(self) -> None:
        v = view(member(ME, role="primary"), leader=ME)
        d = decide(v, local(primary_pg(), lease_deadline=NOW + 0.001), NOW)
        assert d.reason is Reason.LEADER_HEALTHY

    def test_paused_primary_is_not_demoted_on_expired_lease(self) -> None:
        v = view(member(ME, role="primary"), leader=ME, settings=HaSettings(pause=True))
        d = decide(v, local(primary_pg(), lease_deadline=None), NOW)
        assert d.reason is Reason.PAUSED
        assert d.actions == (published(),)


class TestDcsUnreachable:
    @pytest.mark.parametrize("has_view", [True, False])
    def test_replica_never_promotes(self, has_view: bool) -> None:
        # no leader in the last view, every peer behind: would race if the DCS were reachable
        v = view(member(ME), member("pg2"), leader=None) if has_view else None
        loc = local(replica_pg(), dcs_ok=False, lease_deadline=None,
                    peers={"pg2": peer("pg2", wal=0)})
        d = decide(v, loc, NOW)
        assert d.reason is Reason.DCS_UNREACHABLE
        assert d.actions == ()
        assert not needs_peer_statuses(v, loc)

    def test_stopped_replica_starts_read_only_following_last_known_leader(self) -> None:
        d = decide(leader_view(), local(stopped_pg(), dcs_ok=False), NOW)
        assert d.reason is Reason.DCS_UNREACHABLE_READ_ONLY
        assert d.actions == (StartPostgres("replica", up("pg2")),)

    def test_stopped_former_primary_starts_read_only_without_upstream(self) -> None:
        pg = stopped_pg(control_state=ControlState.IN_PRODUCTION)
        d = decide(leader_view(), local(pg, dcs_ok=False), NOW)
        assert d.actions == (StartPostgres("replica", None),)  # never streams before a rejoin

    def test_stopped_member_without_any_view_starts_read_only(self) -> None:
        d = decide(None, local(stopped_pg(), dcs_ok=False), NOW)
        assert d.actions == (StartPostgres("replica", None),)

    def test_empty_data_does_nothing(self) -> None:
        d = decide(leader_view(), local(PgState(), dcs_ok=False), NOW)
        assert d.reason is Reason.DCS_UNREACHABLE
        assert d.actions == ()


# --------------------------------------------------------------------------- data directory


class TestDataDirectory:
    def test_busy_does_nothing(self) -> None:
        d = decide(leader_view(), local(stopped_pg(busy="creating replica")), NOW)
        assert d.reason is Reason.BUSY
        assert d.actions == ()

    @pytest.mark.parametrize(("leader", "expected"), [
        (None, ()), ("pg2", ()), (ME, (ReleaseLeader(),)),
    ])
    def test_invalid_data_needs_operator(self, leader: str | None,
                                         expected: tuple[Action, ...]) -> None:
        v = view(member(ME), member("pg2", role="primary"), leader=leader)
        d = decide(v, local(PgState(data=DataState.INVALID)), NOW)
        assert d.reason is Reason.DATA_INVALID
        assert d.actions == expected

    def test_empty_without_initialize_bootstraps(self) -> None:
        d = decide(view(initialize=None), local(PgState(data=DataState.EMPTY)), NOW)
        assert d.reason is Reason.BOOTSTRAP
        assert d.actions == (BootstrapCluster(),)

    def test_empty_while_another_member_bootstraps_waits(self) -> None:
        d = decide(view(initialize=""), local(PgState(data=DataState.EMPTY)), NOW)
        assert d.reason is Reason.BOOTSTRAP_IN_PROGRESS
        assert d.actions == ()

    def test_empty_with_running_leader_clones_then_starts(self) -> None:
        d = decide(leader_view(), local(PgState(data=DataState.EMPTY)), NOW)
        assert d.reason is Reason.CLONE
        assert d.actions == (CloneReplica(up("pg2")), StartPostgres("replica", up("pg2")))

    def test_empty_clones_from_clonefrom_tagged_running_replica(self) -> None:
        v = view(member("pg2", role="primary"),
                 member("pg4", tags=Tags(clonefrom=True)),
                 member("pg3", tags=Tags(clonefrom=True)),
                 member("pg5", state="stopped", tags=Tags(clonefrom=True)),
                 leader="pg2")
        d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
        # first running clonefrom replica by name; PostgreSQL still streams from the leader
        assert d.actions == (CloneReplica(up("pg3")), StartPostgres("replica", up("pg2")))

    def test_a_cascading_replica_clones_and_streams_from_its_replicatefrom_member(self) -> None:
        v = view(member("pg2", role="primary"), member("pg3", tags=Tags(clonefrom=True)),
                 member("pg4"), leader="pg2")
        cascading = local(PgState(data=DataState.EMPTY), tags=Tags(replicatefrom="pg4"))
        d = decide(v, cascading, NOW)
        assert d.actions == (CloneReplica(up("pg4")), StartPostgres("replica", up("pg4")))
        gone = replace(v, members={n: m for n, m in v.members.items() if n != "pg4"})
        d = decide(gone, cascading, NOW)  # parent gone: clonefrom member, then the leader
        assert d.actions == (CloneReplica(up("pg3")), StartPostgres("replica", up("pg2")))

    def test_clonefrom_ignored_when_not_a_running_replica(self) -> None:
        v = view(member("pg2", role="primary"),
                 member("pg3", state="stopped", tags=Tags(clonefrom=True)),
                 member("pg4", role="primary", tags=Tags(clonefrom=True)),
                 member(ME, tags=Tags(clonefrom=True)),
                 leader="pg2")
        d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
        assert d.actions == (CloneReplica(up("pg2")), StartPostgres("replica", up("pg2")))

    @pytest.mark.parametrize("v", [
        view(member("pg2", role="primary"), leader=None),
        view(member("pg2", role="primary", state="starting"), leader="pg2"),
        view(member("pg2", role="replica"), leader="pg2"),
        view(member("pg2", role="primary", conn_url=""), leader="pg2"),
        view(leader="pg2"),  # leader key but no member key
    ], ids=["no-leader", "leader-starting", "leader-not-primary", "no-conn-url", "no-member"])
    def test_empty_without_running_leader_waits(self, v: ClusterView) -> None:
        d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
        assert d.reason is Reason.WAITING_FOR_LEADER
        assert d.actions == ()

    @pytest.mark.parametrize("v", [
        view(member("pg2", role="primary"), leader=None),
        view(member("pg2", role="primary", state="stopped"), leader="pg2"),
        view(member("pg2", role="primary", conn_url=""), leader="pg2"),
        view(leader="pg2"),
        view(),
    ], ids=["no-leader", "leader-stopped", "no-conn-url", "no-member", "no-members"])
    def test_empty_with_a_no_leader_method_and_no_running_leader_creates_the_replica(
            self, v: ClusterView) -> None:
        d = decide(v, local(PgState(data=DataState.EMPTY), replica_without_leader=True), NOW)
        assert d.reason is Reason.CLONE_WITHOUT_LEADER
        # no source: only the no_leader methods run; started without an upstream
        assert d.actions == (CloneReplica(None), StartPostgres("replica"))

    def test_a_no_leader_method_does_not_replace_cloning_from_a_running_leader(self) -> None:
        d = decide(leader_view(), local(PgState(data=DataState.EMPTY),
                                        replica_without_leader=True), NOW)
        assert d.reason is Reason.CLONE
        assert d.actions == (CloneReplica(up("pg2")), StartPostgres("replica", up("pg2")))

    @pytest.mark.parametrize("initialize", [None, ""], ids=["no-initialize", "bootstrapping"])
    def test_a_no_leader_method_never_creates_a_replica_of_an_uninitialized_cluster(
            self, initialize: str | None) -> None:
        d = decide(view(initialize=initialize),
                   local(PgState(data=DataState.EMPTY), replica_without_leader=True), NOW)
        assert CloneReplica(None) not in d.actions
        assert d.reason in (Reason.BOOTSTRAP, Reason.BOOTSTRAP_IN_PROGRESS)

    def test_a_no_leader_method_waits_in_maintenance_mode(self) -> None:
        v = view(member("pg2", role="primary", state="stopped"), leader="pg2",
                 settings=HaSettings(pause=True))
        d = decide(v, local(PgState(data=DataState.EMPTY), replica_without_leader=True), NOW)
        assert d.actions == ()

    def test_a_replica_created_without_a_leader_follows_the_leader_once_it_runs(self) -> None:
        # started without an upstream, no leader: joins the race like any replica (here
        # refused: nofailover); then a leader appears and it is pointed at it
        orphan = local(replica_pg(upstream=None), tags=Tags(nofailover=True),
                       replica_without_leader=True)
        d = decide(view(member(ME), member("pg2", state="stopped")), orphan, NOW)
        assert d.reason is Reason.RACE_REFUSED_NOFAILOVER
        d = decide(leader_view(), orphan, NOW)
        assert d.reason is Reason.FOLLOW
        assert d.actions == (Follow(up("pg2")),)

    def test_empty_data_holding_the_lock_releases_it(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        d = decide(v, local(PgState(data=DataState.EMPTY)), NOW)
        assert d.reason is Reason.LEADER_DATA_LOST
        assert d.actions == (ReleaseLeader(),)

    @pytest.mark.parametrize("pg", [stopped_pg(), primary_pg(), replica_pg()],
                             ids=["stopped", "primary", "replica"])
    def test_no_initialize_with_local_data_adopts_it(self, pg: PgState) -> None:
        d = decide(view(initialize=None), local(pg), NOW)
        assert d.reason is Reason.ADOPT_DATA
        assert d.actions == (WriteInitialize(SYSID),)

    def test_no_initialize_and_no_sysid_waits(self) -> None:
        d = decide(view(initialize=None), local(stopped_pg(sysid=None)), NOW)
        assert d.reason is Reason.WAITING_FOR_LEADER
        assert d.actions == ()

    def test_valid_data_while_another_member_bootstraps_waits(self) -> None:
        d = decide(view(initialize=""), local(stopped_pg()), NOW)
        assert d.reason is Reason.BOOTSTRAP_IN_PROGRESS
        assert d.actions == ()

    @pytest.mark.parametrize(("leader", "expected"), [
        (None, ()), ("pg2", ()), (ME, (ReleaseLeader(),)),
    ])
    @pytest.mark.parametrize("pg", [stopped_pg(), replica_pg(), primary_pg()],
                             ids=["stopped", "replica", "primary"])
    def test_sysid_mismatch_touches_nothing(self, pg: PgState, leader: str | None,
                                            expected: tuple[Action, ...]) -> None:
        v = view(member(ME), member("pg2", role="primary"), leader=leader)
        d = decide(v, local(replace(pg, sysid="6999999999999999999")), NOW)
        assert d.reason is Reason.SYSID_MISMATCH
        assert d.actions == expected
        assert "6999999999999999999" in d.message and SYSID in d.message


# --------------------------------------------------------------------------- slots


class TestSlots:
    @pytest.mark.parametrize(("name", "slot"), [
        ("pg-2.a", "pg_2_a"),
        ("PG3", "pg3"),
        ("node_1", "node_1"),
        ("nodé", "nod_"),
        ("a" * 80, "a" * 63),
    ])
    def test_slot_name(self, name: str, slot: str) -> None:
        assert slot_name(name) == slot

    def test_leader_keeps_slots_of_other_members(self) -> None:
        v = view(member(ME, role="primary"), member("pg-2.a"), member("PG3"), leader=ME)
        d = decide(v, local(primary_pg()), NOW)
        assert d.reason is Reason.LEADER_HEALTHY
        assert d.actions == (published("pg-2.a", "PG3"),)
        d = decide(v, local(primary_pg(slots=())), NOW)
        assert d.actions == (published("pg-2.a", "PG3"), created("pg_2_a", "pg3"))

    def test_recently_seen_members_are_kept_within_member_slots_ttl(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME,
                 settings=HaSettings(member_slots_ttl=600))
        seen = {"pg2": NOW, "gone-recently": NOW - 599, "gone-long-ago": NOW - 600,
                ME: NOW}
        d = decide(v, local(primary_pg(slots=()), member_seen=seen), NOW)
        assert d.actions[1] == created("pg2", "gone_recently")

    def test_permanent_slots_from_config_are_kept(self) -> None:
        config = {"slots": {"archiver": {"type": "physical"},
                            "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}}}
        v = view(member(ME, role="primary"), member("pg2"), leader=ME, config=config)
        d = decide(v, local(primary_pg(slots=())), NOW)
        assert d.actions[1] == SyncSlots(create=(
            SlotSpec("archiver"), SlotSpec("cdc", "logical", "app", "pgoutput"), SlotSpec("pg2")))

    def test_garbage_permanent_slots_ignored(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME,
                 config={"slots": ["archiver"]})
        d = decide(v, local(primary_pg(slots=())), NOW)
        assert d.actions[1] == created("pg2")

    def test_no_sync_slots_when_use_slots_false(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME,
                 settings=HaSettings(use_slots=False))
        d = decide(v, local(primary_pg(slots=(ObservedSlot("stray"),))), NOW)
        assert d.actions == (PublishStatus(optime=POS, slots={}),)


# --------------------------------------------------------------------------- running primary


class TestRunningPrimary:
    def test_other_member_holds_the_lock_demotes(self) -> None:
        d = decide(leader_view("pg2"), local(primary_pg()), NOW)
        assert d.reason is Reason.OTHER_LEADER_DEMOTE
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_no_leader_retakes_the_lock(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=None)
        d = decide(v, local(primary_pg(), peers={"pg2": peer("pg2"), "pg3": None}), NOW)
        assert d.reason is Reason.RETAKE_LOCK_AS_PRIMARY
        assert d.actions == (AcquireLeader(), published("pg2"))

    def test_no_leader_but_timeline_behind_a_member_demotes(self) -> None:
        v = view(member(ME, role="primary", timeline=2), member("pg2", timeline=3), leader=None)
        d = decide(v, local(primary_pg(timeline=2)), NOW)
        assert d.reason is Reason.BEHIND_CLUSTER_TIMELINE
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_no_leader_but_timeline_behind_history_demotes(self) -> None:
        v = view(member(ME, role="primary", timeline=None), leader=None,
                 history=(HistoryEntry(1, 0x3000148), HistoryEntry(2, 0x4000000)))
        d = decide(v, local(primary_pg(timeline=2)), NOW)
        assert d.reason is Reason.BEHIND_CLUSTER_TIMELINE
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_no_leader_on_current_timeline_retakes(self) -> None:
        v = view(member(ME, role="primary", timeline=3), member("pg2", timeline=3), leader=None,
                 history=(HistoryEntry(1, 0x3000148), HistoryEntry(2, 0x4000000)))
        d = decide(v, local(primary_pg(timeline=3)), NOW)
        assert d.reason is Reason.RETAKE_LOCK_AS_PRIMARY

    def test_no_leader_and_a_peer_also_runs_as_primary_demotes(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=None)
        peers = {"pg2": peer("pg2", role="primary"), "pg3": None}
        d = decide(v, local(primary_pg(), peers=peers), NOW)
        assert d.reason is Reason.OTHER_LEADER_DEMOTE
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_peer_primary_that_is_not_running_does_not_demote(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=None)
        peers = {"pg2": peer("pg2", role="primary", state="stopped")}
        d = decide(v, local(primary_pg(), peers=peers), NOW)
        assert d.reason is Reason.RETAKE_LOCK_AS_PRIMARY


# --------------------------------------------------------------------------- running replica


class TestRunningReplica:
    def test_holding_the_lock_promotes(self) -> None:
        v = view(member(ME), member("pg2"), leader=ME)
        d = decide(v, local(replica_pg()), NOW)
        assert d.reason is Reason.PROMOTE_HOLDING_LOCK
        assert d.actions == (Promote(), published("pg2"))

    @pytest.mark.parametrize("upstream", [None, "pg3", "pg9"])
    def test_wrong_upstream_follows_the_leader(self, upstream: str | None) -> None:
        d = decide(leader_view(), local(replica_pg(upstream=upstream)), NOW)
        assert d.reason is Reason.FOLLOW
        assert d.actions == (Follow(up("pg2")),)

    def test_streaming_from_the_leader_is_healthy(self) -> None:
        d = decide(leader_view(), local(replica_pg(upstream="pg2")), NOW)
        assert d.reason is Reason.REPLICA_HEALTHY
        assert d.actions == ()

    def test_replicatefrom_tag_is_honoured(self) -> None:
        tags = Tags(replicatefrom="pg3")
        d = decide(leader_view(), local(replica_pg(upstream="pg2"), tags=tags), NOW)
        assert d.reason is Reason.FOLLOW
        assert d.actions == (Follow(up("pg3")),)
        d = decide(leader_view(), local(replica_pg(upstream="pg3"), tags=tags), NOW)
        assert d.reason is Reason.REPLICA_HEALTHY

    @pytest.mark.parametrize("parent", [
        member("pg3", state="stopped"), member("pg3", conn_url=""), None,
    ], ids=["stopped", "no-conn-url", "missing"])
    def test_replicatefrom_unusable_falls_back_to_leader(self, parent: Member | None) -> None:
        members = [member(ME), member("pg2", role="primary")] + ([parent] if parent else [])
        v = view(*members, leader="pg2")
        d = decide(v, local(replica_pg(upstream="pg3"), tags=Tags(replicatefrom="pg3")), NOW)
        assert d.actions == (Follow(up("pg2")),)

    def test_leader_without_member_key_waits(self) -> None:
        v = view(member(ME), leader="pg2")
        d = decide(v, local(replica_pg(upstream=None)), NOW)
        assert d.reason is Reason.WAITING_FOR_LEADER
        assert d.actions == ()

    def test_an_archive_only_replica_is_not_judged_on_its_restartpoint_timeline(self) -> None:
        v = view(member(ME), member("pg2", role="primary", timeline=2), leader="pg2",
                 history=(HistoryEntry(1, 0x3000148),))
        pg = replica_pg(timeline=1, wal_position=0x3000149, upstream="pg2")
        d = decide(v, local(pg, tags=Tags(nostream=True)), NOW)
        assert d.reason is Reason.REPLICA_HEALTHY
        assert d.message == "replica following the archive (nostream)"

    def test_diverged_replica_stops(self) -> None:
        v = view(member(ME), member("pg2", role="primary", timeline=2), leader="pg2",
                 history=(HistoryEntry(1, 0x3000148),))
        d = decide(v, local(replica_pg(timeline=1, wal_position=0x3000149, upstream="pg2")),
                   NOW)
        assert d.reason is Reason.REPLICA_DIVERGED
        assert d.actions == (StopPostgres(StopMode.FAST),)

    @pytest.mark.parametrize("pos", [0x3000148, 0x3000000])
    def test_replica_not_past_switch_point_keeps_following(self, pos: int) -> None:
        v = view(member(ME), member("pg2", role="primary", timeline=2), leader="pg2",
                 history=(HistoryEntry(1, 0x3000148),))
        d = decide(v, local(replica_pg(timeline=1, wal_position=pos, upstream="pg2")), NOW)
        assert d.reason is Reason.REPLICA_HEALTHY


# --------------------------------------------------------------------------- leader race


def race_view(**kw: Any) -> ClusterView:
    kw.setdefault("optime", POS)
    return view(member(ME), member("pg2"), member("pg3"), leader=None, **kw)


def race_local(pg: PgState | None = None, **kw: Any) -> LocalState:
    kw.setdefault("peers", {"pg2": peer("pg2", wal=POS - 100), "pg3": None})
    return local(pg or replica_pg(), **kw)


RACE_ACTIONS = (AcquireLeader(), Promote(), published("pg2", "pg3"))


class TestLeaderRace:
    def test_healthiest_replica_races(self) -> None:
        d = decide(race_view(), race_local(), NOW)
        assert d.reason is Reason.RACE
        assert d.actions == RACE_ACTIONS

    @pytest.mark.parametrize(("lag", "races"), [
        (0, True), (HaSettings().maximum_lag_on_failover, True),
        (HaSettings().maximum_lag_on_failover + 1, False), (50 * MB, False),
    ])
    def test_lag_beyond_maximum_lag_on_failover(self, lag: int, races: bool) -> None:
        d = decide(race_view(optime=POS + lag), race_local(), NOW)
        assert (d.reason is Reason.RACE) is races
        if not races:
            assert d.reason is Reason.RACE_REFUSED_LAG
            assert "maximum_lag_on_failover" in d.message
            assert d.actions == ()

    def test_custom_maximum_lag(self) -> None:
        v = race_view(optime=POS + 1000, settings=HaSettings(maximum_lag_on_failover=999))
        assert decide(v, race_local(), NOW).reason is Reason.RACE_REFUSED_LAG
        v = race_view(optime=POS + 1000, settings=HaSettings(maximum_lag_on_failover=1000))
        assert decide(v, race_local(), NOW).reason is Reason.RACE

    def test_unknown_optime_does_not_block(self) -> None:
        assert decide(race_view(optime=None), race_local(), NOW).reason is Reason.RACE

    @pytest.mark.parametrize("tags", [Tags(nofailover=True), Tags(failover_priority=0),
                                      Tags(failover_priority=-1)],
                             ids=["nofailover", "priority-0", "priority-negative"])
    def test_cannot_be_leader(self, tags: Tags) -> None:
        d = decide(race_view(), race_local(tags=tags), NOW)
        assert d.reason is Reason.RACE_REFUSED_NOFAILOVER
        assert d.actions == ()

    def test_own_position_unknown(self) -> None:
        d = decide(race_view(), race_local(replica_pg(wal_position=None)), NOW)
        assert d.reason is Reason.RACE_REFUSED_POSITION_UNKNOWN
        assert d.actions == ()

    def test_reachable_peer_ahead(self) -> None:
        peers = {"pg2": peer("pg2", wal=POS + 1), "pg3": None}
        d = decide(race_view(), race_local(peers=peers), NOW)
        assert d.reason is Reason.RACE_REFUSED_PEER_AHEAD
        assert "pg2" in d.message

    def test_peer_ahead_but_nofailover_is_ignored(self) -> None:
        peers = {"pg2": peer("pg2", wal=POS + MB, tags=Tags(nofailover=True))}
        assert decide(race_view(), race_local(peers=peers), NOW).reason is Reason.RACE

    def test_peer_position_unknown_is_ignored(self) -> None:
        peers = {"pg2": peer("pg2", wal=None)}
        assert decide(race_view(), race_local(peers=peers), NOW).reason is Reason.RACE

    @pytest.mark.parametrize(("mine", "theirs", "reason"), [
        (1, 2, Reason.RACE_REFUSED_PEER_PRIORITY), (2, 2, Reason.RACE), (3, 2, Reason.RACE),
        (0, 1, Reason.RACE_REFUSED_NOFAILOVER),  # priority 0: never a leader
    ])
    def test_equal_position_failover_priority(self, mine: int, theirs: int,
                                              reason: Reason) -> None:
        peers = {"pg2": peer("pg2", wal=POS, tags=Tags(failover_priority=theirs))}
        loc = race_local(peers=peers, tags=Tags(failover_priority=mine))
        assert decide(race_view(), loc, NOW).reason is reason

    def test_unreachable_peers_are_ignored(self) -> None:
        d = decide(race_view(), race_local(peers={"pg2": None, "pg3": None}), NOW)
        assert d.reason is Reason.RACE
        assert d.actions == RACE_ACTIONS

    def test_a_peer_still_running_as_primary_blocks(self) -> None:
        # even a nofailover peer: a running primary means the old leader is alive
        for tags in (Tags(), Tags(nofailover=True)):
            peers = {"pg2": peer("pg2", wal=0, role="primary", tags=tags)}
            d = decide(race_view(), race_local(peers=peers), NOW)
            assert d.reason is Reason.RACE_REFUSED_PRIMARY_RUNNING
            assert d.actions == ()

    def test_own_entry_in_peers_is_ignored(self) -> None:
        peers = {ME: peer(ME, wal=POS + MB, role="primary"), "pg2": None}
        assert decide(race_view(), race_local(peers=peers), NOW).reason is Reason.RACE

    def test_check_timeline(self) -> None:
        v = race_view(history=(HistoryEntry(1, POS - 1),),
                      settings=HaSettings(check_timeline=True))
        d = decide(v, race_local(replica_pg(timeline=1)), NOW)
        assert d.reason is Reason.RACE_REFUSED_TIMELINE_BEHIND
        v = race_view(history=(HistoryEntry(1, POS - 1),))
        assert decide(v, race_local(replica_pg(timeline=1)), NOW).reason is Reason.RACE


class TestNeedsPeerStatuses:
    def test_true_in_the_race_situation(self) -> None:
        assert needs_peer_statuses(race_view(), race_local())

    @pytest.mark.parametrize(("v", "loc"), [
        (leader_view(), race_local()),
        (None, race_local()),
        (race_view(), race_local(dcs_ok=False)),
        (race_view(), race_local(shutting_down=True)),
        (race_view(settings=HaSettings(pause=True)), race_local()),
        (race_view(), race_local(PgState(data=DataState.EMPTY))),
        (race_view(), race_local(stopped_pg())),
        (race_view(), race_local(replica_pg(accepting=False))),
    ], ids=["leader-exists", "no-view", "dcs-down", "shutting-down", "paused", "empty-data",
            "stopped", "not-accepting"])
    def test_false_otherwise(self, v: ClusterView | None, loc: LocalState) -> None:
        assert not needs_peer_statuses(v, loc)


# --------------------------------------------------------------------------- starting / stopped


class TestStarting:
    def test_holding_lock_beyond_primary_start_timeout_demotes_and_releases(self) -> None:
        v = view(member(ME, role="primary"), leader=ME)
        loc = local(starting_pg(down_since=NOW - 300))
        d = decide(v, loc, NOW)
        assert d.reason is Reason.PRIMARY_START_TIMEOUT
        assert d.actions == (Demote(StopMode.IMMEDIATE, release_lock=True),)

    def test_holding_lock_within_timeout_waits(self) -> None:
        v = view(member(ME, role="primary"), leader=ME)
        d = decide(v, local(starting_pg(down_since=NOW - 299)), NOW)
        assert d.reason is Reason.PG_STARTING
        assert d.actions == ()

    def test_custom_timeout(self) -> None:
        v = view(member(ME, role="primary"), leader=ME,
                 settings=HaSettings(primary_start_timeout=10))
        d = decide(v, local(starting_pg(down_since=NOW - 10)), NOW)
        assert d.actions == (Demote(StopMode.IMMEDIATE, release_lock=True),)

    def test_not_holding_lock_just_waits(self) -> None:
        loc = local(starting_pg(role=PgRole.REPLICA, down_since=NOW - 1000))
        d = decide(leader_view(), loc, NOW)
        assert d.reason is Reason.PG_STARTING
        assert d.actions == ()


class TestStopped:
    @pytest.mark.parametrize("settings", [HaSettings(primary_start_timeout=0),
                                          HaSettings(primary_start_timeout=-1)])
    def test_holding_lock_timeout_zero_releases(self, settings: HaSettings) -> None:
        v = view(member(ME, role="primary"), leader=ME, settings=settings)
        d = decide(v, local(stopped_pg(control_state=ControlState.IN_PRODUCTION,
                                       down_since=NOW)), NOW)
        assert d.reason is Reason.PRIMARY_START_TIMEOUT
        assert d.actions == (ReleaseLeader(),)

    def test_holding_lock_down_too_long_releases(self) -> None:
        v = view(member(ME, role="primary"), leader=ME)
        d = decide(v, local(stopped_pg(control_state=ControlState.SHUT_DOWN,
                                       down_since=NOW - 300)), NOW)
        assert d.actions == (ReleaseLeader(),)

    @pytest.mark.parametrize("cs", [ControlState.SHUT_DOWN, ControlState.IN_PRODUCTION])
    def test_holding_lock_former_primary_restarts_as_primary(self, cs: ControlState) -> None:
        v = view(member(ME, role="primary"), leader=ME)
        d = decide(v, local(stopped_pg(control_state=cs)), NOW)
        assert d.reason is Reason.RESTART_PRIMARY
        assert d.actions == (StartPostgres("primary"),)

    def test_holding_lock_with_replica_data_starts_replica(self) -> None:
        v = view(member(ME), leader=ME)
        d = decide(v, local(stopped_pg(control_state=ControlState.SHUT_DOWN_IN_RECOVERY)), NOW)
        assert d.reason is Reason.START_REPLICA
        assert d.actions == (StartPostgres("replica"),)

    @pytest.mark.parametrize("rewind", [True, False])
    @pytest.mark.parametrize("cs", [ControlState.SHUT_DOWN, ControlState.IN_PRODUCTION])
    def test_former_primary_rejoins(self, cs: ControlState, rewind: bool) -> None:
        v = leader_view(settings=HaSettings(use_pg_rewind=rewind))
        d = decide(v, local(stopped_pg(control_state=cs)), NOW)
        assert d.reason is Reason.REJOIN
        assert d.actions == (Rejoin(up("pg2"), use_pg_rewind=rewind),)

    def test_replica_on_another_timeline_rejoins(self) -> None:
        v = view(member(ME), member("pg2", role="primary", timeline=3), leader="pg2",
                 settings=HaSettings(use_pg_rewind=True))
        d = decide(v, local(stopped_pg(timeline=2,
                                       control_state=ControlState.SHUT_DOWN_IN_RECOVERY)), NOW)
        assert d.actions == (Rejoin(up("pg2"), use_pg_rewind=True),)

    @pytest.mark.parametrize("cs", [ControlState.IN_ARCHIVE_RECOVERY,
                                    ControlState.SHUT_DOWN_IN_RECOVERY])
    def test_crashed_replica_starts_as_replica_of_leader(self, cs: ControlState) -> None:
        d = decide(leader_view(), local(stopped_pg(control_state=cs)), NOW)
        assert d.reason is Reason.START_REPLICA
        assert d.actions == (StartPostgres("replica", up("pg2")),)

    def test_stopped_replica_honours_replicatefrom(self) -> None:
        d = decide(leader_view(), local(stopped_pg(), tags=Tags(replicatefrom="pg3")), NOW)
        assert d.actions == (StartPostgres("replica", up("pg3")),)

    @pytest.mark.parametrize("cs", [ControlState.SHUT_DOWN, ControlState.IN_ARCHIVE_RECOVERY])
    def test_no_leader_starts_replica_without_upstream(self, cs: ControlState) -> None:
        v = view(member(ME), member("pg2"), leader=None)
        d = decide(v, local(stopped_pg(control_state=cs)), NOW)
        assert d.reason is Reason.START_REPLICA
        assert d.actions == (StartPostgres("replica", None),)

    def test_leader_not_running_waits(self) -> None:
        v = view(member(ME), member("pg2", role="primary", state="stopped"), leader="pg2")
        d = decide(v, local(stopped_pg(control_state=ControlState.SHUT_DOWN)), NOW)
        assert d.reason is Reason.WAITING_FOR_LEADER
        assert d.actions == ()


# --------------------------------------------------------------------------- paused

PG_CHANGING = (StartPostgres, StopPostgres, Demote, Promote, Follow, Rejoin, CloneReplica,
               BootstrapCluster)
PAUSED = HaSettings(pause=True)


class TestPaused:
    @pytest.mark.parametrize(("v", "pg", "expected"), [
        (view(member(ME, role="primary"), leader=ME, settings=PAUSED), primary_pg(),
         (published(),)),
        (view(member(ME), leader=ME, settings=PAUSED), stopped_pg(), (ReleaseLeader(),)),
        (view(member(ME), leader=ME, settings=PAUSED), replica_pg(), (ReleaseLeader(),)),
        (view(member(ME), leader=None, settings=PAUSED), primary_pg(), (AcquireLeader(),)),
        (view(member(ME), leader=None, settings=PAUSED), replica_pg(), ()),
        (view(member(ME), leader=None, settings=PAUSED), stopped_pg(), ()),
        (leader_view(settings=PAUSED), primary_pg(), ()),
        (leader_view(settings=PAUSED), replica_pg(upstream="pg9"), ()),
        (leader_view(settings=PAUSED), stopped_pg(control_state=ControlState.SHUT_DOWN), ()),
        (leader_view(settings=PAUSED), PgState(data=DataState.EMPTY), ()),
        (view(initialize=None, settings=PAUSED), PgState(data=DataState.EMPTY), ()),
    ], ids=["leader-primary", "leader-stopped", "leader-replica", "free-lock-primary",
            "free-lock-replica", "free-lock-stopped", "other-leader-primary",
            "wrong-upstream", "former-primary-stopped", "empty-data", "no-initialize"])
    def test_paused_changes_nothing_in_postgres(self, v: ClusterView, pg: PgState,
                                                expected: tuple[Action, ...]) -> None:
        d = decide(v, local(pg, peers={"pg2": None}), NOW)
        assert d.reason is Reason.PAUSED
        assert d.actions == expected
        assert not any(isinstance(a, PG_CHANGING) for a in d.actions)


# --------------------------------------------------------------------------- settings


class TestHaSettings:
    def test_defaults(self) -> None:
        s = HaSettings.from_config({})
        assert s == HaSettings()
        assert (s.ttl, s.loop_wait, s.retry_timeout) == (30.0, 10.0, 10.0)
        assert s.maximum_lag_on_failover == 1048576
        assert s.primary_start_timeout == 300.0
        assert (s.use_pg_rewind, s.use_slots, s.pause) == (False, True, False)

    def test_values_are_read(self) -> None:
        s = HaSettings.from_config({
            "ttl": 20, "loop_wait": 5, "retry_timeout": 7.5,
            "maximum_lag_on_failover": 2048.9, "primary_start_timeout": 0,
            "member_slots_ttl": 60, "check_timeline": True, "pause": True,
            "postgresql": {"use_pg_rewind": True, "use_slots": False},
        })
        assert s == HaSettings(ttl=20, loop_wait=5, retry_timeout=7.5,
                               maximum_lag_on_failover=2048, primary_start_timeout=0,
                               member_slots_ttl=60, check_timeline=True, pause=True,
                               use_pg_rewind=True, use_slots=False)

    def test_garbage_keeps_defaults(self) -> None:
        s = HaSettings.from_config({
            "ttl": "abc", "loop_wait": True, "retry_timeout": None,
            "maximum_lag_on_failover": [1], "primary_start_timeout": {"x": 1},
            "member_slots_ttl": "30min", "check_timeline": "yes", "pause": 1,
            "postgresql": {"use_pg_rewind": "true", "use_slots": 0},
        })
        assert s == HaSettings()

    @pytest.mark.parametrize("pg", ["on", None, [1], 5])
    def test_postgresql_section_not_a_mapping(self, pg: Any) -> None:
        assert HaSettings.from_config({"postgresql": pg, "ttl": 40}) == HaSettings(ttl=40)

    def test_master_start_timeout_alias(self) -> None:
        assert HaSettings.from_config({"master_start_timeout": 42}).primary_start_timeout == 42
        both = {"master_start_timeout": 42, "primary_start_timeout": 7}
        assert HaSettings.from_config(both).primary_start_timeout == 7
        assert HaSettings.from_config({"master_start_timeout": "x"}).primary_start_timeout == 300

    def test_huge_integer_keeps_default(self) -> None:
        s = HaSettings.from_config({"ttl": 10**400, "pause": True})
        assert s.ttl == 30.0
        assert s.pause is True

    @pytest.mark.parametrize(("ttl", "margin"), [
        (30, 5.0), (100, 5.0), (20, 5.0), (10, 2.5), (8, 2.0), (2, 0.5), (1, 0.5),
    ])
    def test_safety_margin(self, ttl: float, margin: float) -> None:
        assert HaSettings(ttl=ttl).safety_margin == margin


# --------------------------------------------------------------------------- properties
#
# hypothesis is not installed in /opt/pgha/venv, so these properties are checked over a
# fixed-seed random sample of states instead (deterministic, reproducible by seed).

NAMES = (ME, "pg2", "pg3")


def _rand_tags(rng: random.Random) -> Tags:
    return Tags(nofailover=rng.random() < 0.15, failover_priority=rng.choice([0, 1, 1, 2]),
                clonefrom=rng.random() < 0.2,
                replicatefrom=rng.choice([None, None, "pg2", "pg3", ME]))


def _rand_member(rng: random.Random, name: str) -> Member:
    return Member(name=name, conn_url=rng.choice([url(name), url(name), ""]),
                  role=rng.choice(["primary", "replica", "demoted", "uninitialized"]),
                  state=rng.choice(["running", "running", "starting", "stopped", "crashed"]),
                  xlog_location=rng.choice([None, POS - MB, POS, POS + 10]),
                  timeline=rng.choice([None, 1, 2, 3]), tags=_rand_tags(rng))


def _rand_view(rng: random.Random) -> ClusterView | None:
    if rng.random() < 0.1:
        return None
    members = {n: _rand_member(rng, n) for n in NAMES if rng.random() < 0.8}
    settings = HaSettings(pause=rng.random() < 0.15, use_slots=rng.random() < 0.8,
                          use_pg_rewind=rng.random() < 0.5,
                          check_timeline=rng.random() < 0.3,
                          primary_start_timeout=rng.choice([0, 30, 300]))
    history = rng.choice([(), (HistoryEntry(1, POS - 10),),
                          (HistoryEntry(1, POS - MB), HistoryEntry(2, POS))])
    return ClusterView(initialize=rng.choice([None, "", SYSID, SYSID, SYSID]),
                       settings=settings, leader=_rand_leader(rng) if rng.random() < 0.6
                       else None, members=members,
                       optime=rng.choice([None, POS - MB, POS, POS + 2 * MB]),
                       history=history)


def _rand_leader(rng: random.Random) -> Leader:
    """A leader key, bound to the session of the member it names - or, now and then, one
    naming ME bound to another session (a previous process of ours) or to none."""
    name = rng.choice(NAMES)
    session: str | None = session_of(name)
    if name == ME and rng.random() < 0.2:
        session = rng.choice(["session-old", None])
    return Leader(name, 1, session)


def _rand_local(rng: random.Random) -> LocalState:
    running = rng.random() < 0.6
    pg = PgState(
        data=rng.choice([DataState.VALID] * 6 + [DataState.EMPTY, DataState.INVALID]),
        running=running, accepting=running and rng.random() < 0.8,
        role=rng.choice([PgRole.PRIMARY, PgRole.REPLICA, None]) if running
        else rng.choice([None, None, PgRole.PRIMARY]),
        sysid=rng.choice([SYSID, SYSID, SYSID, "42", None]),
        timeline=rng.choice([None, 1, 2, 3]), wal_position=rng.choice([None, POS - MB, POS]),
        control_state=rng.choice(list(ControlState)),
        upstream=rng.choice([None, "pg2", "pg3"]),
        down_since=rng.choice([None, NOW - 1, NOW - 1000]),
        busy=None if rng.random() < 0.9 else "creating replica",
    )
    peers: dict[str, PeerStatus | None] = {}
    for n in NAMES[1:]:
        if rng.random() < 0.7:
            peers[n] = None if rng.random() < 0.3 else PeerStatus(
                name=n, role=rng.choice(["primary", "replica"]),
                state=rng.choice(["running", "stopped"]),
                wal_position=rng.choice([None, POS - MB, POS, POS + 1]),
                timeline=rng.choice([None, 1, 2]), tags=_rand_tags(rng))
    return LocalState(name=ME, tags=_rand_tags(rng), pg=pg, dcs_ok=rng.random() < 0.85,
                      lease_deadline=rng.choice([None, NOW - 1, NOW, NOW + 5]), peers=peers,
                      member_seen={"pg4": NOW - 10}, shutting_down=rng.random() < 0.1,
                      session_id=session_of(ME))


def _samples(n: int = 20_000, seed: int = 20240601) -> list[tuple[ClusterView | None,
                                                                   LocalState]]:
    rng = random.Random(seed)
    return [(_rand_view(rng), _rand_local(rng)) for _ in range(n)]


SAMPLES = _samples()


def _leader_is_us(v: ClusterView | None) -> bool:
    """We hold the lock: the key names us and is bound to our session (rule 7)."""
    return (v is not None and v.leader is not None and v.leader.name == ME
            and v.leader.session == session_of(ME))


class TestProperties:
    def test_samples_cover_the_interesting_branches(self) -> None:
        reasons = {decide(v, loc, NOW).reason for v, loc in SAMPLES}
        for r in (Reason.RACE, Reason.PROMOTE_HOLDING_LOCK, Reason.LEASE_UNCONFIRMED,
                  Reason.RESTART_PRIMARY, Reason.REJOIN, Reason.RETAKE_LOCK_AS_PRIMARY,
                  Reason.RACE_REFUSED_LAG, Reason.CLONE, Reason.SHUTDOWN, Reason.PAUSED):
            assert r in reasons, r

    def test_promote_only_after_acquire_unless_already_leader(self) -> None:
        for v, loc in SAMPLES:
            actions = decide(v, loc, NOW).actions
            for i, a in enumerate(actions):
                if isinstance(a, Promote) and not _leader_is_us(v):
                    assert any(isinstance(b, AcquireLeader) for b in actions[:i]), (v, loc)

    def test_start_as_primary_only_when_leader(self) -> None:
        for v, loc in SAMPLES:
            for a in decide(v, loc, NOW).actions:
                if isinstance(a, StartPostgres) and a.role == "primary":
                    assert _leader_is_us(v), (v, loc)

    def test_writable_primary_with_expired_lease_demotes_first(self) -> None:
        checked = 0
        for v, loc in SAMPLES:
            pg = loc.pg
            expired = loc.lease_deadline is None or loc.lease_deadline <= NOW
            paused = v is not None and v.settings.pause
            if not (pg.running and pg.role is PgRole.PRIMARY and expired
                    and not loc.shutting_down and not paused):
                continue
            if not (_leader_is_us(v) or v is None or not loc.dcs_ok):
                continue
            checked += 1
            d = decide(v, loc, NOW)
            assert d.actions and d.actions[0] == Demote(StopMode.IMMEDIATE), (v, loc)
        assert checked > 100

    def test_a_key_merely_holding_our_name_is_never_acted_on_as_leader(self) -> None:
        """DESIGN.md rule 7: a leader key naming us but bound to another session is neither
        released nor refreshed nor acted on; the only thing done to it is a rebind."""
        checked = 0
        leader_only = (ReleaseLeader, Promote, PublishStatus, SyncSlots, HandOver,
                       ClearFailover, AcquireLeader)
        for v, loc in SAMPLES:
            if v is None or v.leader is None or v.leader.name != ME or _leader_is_us(v):
                continue
            checked += 1
            d = decide(v, loc, NOW)
            for a in d.actions:
                assert not isinstance(a, leader_only), (d, v, loc)
                assert not (isinstance(a, StartPostgres) and a.role == "primary"), (d, v, loc)
                assert not (isinstance(a, Demote) and a.release_lock), (d, v, loc)
        assert checked > 200

    def test_no_promotion_or_lock_taking_without_dcs(self) -> None:
        for v, loc in SAMPLES:
            if v is not None and loc.dcs_ok:
                continue
            for a in decide(v, loc, NOW).actions:
                assert not isinstance(a, AcquireLeader | Promote), (v, loc)
                assert not (isinstance(a, StartPostgres) and a.role == "primary"), (v, loc)


# --------------------------------------------------------------------------- failsafe mode


FAILSAFE = HaSettings(failsafe_mode=True)


class TestFailsafe:
    def _leader_view(self) -> ClusterView:
        return view(member(ME, role="primary"), member("pg2"), member("pg3"), leader=ME,
                    settings=FAILSAFE)

    def test_confirmed_primary_stays_writable_without_dcs(self) -> None:
        loc = local(primary_pg(), dcs_ok=False, lease_deadline=NOW - 1,
                    failsafe_deadline=NOW + 5)
        d = decide(self._leader_view(), loc, NOW)
        assert d.reason is Reason.FAILSAFE_ACTIVE
        assert d.actions == ()

    def test_unconfirmed_primary_demotes(self) -> None:
        loc = local(primary_pg(), dcs_ok=False, lease_deadline=NOW - 1, failsafe_deadline=None)
        d = decide(self._leader_view(), loc, NOW)
        assert d.actions == (Demote(StopMode.IMMEDIATE),)

    def test_expired_confirmation_demotes(self) -> None:
        loc = local(primary_pg(), dcs_ok=False, lease_deadline=NOW - 2,
                    failsafe_deadline=NOW - 1)
        assert decide(self._leader_view(), loc, NOW).actions == (Demote(StopMode.IMMEDIATE),)

    def test_confirmation_ignored_when_failsafe_mode_is_off(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        loc = local(primary_pg(), dcs_ok=False, lease_deadline=NOW - 1,
                    failsafe_deadline=NOW + 5)
        assert decide(v, loc, NOW).actions == (Demote(StopMode.IMMEDIATE),)

    def test_confirmation_does_not_replace_the_lease_while_the_dcs_answers(self) -> None:
        loc = local(primary_pg(), dcs_ok=True, lease_deadline=NOW - 1,
                    failsafe_deadline=NOW + 5)
        assert decide(self._leader_view(), loc, NOW).actions == (Demote(StopMode.IMMEDIATE),)

    def test_replica_asked_by_a_primary_stays_out_of_the_race(self) -> None:
        v = view(member(ME), member("pg2"), member("pg3"), leader=None, settings=FAILSAFE)
        loc = local(replica_pg(), failsafe_primary="pg2")
        d = decide(v, loc, NOW)
        assert d.reason is Reason.RACE_REFUSED_FAILSAFE_PRIMARY_ALIVE
        assert "pg2" in d.message
        assert all(not isinstance(a, AcquireLeader) for a in d.actions)

    def test_leader_publishes_the_member_list_when_it_changed(self) -> None:
        d = decide(self._leader_view(), local(primary_pg()), NOW)
        status = [a for a in d.actions if isinstance(a, PublishStatus)]
        assert status and status[0].failsafe == {
            n: f"http://{n}.example:8008/patroni" for n in (ME, "pg2", "pg3")}

    def test_leader_does_not_rewrite_an_unchanged_member_list(self) -> None:
        v = replace(self._leader_view(), failsafe={
            n: f"http://{n}.example:8008/patroni" for n in (ME, "pg2", "pg3")})
        d = decide(v, local(primary_pg()), NOW)
        assert published("pg2", "pg3") in d.actions


class TestNeverWritableOnAnUnconfirmedLease:
    """The store may keep our leader key longer than we can vouch for it (etcd renews every
    lease when it elects a new raft leader): the key naming us is not enough."""

    def test_stopped_former_primary_holding_the_key_is_not_restarted_as_primary(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        pg = stopped_pg(control_state=ControlState.IN_PRODUCTION)
        d = decide(v, local(pg, lease_deadline=NOW - 0.1), NOW)
        assert d.reason is Reason.LEASE_UNCONFIRMED
        assert d.actions == ()

    def test_replica_holding_the_key_is_not_promoted(self) -> None:
        v = view(member(ME), member("pg2"), leader=ME)
        d = decide(v, local(replica_pg(), lease_deadline=None), NOW)
        assert d.reason is Reason.LEASE_UNCONFIRMED
        assert d.actions == ()

    def test_confirmed_lease_restarts_in_place(self) -> None:
        v = view(member(ME, role="primary"), member("pg2"), leader=ME)
        pg = stopped_pg(control_state=ControlState.IN_PRODUCTION)
        d = decide(v, local(pg, lease_deadline=NOW + 3), NOW)
        assert d.actions == (StartPostgres("primary"),)
