"""A replica's acceptance of ``POST /failsafe`` (:meth:`Failsafe.accept`): only the primary it
knows keeps it out of the leader race."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.api_support import cluster_view, replica_status

from pgha.agent.clock import Clock
from pgha.agent.failsafe import Failsafe
from pgha.core.model import ClusterView, HaSettings, PgRole

TTL = 30.0
REPLICA = replica_status().pg


def _failsafe() -> Failsafe:
    return Failsafe("pg2", clock=Clock(monotonic=lambda: 100.0, wall=lambda: 0.0))


def _view(leader: str | None = "pg1", failsafe: dict[str, str] | None = None) -> ClusterView:
    return replace(cluster_view(leader=leader), settings=HaSettings(failsafe_mode=True),
                   failsafe=failsafe)


def test_the_leader_of_the_last_view_is_accepted() -> None:
    failsafe = _failsafe()
    assert failsafe.accept("pg1", _view(), REPLICA) == (200, "Accepted")
    assert failsafe.asking_primary(TTL) == "pg1"


@pytest.mark.parametrize("name", ["pg3", "pg2", "intruder"],
                         ids=["other-member", "ourselves", "unknown"])
def test_anyone_but_the_leader_is_refused(name: str) -> None:
    failsafe = _failsafe()
    view = _view(failsafe={"pg1": "http://10.0.0.1:8008/patroni",
                           "pg2": "http://10.0.0.2:8008/patroni",
                           "pg3": "http://10.0.0.3:8008/patroni"})
    code, _ = failsafe.accept(name, view, REPLICA)
    assert code == 409
    assert failsafe.asking_primary(TTL) is None


def test_without_a_leader_a_member_of_the_failsafe_key_is_accepted() -> None:
    failsafe = _failsafe()
    view = _view(leader=None, failsafe={"pg1": "http://10.0.0.1:8008/patroni",
                                        "pg2": "http://10.0.0.2:8008/patroni"})
    assert failsafe.accept("pg9", view, REPLICA)[0] == 409
    assert failsafe.accept("pg2", view, REPLICA)[0] == 409  # not ourselves
    assert failsafe.asking_primary(TTL) is None
    assert failsafe.accept("pg1", view, REPLICA) == (200, "Accepted")
    assert failsafe.asking_primary(TTL) == "pg1"


def test_without_a_leader_or_failsafe_key_nobody_is_accepted() -> None:
    failsafe = _failsafe()
    assert failsafe.accept("pg1", _view(leader=None), REPLICA)[0] == 409
    assert failsafe.asking_primary(TTL) is None


def test_off_and_primary_answers_come_first() -> None:
    failsafe = _failsafe()
    off = replace(cluster_view(), settings=HaSettings(failsafe_mode=False))
    assert failsafe.accept("pg1", off, REPLICA)[0] == 502
    assert failsafe.accept("pg1", None, REPLICA)[0] == 502
    primary = replace(REPLICA, role=PgRole.PRIMARY)
    assert failsafe.accept("pg1", _view(), primary)[0] == 500
    assert failsafe.asking_primary(TTL) is None
