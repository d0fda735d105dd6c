"""Failing actions never spin (DESIGN.md rule 9): the retry gate's backoff, the executor that
honours it, the failure in GET /patroni, the member key and the metrics; a failed bootstrap
cleans up and ends the agent with its cause; post_bootstrap is killed with its process group."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_stubs import BootPg, NullSink, OpenLease
from tests.support.pg_settings import local_pg_settings
from tests.support.processes import assert_gone

from pgha.agent.bootstrap import BootstrapFailed, ClusterBootstrap
from pgha.agent.clock import Clock
from pgha.agent.executor import Executor
from pgha.agent.metrics import AgentMetrics
from pgha.agent.retry import ErrorCapture, RetryGate
from pgha.core.actions import (
    CloneReplica,
    CopyLogicalSlots,
    Reinitialize,
    Rejoin,
    SlotSpec,
    StartPostgres,
    StopMode,
    Upstream,
)
from pgha.core.model import PgState, Tags
from pgha.core.status import ActionFailure, AgentStatus
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

PG1 = Upstream("pg1", "postgres://pg1:5432/postgres")
PG2 = Upstream("pg2", "postgres://pg2:5432/postgres")


@dataclass
class FakeClock:
    t: float = 100.0

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.t, wall=lambda: 1_700_000_000.0 + self.t)


def test_copying_logical_slots_is_gated_per_source() -> None:
    """The copy fails for as long as the leader's slot needs WAL this replica lacks: it is
    retried with backoff, and from a new leader at once."""
    fc = FakeClock()
    gate = RetryGate(fc.clock(), base=1.0, cap=8.0)
    copy = CopyLogicalSlots(PG1, (SlotSpec("cdc", "logical", "postgres", "test_decoding"),))
    assert gate.kind(copy) == "copy_slots"
    assert [gate.record(copy, False, "too old") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert gate.wait_left(copy) == 4.0
    assert gate.wait_left(CopyLogicalSlots(PG2, copy.slots)) == 0
    failure = gate.failure()
    assert failure is not None and (failure.action, failure.target) == ("copy_slots", "pg1")


def test_backoff_doubles_up_to_the_cap_and_a_success_clears_it() -> None:
    fc = FakeClock()
    gate = RetryGate(fc.clock(), base=1.0, cap=8.0)
    clone = CloneReplica(PG1)
    assert gate.wait_left(clone) == 0
    delays = [gate.record(clone, False, f"error {i}") for i in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert gate.wait_left(clone) == 8.0
    fc.t += 5
    assert gate.wait_left(clone) == 3.0
    failure = gate.failure()
    assert failure is not None
    assert (failure.action, failure.target, failure.failures, failure.error) == (
        "clone", "pg1", 6, "error 5")
    assert failure.since == 1_700_000_100.0 and failure.retry_at == 1_700_000_108.0
    assert gate.record(clone, True) is None
    assert gate.wait_left(clone) == 0 and gate.failure() is None


def test_backoff_is_per_target_and_forgotten_when_no_longer_decided() -> None:
    gate = RetryGate(FakeClock().clock())
    gate.record(CloneReplica(PG1), False, "refused")
    assert gate.wait_left(CloneReplica(PG1)) > 0
    assert gate.wait_left(CloneReplica(PG2)) == 0  # a new leader is tried at once
    assert gate.wait_left(Rejoin(PG1, True)) == 0  # another kind of action
    gate.forget_except([StartPostgres("replica", PG1)])
    assert gate.wait_left(CloneReplica(PG1)) == 0 and gate.failure() is None


def test_error_capture_keeps_the_last_error_line() -> None:
    log = logging.getLogger("pgha.pg")
    with ErrorCapture() as capture:
        log.warning("slow")
        log.error("pg_basebackup: exit 1: FATAL: %s", "no pg_hba.conf entry")
        log.warning("later warning")
    log.error("after the block")
    assert capture.last == "pg_basebackup: exit 1: FATAL: no pg_hba.conf entry"


# ---------------------------------------------------------------------------- executor


@dataclass
class FailingPg:
    """The PgControl methods a clone/start needs; every clone fails with a logged error."""

    clones: int = 0
    starts: int = 0
    calls: list[str] = field(default_factory=list)

    async def clone(self, source: Upstream | None, *, basebackup_only: bool = False,
                    replace_data: bool = False) -> bool:
        self.clones += 1
        self.calls.append(f"clone {source.name if source else None} "
                          f"basebackup_only={basebackup_only} replace_data={replace_data}")
        logging.getLogger("pgha.pg").error("pg_basebackup from %s failed: FATAL: certificate "
                                           "required", source.name if source else "-")
        return False

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        self.starts += 1
        return True

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self.calls.append("stop")
        return True

    async def wipe(self) -> None:
        self.calls.append("wipe")


def make_executor(pg: Any, clock: Clock, metrics: AgentMetrics | None = None) -> Executor:
    kv = MemoryStore(MemoryBackend(clock=clock.monotonic), ttl=10, timeout=1)
    store = ClusterStore(kv, "/service/", "demo", "pg3")
    return Executor(pg, store, lease=OpenLease(), status=NullSink(), bootstrap_config={},
                    post_bootstrap=None, pg_ctl_timeout=5, dcs_timeout=1, metrics=metrics,
                    retry=RetryGate(clock))


async def test_a_failed_clone_is_not_retried_before_its_backoff() -> None:
    fc, pg, metrics = FakeClock(), FailingPg(), AgentMetrics()
    ex = make_executor(pg, fc.clock(), metrics)
    actions = (CloneReplica(PG1), StartPostgres("replica", PG1))
    assert not await ex.run(actions)
    assert (pg.clones, pg.starts) == (1, 0)
    for _ in range(50):  # however often the loop is woken, nothing runs before the backoff
        assert not await ex.run(actions)
    assert pg.clones == 1
    fc.t += 1.01
    assert not await ex.run(actions)
    assert pg.clones == 2
    fc.t += 1.5  # the second backoff is 2 s
    assert not await ex.run(actions)
    assert pg.clones == 2
    failure = ex.retry.failure()
    assert failure is not None and failure.failures == 2
    assert "certificate required" in failure.error
    text = metrics.render()
    assert 'pgha_action_failures_total{action="clone"} 2' in text
    assert 'pgha_action_failing{action="clone"} 1' in text
    assert not await ex.run((CloneReplica(PG2),))  # another upstream: tried at once
    assert pg.clones == 3


async def test_a_clone_without_a_leader_backs_off_and_a_leader_is_tried_at_once() -> None:
    fc, pg = FakeClock(), FailingPg()
    ex = make_executor(pg, fc.clock())
    actions = (CloneReplica(None), StartPostgres("replica"))  # the no_leader methods
    assert not await ex.run(actions)
    assert not await ex.run(actions)
    assert pg.clones == 1  # within the backoff: not run again
    failure = ex.retry.failure()
    assert failure is not None and (failure.action, failure.target) == ("clone", "")
    assert not await ex.run((CloneReplica(PG1),))  # a leader runs now: no waiting
    assert pg.clones == 2


@pytest.mark.parametrize("from_leader", [False, True])
async def test_reinitialize_leaves_the_data_to_the_replica_methods(from_leader: bool) -> None:
    pg = FailingPg()
    ex = make_executor(pg, FakeClock().clock())
    assert not await ex.run((Reinitialize(PG2, PG1, from_leader=from_leader),))
    # no wipe first: a keep_data method may reuse the files; from_leader: basebackup alone
    assert pg.calls == ["stop", f"clone pg2 basebackup_only={from_leader} replace_data=True"]


def test_the_failure_is_published_in_the_status_and_the_member_key() -> None:
    failure = ActionFailure("clone", "pg1", "FATAL: certificate required", 3,
                            1_700_000_000.0, 1_700_000_004.0)
    status = AgentStatus("pg3", "demo", Tags(), "postgres://pg3", "http://pg3/patroni",
                         pg=PgState(), failure=failure)
    assert status.pg_state == "clone failed"
    for body in (status.to_patroni_json(), status.to_member_json()):
        assert body["state"] == "clone failed"
        assert body["last_error"] == {
            "action": "clone", "target": "pg1", "error": "FATAL: certificate required",
            "failures": 3, "since": "2023-11-14T22:13:20+00:00",
            "retry_at": "2023-11-14T22:13:24+00:00"}
    running = AgentStatus("pg3", "demo", Tags(), "", "", pg=PgState(running=True,
                                                                  accepting=True))
    assert running.pg_state == "running" and "last_error" not in running.to_patroni_json()


# ---------------------------------------------------------------------------- bootstrap




def bootstrap(pg: BootPg, post: str | None = None) -> tuple[ClusterBootstrap, ClusterStore]:
    kv = MemoryStore(MemoryBackend(), ttl=10, timeout=1)
    store = ClusterStore(kv, "/service/", "demo", "pg1")
    return ClusterBootstrap(pg, store, OpenLease(), bootstrap_config={"ttl": 10},
                            post_bootstrap=post, pg_ctl_timeout=5, dcs_timeout=1), store


async def test_a_failed_initdb_cleans_up_gives_initialize_back_and_is_fatal() -> None:
    pg = BootPg(initdb_ok=False)
    boot, store = bootstrap(pg)
    with pytest.raises(BootstrapFailed, match="failed to bootstrap the cluster: initdb failed"):
        await boot.run()
    assert pg.calls == ["initdb", "stop immediate", "wipe"]
    view = await store.load()
    assert view.initialize is None and view.leader is None
    assert await store.claim_initialize()  # another member may bootstrap now


async def test_a_successful_bootstrap_and_a_lost_initialize_race() -> None:
    pg = BootPg()
    boot, store = bootstrap(pg)
    assert await boot.run()
    view = await store.load()
    assert view.initialize == "7000" and view.leader is not None
    assert not await boot.run()  # initialize is taken now: not a failure


async def test_post_bootstrap_failure_is_fatal(tmp_path: Path) -> None:
    pg = BootPg(settings=local_pg_settings(tmp_path))
    boot, store = bootstrap(pg, post="exit 3; true")
    with pytest.raises(BootstrapFailed, match="post_bootstrap exited with 3"):
        await boot.run()
    assert "wipe" in pg.calls
    assert (await store.load()).initialize is None


async def test_post_bootstrap_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    pg = BootPg(settings=local_pg_settings(tmp_path))
    boot, _ = bootstrap(pg, post=f"sleep 300 & echo $! > {pidfile}; wait; true")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await boot._run_post_bootstrap(boot.post_bootstrap or "")
    await assert_gone(int(pidfile.read_text()), "the post_bootstrap child")


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def pg_changed(self) -> None:
        self.events.append("changed")

    async def busy(self, what: str) -> None:
        self.events.append(what)


async def test_a_clone_shows_creating_replica_while_it_runs() -> None:
    fc, pg = FakeClock(), FailingPg()
    ex = make_executor(pg, fc.clock())
    sink = RecordingSink()
    ex.status = sink
    await ex.run((CloneReplica(PG1),))
    assert sink.events == ["creating replica", "changed"]
    status = AgentStatus("pg3", "demo", Tags(), "", "", pg=PgState(busy="creating replica"))
    assert status.to_patroni_json()["state"] == "creating replica"
