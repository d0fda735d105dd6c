"""Withdrawing the request a failed hand-over left behind (``switchover_failed``): the core
decides it, before anything may restart PostgreSQL as primary or hand over again; the agent
reports the failure (``LocalState.handover_failed``) until the request is gone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_decide import ME, NOW, local, primary_pg, stopped_pg
from tests.unit.test_decide_operator import WALL, cluster, peers

from pgha.agent.cycle import DecisionCycle
from pgha.core.actions import ClearFailover, HandOver, StartPostgres, Upstream
from pgha.core.decide import decide
from pgha.core.decision import RACE_REFUSALS, Decision, Reason
from pgha.core.model import ControlState, HaSettings
from pgha.core.switchover import request_for_leader

REQUEST = {"leader": ME, "member": "pg2"}
STOPPED = stopped_pg(control_state=ControlState.SHUT_DOWN, stopped_by_agent=True)


def test_stopped_leader_withdraws_before_restarting() -> None:
    v = cluster(failover=REQUEST)
    d = decide(v, local(STOPPED, wall_time=WALL, handover_failed=True), NOW)
    assert d.reason is Reason.SWITCHOVER_FAILED
    assert d.actions == (ClearFailover(),)
    assert "pg2" in d.message
    # once the key is gone the normal rules restart PostgreSQL as primary
    d = decide(cluster(), local(STOPPED, wall_time=WALL, handover_failed=True), NOW)
    assert d.reason is Reason.RESTART_PRIMARY and d.actions == (StartPostgres("primary"),)


def test_running_leader_withdraws_instead_of_handing_over_again() -> None:
    v = cluster(failover=REQUEST)
    loc = local(primary_pg(), wall_time=WALL, peers=peers())
    assert isinstance(decide(v, loc, NOW).actions[0], HandOver)
    d = decide(v, local(primary_pg(), wall_time=WALL, peers=peers(), handover_failed=True),
               NOW)
    assert d.reason is Reason.SWITCHOVER_FAILED and d.actions == (ClearFailover(),)


@pytest.mark.parametrize("failover", [{"member": "pg2"}, {"leader": ME}])
def test_a_request_naming_no_leader_is_ours_too(failover: dict[str, str]) -> None:
    d = decide(cluster(failover=failover), local(STOPPED, handover_failed=True), NOW)
    assert d.reason is Reason.SWITCHOVER_FAILED


def test_nothing_to_withdraw() -> None:
    # no request, a request for another leader, or the lock is not ours
    loc = local(STOPPED, wall_time=WALL, handover_failed=True)
    assert decide(cluster(), loc, NOW).reason is not Reason.SWITCHOVER_FAILED
    other = cluster(failover={"leader": "pg3", "member": "pg2"})
    assert decide(other, loc, NOW).reason is not Reason.SWITCHOVER_FAILED
    taken = cluster(leader="pg2", failover=REQUEST)
    assert decide(taken, loc, NOW).reason is not Reason.SWITCHOVER_FAILED
    # and without the agent's report a request is acted on normally
    d = decide(cluster(failover=REQUEST), local(STOPPED, wall_time=WALL), NOW)
    assert d.reason is Reason.RESTART_PRIMARY


def test_fail_closed_and_shutdown_come_first() -> None:
    v = cluster(failover=REQUEST)
    d = decide(v, local(primary_pg(), handover_failed=True, lease_deadline=NOW - 1), NOW)
    assert d.reason is Reason.LEASE_UNCONFIRMED
    d = decide(v, local(STOPPED, handover_failed=True, shutting_down=True), NOW)
    assert d.reason is Reason.SHUTDOWN


def test_withdrawal_waits_for_the_dcs() -> None:
    d = decide(cluster(failover=REQUEST), local(STOPPED, handover_failed=True, dcs_ok=False),
               NOW)
    assert d.reason is not Reason.SWITCHOVER_FAILED
    assert not any(isinstance(a, StartPostgres) and a.role == "primary" for a in d.actions)


def test_withdrawal_in_pause() -> None:
    v = cluster(failover=REQUEST, settings=HaSettings(pause=True))
    d = decide(v, local(STOPPED, handover_failed=True), NOW)
    assert d.reason is Reason.SWITCHOVER_FAILED


def test_request_for_leader() -> None:
    assert request_for_leader(REQUEST, ME) is not None
    assert request_for_leader({"member": "pg2"}, ME) is not None
    assert request_for_leader(REQUEST, "pg3") is None
    assert request_for_leader(None, ME) is None
    assert request_for_leader({"garbage": 1}, ME) is None


# --------------------------------------------------------------------------- the agent's part


def cycle(failed: Upstream | None = None, last: Decision | None = None) -> DecisionCycle:
    stages: Any = SimpleNamespace(
        executor=SimpleNamespace(failed_handover=failed),
        observer=SimpleNamespace(settings=HaSettings(loop_wait=10), dcs_ok=True, view=None),
        publisher=SimpleNamespace(status=SimpleNamespace(pg=stopped_pg())),
        lease=SimpleNamespace(confirmed_until=None),
    )
    c = DecisionCycle(stages, asyncio.Event())
    c.last_decision = last
    return c


def test_cycle_reports_a_failed_hand_over_until_the_request_is_gone() -> None:
    c = cycle(failed=Upstream("pg2", "postgres://pg2"))
    v, loc = cluster(failover=REQUEST), local(STOPPED)
    c._track_failed_handover(v, loc)
    assert c.handover_failed and c.wake.is_set()  # the withdrawal runs at once
    c.s.executor.failed_handover = None
    c._track_failed_handover(v, loc)  # the request is still there (the withdrawal ran)
    assert c.handover_failed
    c._track_failed_handover(v, local(STOPPED, dcs_ok=False))  # DCS unknown: keep it
    c._track_failed_handover(None, loc)
    assert c.handover_failed
    c._track_failed_handover(cluster(), loc)  # gone
    assert not c.handover_failed


BACKING_OFF = {Reason.RACE_REFUSED_PRE_PROMOTE, Reason.CANDIDATE_REFUSED_PRE_PROMOTE}


@pytest.mark.parametrize("reason", sorted(RACE_REFUSALS - BACKING_OFF))
def test_cycle_retries_soon_after_every_refusal(reason: Reason) -> None:
    assert cycle(last=Decision((), reason, ""))._sleep_time(ok=True) == 0.5


@pytest.mark.parametrize("reason", sorted(BACKING_OFF))
def test_cycle_sleeps_through_a_pre_promote_backoff(reason: Reason) -> None:
    # the backoff lasts ttl: nothing to re-observe soon
    assert cycle(last=Decision((), reason, ""))._sleep_time(ok=True) == 10


def test_cycle_sleeps_after_a_quiet_decision() -> None:
    assert cycle(last=Decision((), Reason.REPLICA_HEALTHY, ""))._sleep_time(ok=True) == 10
