"""Restart conditions, scheduled restarts and the callback lifecycle rules (pure helpers of the
agent's command side)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pgha.agent.commands import ScheduledRestart
from pgha.core.commands import Restart, merge_patch
from pgha.core.model import PgRole, PgState
from pgha.core.operator import restart_problem
from pgha.pg.callbacks import lifecycle_callbacks
from pgha.pg.configurator import PgConfigurator


@pytest.mark.parametrize("conditions,role,pending,version,problem", [
    (Restart(), "replica", False, 150007, None),
    (Restart(restart_pending=True), "replica", False, 150007, "no restart is pending"),
    (Restart(restart_pending=True), "primary", True, 150007, None),
    (Restart(role="master"), "primary", False, 150007, None),
    (Restart(role="primary"), "replica", False, 150007, "role is replica, not primary"),
    (Restart(role="any"), "replica", False, 150007, None),
    (Restart(postgres_version="15.8"), "replica", False, 150007, None),
    (Restart(postgres_version="15.7"), "replica", False, 150007,
     "PostgreSQL 15.7 is not older than 15.7"),
    (Restart(postgres_version="15"), "replica", False, 160004,
     "PostgreSQL 16.4 is not older than 15"),
    (Restart(postgres_version="16"), "replica", False, None,
     "the running PostgreSQL version is unknown"),
])
def test_restart_conditions(conditions: Restart, role: str, pending: bool,
                            version: int | None, problem: str | None) -> None:
    assert restart_problem(conditions, role, pending, version) == problem


def test_scheduled_restart_json() -> None:
    sched = ScheduledRestart(1_800_000_000.0, Restart(role="replica", restart_pending=True))
    assert sched.to_json() == {"schedule": "2027-01-15T08:00:00+00:00", "role": "replica",
                               "restart_pending": True}


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB", "a": 1}}, "x": [1]}
    patch = {"ttl": None, "postgresql": {"parameters": {"a": None, "b": 2}}, "x": {"y": 1}}
    assert merge_patch(target, patch) == {"postgresql": {"parameters": {"work_mem": "4MB",
                                                                        "b": 2}},
                                          "x": {"y": 1}}
    assert target["ttl"] == 30  # not modified


@pytest.mark.parametrize("before,after,last,restarted,events", [
    ((False, None), (True, "replica"), None, False, [("on_start", "replica")]),
    ((False, None), (True, "replica"), "replica", False, [("on_start", "replica")]),
    # a former primary back as replica: a role change, not just a start
    ((False, None), (True, "replica"), "primary", False, [("on_role_change", "replica")]),
    ((True, "replica"), (True, "primary"), "replica", False, [("on_role_change", "primary")]),
    ((True, "primary"), (False, None), "primary", False, [("on_stop", "primary")]),
    ((True, "primary"), (True, "primary"), "primary", True, [("on_restart", "primary")]),
    ((True, "replica"), (True, "replica"), "replica", False, []),
    ((False, None), (False, None), "primary", False, []),
    # a replica taking the lock of a standby cluster (Patroni's standby_cluster feature)
    ((True, "replica"), (True, "standby_leader"), "replica", False,
     [("on_role_change", "standby_leader")]),
])
def test_lifecycle_callbacks(before: tuple[bool, str | None], after: tuple[bool, str | None],
                             last: str | None, restarted: bool,
                             events: list[tuple[str, str]]) -> None:
    assert lifecycle_callbacks(before, after, last, restarted) == events


def test_the_configurator_reports_a_standby_leader_as_such() -> None:
    fired: list[tuple[str, str]] = []
    configurator = PgConfigurator.__new__(PgConfigurator)
    configurator.callbacks = SimpleNamespace(  # type: ignore[assignment]
        fire=lambda action, role: fired.append((action, role)))
    configurator._pg_seen, configurator._last_role = (True, "replica"), "replica"
    running = PgState(running=True, accepting=True, role=PgRole.REPLICA)
    configurator.fire_lifecycle_callbacks(running, restarted=False, standby_leader=True)
    assert fired == [("on_role_change", "standby_leader")]
