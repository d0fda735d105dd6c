"""The agent's decision records (``pgha.agent.decisions``): what is kept, repeats counted not
repeated, the bound, and the JSON ``GET /decisions`` serves."""

from __future__ import annotations

import logging

import pytest
from tests.unit import test_agent_cycle
from tests.unit.test_agent_cycle import Member
from tests.unit.test_core_race import race_view
from tests.unit.test_decide import MB, NOW, POS, local, peer, replica_pg

from pgha.agent.decisions import DecisionLog
from pgha.core.actions import AcquireLeader, PublishStatus
from pgha.core.decide import decide
from pgha.core.decision import Decision, Reason, decision
from pgha.core.explain import explain

T0 = 1_800_000_000.0
member = test_agent_cycle.member  # the fixture: one member's real cycle on a fake world
HEALTHY = decision(Reason.REPLICA_HEALTHY, "streaming from pg1")
LEADER = decision(Reason.LEADER_HEALTHY, "holding the leader lock", PublishStatus(POS))


def note(log: DecisionLog, d: Decision, wall: float, role: str = "replica",
         acted: bool = False, **kw: object) -> object:
    return log.note(d, acted=acted, wall=wall, role=role, timeline=1, position=POS, lag=0,
                    leader=None, **kw)  # type: ignore[arg-type]


def test_refusals_are_kept_and_repeats_only_counted() -> None:
    log = DecisionLog()
    v = race_view()
    loc = local(replica_pg(wal_position=POS - 3 * MB), peers={"pg2": None})
    refusal = decide(v, loc, NOW)
    assert refusal.reason is Reason.RACE_REFUSED_LAG
    first = note(log, refusal, T0, standings=explain(v, loc, refusal))
    assert first is not None
    for i in range(1, 5):
        assert note(log, refusal, T0 + i, standings=explain(v, loc, refusal)) is None
    (record,) = log.records()
    assert (record.count, record.time, record.last_seen) == (5, T0, T0 + 4)
    data = log.to_json()[0]
    assert data["reason"] == "race_refused_lag" and data["count"] == 5
    assert data["time"] == "2027-01-15T08:00:00.000+00:00"
    assert data["last_seen"] == "2027-01-15T08:00:04.000+00:00"
    me, pg2, pg3 = data["standings"]
    assert (me["name"], me["code"], me["lag"], me["limit"]) == ("pg1", "lag", 3 * MB, MB)
    assert (pg2["name"], pg2["code"]) == ("pg2", "unreachable")
    assert (pg3["name"], pg3["code"], pg3["eligible"]) == ("pg3", "unreachable", False)
    assert "lag 3 MB > 1 MB" in record.describe() and "pg2 unreachable" in record.describe()


def test_repeat_takes_the_latest_inputs() -> None:
    log = DecisionLog()
    v = race_view()
    refusal = decision(Reason.RACE_REFUSED_NOFAILOVER, "tagged nofailover: never taking the lock")
    loc = local(replica_pg(), peers={"pg2": peer("pg2")})
    note(log, refusal, T0, standings=explain(v, loc, refusal))
    loc = local(replica_pg(), peers={"pg2": None})
    note(log, refusal, T0 + 1, standings=explain(v, loc, refusal))
    (record,) = log.records()
    assert [s.code for s in record.standings] == ["nofailover", "unreachable", "unreachable"]


def test_only_changes_are_kept() -> None:
    log = DecisionLog()
    assert note(log, HEALTHY, T0) is not None  # the first decision: a change of reason
    assert note(log, decision(Reason.REPLICA_HEALTHY, "streaming from pg1, lag 10"), T0 + 1) \
        is None  # same reason and role, nothing done: not kept
    assert note(log, LEADER, T0 + 2, role="primary") is not None  # new reason and role
    assert note(log, decision(Reason.LEADER_HEALTHY, "other words", PublishStatus(POS)),
                T0 + 3, role="primary") is None  # housekeeping only: not acted
    taken = decision(Reason.RACE, "no leader: taking the lock", AcquireLeader())
    assert note(log, taken, T0 + 4, acted=True) is not None
    assert note(log, decision(Reason.RACE, "again, other words", AcquireLeader()), T0 + 5,
                acted=True) is not None  # acted: kept though the reason did not change
    assert [r.reason for r in log.records()] == ["replica_healthy", "leader_healthy", "race",
                                                  "race"]
    assert log.records()[2].actions == ("AcquireLeader",)


def test_bounded_oldest_dropped_first_and_limit() -> None:
    log = DecisionLog(size=3)
    for i in range(5):
        note(log, decision(Reason.RACE_REFUSED_PEER_AHEAD, f"pg2 is ahead ({i} > 0)"), T0 + i)
    assert [r.message for r in log.records()] == [f"pg2 is ahead ({i} > 0)" for i in (2, 3, 4)]
    assert [r["message"] for r in log.to_json(2)] == ["pg2 is ahead (3 > 0)",
                                                      "pg2 is ahead (4 > 0)"]
    assert len(log.to_json(10)) == 3 and log.to_json(0) == []


async def test_the_cycle_logs_extras_every_cycle_and_each_record_once(
        member: Member, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.agent")
    assert await member.lease.confirm()
    for _ in range(3):  # bootstrap, then a healthy leader twice
        assert await member.cycle.run_once()
    lines = [r for r in caplog.records if r.getMessage().startswith("decision ")]
    per_cycle = [r for r in lines if not r.getMessage().startswith("decision recorded")]
    assert [r.__dict__["reason"] for r in per_cycle] == ["bootstrap", "leader_healthy",
                                                         "leader_healthy"]
    last = per_cycle[-1].__dict__
    assert (last["role"], last["leader"], last["timeline"], last["lag"]) == (
        "primary", "m0", 1, None)
    assert per_cycle[0].__dict__["role"] == "uninitialized"
    recorded = [r for r in lines if r.getMessage().startswith("decision recorded")]
    assert [r.__dict__["decision"]["reason"] for r in recorded] == ["bootstrap",
                                                                    "leader_healthy"]
    records = member.cycle.decisions.records()
    assert [(r.reason, r.count) for r in records] == [("bootstrap", 1), ("leader_healthy", 2)]
    assert records[0].time == member.world.wall()  # the agent's wall clock
