"""DESIGN.md safety rule 7 in the decision core: the lock is ours only when the leader key
names us AND is bound to our session; a key that merely holds our name is rebound (a running
or crashed primary of ours) or left alone - never released, refreshed or acted on as leader."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.test_decide import (
    ME,
    NOW,
    local,
    member,
    primary_pg,
    replica_pg,
    session_of,
    starting_pg,
    stopped_pg,
    view,
)

from pgha.core.actions import (
    Demote,
    RebindLeader,
    ReleaseLeader,
    StopMode,
    StopPostgres,
)
from pgha.core.decide import decide
from pgha.core.decision import Reason
from pgha.core.lock import holds_lock, names_us, stale_lock
from pgha.core.model import ClusterView, ControlState, DataState, HaSettings, Leader, PgState

OLD = "session-of-our-previous-process"
REVISION = 41


def stale_view(session: str | None = OLD, **kw: object) -> ClusterView:
    """The leader key names us but is bound to ``session`` (not ours)."""
    base = view(member(ME, role="primary"), member("pg2"), member("pg3"), leader=ME,
                **kw)  # type: ignore[arg-type]
    return replace(base, leader=Leader(ME, REVISION, session))


PAUSED = HaSettings(pause=True)


def test_ownership_needs_our_name_and_our_session() -> None:
    loc = local(primary_pg())
    ours = view(member(ME, role="primary"), leader=ME)
    assert names_us(ours, loc) and holds_lock(ours, loc) and not stale_lock(ours, loc)
    stale = stale_view()
    assert names_us(stale, loc) and not holds_lock(stale, loc) and stale_lock(stale, loc)
    other = view(member(ME), member("pg2", role="primary"), leader="pg2")
    assert not names_us(other, loc) and not stale_lock(other, loc)
    # without a session of our own nothing is ours, not even a key bound to no session
    unbound = stale_view(session=None)
    no_session = local(primary_pg(), session_id=None)
    assert not holds_lock(unbound, no_session) and stale_lock(unbound, no_session)
    assert not holds_lock(ours, no_session)


def test_bound_key_is_our_lock() -> None:
    d = decide(view(member(ME, role="primary"), member("pg2"), leader=ME),
               local(primary_pg()), NOW)
    assert d.reason is Reason.LEADER_HEALTHY


def test_running_primary_rebinds_before_counting_as_leader() -> None:
    d = decide(stale_view(), local(primary_pg()), NOW)
    assert d.reason is Reason.LEADER_REBIND
    assert d.actions == (RebindLeader(REVISION),)  # nothing leader-only in the same list
    assert OLD in d.message


def test_running_primary_with_unconfirmed_lease_demotes_instead() -> None:
    for deadline in (None, NOW - 1, NOW):
        d = decide(stale_view(), local(primary_pg(), lease_deadline=deadline), NOW)
        assert d.reason is Reason.LEASE_UNCONFIRMED
        assert d.actions == (Demote(StopMode.IMMEDIATE),)


@pytest.mark.parametrize("control", [ControlState.IN_PRODUCTION, ControlState.SHUT_DOWN])
def test_crashed_primary_rebinds_before_restarting_as_primary(control: ControlState) -> None:
    """A node that died with the lock and came back before its old session expired."""
    pg = stopped_pg(control_state=control)
    d = decide(stale_view(), local(pg), NOW)
    assert d.reason is Reason.LEADER_REBIND and d.actions == (RebindLeader(REVISION),)
    # once a later view shows the key bound to our session, it restarts as primary
    rebound = replace(stale_view(), leader=Leader(ME, REVISION + 1, session_of(ME)))
    d = decide(rebound, local(pg), NOW)
    assert d.reason is Reason.RESTART_PRIMARY


@pytest.mark.parametrize("pg", [
    replica_pg(),  # not the primary that key protects: the race decides again
    starting_pg(),
    stopped_pg(),  # replica data
    primary_pg(sysid="42"),  # another cluster's data
    PgState(data=DataState.EMPTY),
    PgState(data=DataState.INVALID),
], ids=["replica", "starting", "stopped_replica", "other_sysid", "empty", "invalid"])
def test_other_states_leave_the_key_alone(pg: PgState) -> None:
    d = decide(stale_view(), local(pg), NOW)
    assert d.reason is Reason.LEADER_KEY_NOT_OURS
    assert d.actions == ()


def test_busy_member_waits() -> None:
    d = decide(stale_view(), local(replica_pg(busy="creating replica")), NOW)
    assert d.reason is Reason.BUSY and d.actions == ()


def test_paused_member_never_releases_a_key_bound_to_another_session() -> None:
    """The reported bug: a second agent with a running member's name, in maintenance mode,
    released that member's lock over and over."""
    for pg in (replica_pg(), stopped_pg(), stopped_pg(control_state=ControlState.IN_PRODUCTION),
               PgState(data=DataState.EMPTY)):
        d = decide(stale_view(settings=PAUSED), local(pg), NOW)
        assert d.reason is Reason.LEADER_KEY_NOT_OURS, (pg, d)
        assert d.actions == ()
    # the same states with the key bound to our session do release it (a stale lock of ours)
    ours = view(member(ME), leader=ME, settings=PAUSED)
    assert decide(ours, local(replica_pg()), NOW).actions == (ReleaseLeader(),)


def test_paused_running_primary_rebinds() -> None:
    d = decide(stale_view(settings=PAUSED), local(primary_pg()), NOW)
    assert d.reason is Reason.LEADER_REBIND and d.actions == (RebindLeader(REVISION),)
    assert d.message.startswith("paused: ")


def test_clean_stop_does_not_release_a_key_bound_to_another_session() -> None:
    d = decide(stale_view(), local(primary_pg(), shutting_down=True), NOW)
    assert d.reason is Reason.SHUTDOWN
    assert d.actions == (StopPostgres(StopMode.FAST),)
    ours = view(member(ME, role="primary"), leader=ME)
    d = decide(ours, local(primary_pg(), shutting_down=True), NOW)
    assert d.actions == (StopPostgres(StopMode.FAST), ReleaseLeader())
