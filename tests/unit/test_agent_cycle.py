"""The decision cycle (observe -> decide -> execute -> publish) with its real components: the
in-memory DCS on a fake clock, the real executor, observer, publisher and lease keeper, and the
simulation's fake PostgreSQL (tests/support/fake_pg.py). No mock of the core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.agent_stubs import StillWorld
from tests.support.fake_pg import FakePostgres
from tests.support.fake_watchdog import FakeDevice

from pgha.agent.clock import Clock
from pgha.agent.commands import CommandHandler
from pgha.agent.cycle import DecisionCycle, Stages
from pgha.agent.executor import Executor
from pgha.agent.failsafe import Failsafe
from pgha.agent.lease import LeaseKeeper
from pgha.agent.metrics import AgentMetrics
from pgha.agent.observe import Observer
from pgha.agent.peers import PeerClient
from pgha.agent.publish import Publisher, StatusRefresher
from pgha.agent.session import SessionFollower
from pgha.agent.watchdog import LeaderWatchdog
from pgha.config.dynamic import DynamicConfig
from pgha.config.models import WatchdogConfig
from pgha.core.commands import CancelSwitchover, Switchover
from pgha.core.decision import Reason
from pgha.core.model import DataState, HaSettings, PgRole, PgState, Tags
from pgha.core.status import AgentStatus
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from pgha.pg.dynconf import PgConfigState

TTL = 10.0


class ObservablePostgres(FakePostgres):
    """The fake with the few read methods the observer uses besides ``observe``."""

    async def status(self) -> dict[str, Any]:
        return self.details()

    def data_state(self) -> DataState:
        return self.data

    def is_running(self) -> bool:
        return self.running


class Configurator:
    """Stands in for pgha.pg.configurator.PgConfigurator (which needs a real server)."""

    state = PgConfigState()

    async def apply_dynamic_config(self, *args: Any, **kwargs: Any) -> None: ...

    def fire_lifecycle_callbacks(self, pg: PgState, restarted: bool,
                                 standby_leader: bool = False) -> None: ...


@dataclass
class Member:
    world: StillWorld
    kv: MemoryStore
    pg: ObservablePostgres
    cycle: DecisionCycle
    lease: LeaseKeeper
    publisher: Publisher
    store: ClusterStore
    commands: CommandHandler


@pytest.fixture
async def member() -> AsyncIterator[Member]:
    world = StillWorld()
    clock = Clock(monotonic=world.now, wall=world.wall)
    backend = MemoryBackend(clock=world.now)
    kv = MemoryStore(backend, ttl=TTL, timeout=2.0)
    settings = HaSettings(ttl=TTL, loop_wait=2.0, retry_timeout=2.0)
    pg = ObservablePostgres("m0", world)
    world.pgs["m0"] = pg
    store = ClusterStore(kv, "/service/", "demo", "m0")
    wake = asyncio.Event()
    peers = PeerClient(SimpleNamespace(), "m0")  # type: ignore[arg-type]  # never entered
    observer = Observer(store, pg, peers, settings, clock=clock)  # type: ignore[arg-type]
    publisher = Publisher(store, AgentStatus("m0", "demo", Tags(), pg.conn_url(), "http://m0/"),
                          clock=clock)
    failsafe = Failsafe("m0", clock=clock)
    lease = LeaseKeeper(kv, store, pg, failsafe, publisher,  # type: ignore[arg-type]
                        settings=lambda: observer.settings, view=lambda: observer.view,
                        wake=wake, clock=clock)
    commands = CommandHandler("m0", store, observer, publisher, wake, request_reload=lambda: None,
                              restart_timeout=30.0)
    executor = Executor(pg, store, lease=lease, status=StatusRefresher(observer, publisher),
                        bootstrap_config={"ttl": TTL}, post_bootstrap=None, pg_ctl_timeout=5.0,
                        dcs_timeout=lambda: observer.settings.retry_timeout)
    stages = Stages(name="m0", store=store, session_ttl=lambda: kv.session_ttl,
                    local_config=SimpleNamespace(  # type: ignore[arg-type]
                        reload_requested=False, tags=Tags(),
                        config=SimpleNamespace(bootstrap=SimpleNamespace(dcs=DynamicConfig()))),
                    observer=observer, configurator=Configurator(),  # type: ignore[arg-type]
                    failsafe=failsafe, commands=commands, executor=executor,
                    publisher=publisher, lease=lease, metrics=AgentMetrics(),
                    reloader=SimpleNamespace(),  # type: ignore[arg-type]  # never reloads
                    session=SessionFollower(kv, lease, publisher, clock=clock))
    async with kv:
        yield Member(world, kv, pg, DecisionCycle(stages, wake, clock=clock), lease, publisher,
                     store, commands)


async def test_bootstrap_cycle_takes_the_lock_and_publishes(member: Member) -> None:
    assert await member.lease.confirm()
    assert await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.BOOTSTRAP
    view = await member.store.load()
    assert view.leader is not None and view.leader.name == "m0"
    assert view.initialize == member.pg.sysid
    assert member.pg.running and member.pg.role is PgRole.PRIMARY
    # publish: the member key (the status says "primary" but not yet that we hold the lock:
    # this cycle's view was read before the bootstrap took it)
    assert view.members["m0"].role == "primary"
    assert member.publisher.status.role == "primary" and not member.publisher.status.is_primary
    assert member.lease.heartbeat == member.world.t  # the heartbeat gates the keep-alive

    assert await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.LEADER_HEALTHY
    assert member.publisher.status.is_primary  # what GET /primary answers from
    assert (await member.store.load()).optime == member.pg.wal  # PublishStatus carried it


async def test_switchover_commands_are_judged_on_the_dcs_not_the_last_cycle(
        member: Member) -> None:
    """A key written after the decision loop's last read (here by another client: the
    configuration and a scheduled switchover) decides an operator's switchover at once."""
    assert await member.lease.confirm()
    assert await member.cycle.run_once()
    config = await member.store.read_config()
    assert config[0] is not None
    assert await member.store.write_config({**config[0], "pause": True})
    outcome = await member.commands.submit(Switchover())
    assert (outcome.code, outcome.message) == (
        400, "Switchover is possible only to a specific candidate in a paused state")
    assert await member.store.write_config({**config[0], "pause": False})
    await member.store.write_failover({"leader": "m0", "scheduled_at": "2099-01-01T00:00:00Z"})
    outcome = await member.commands.submit(CancelSwitchover())
    assert (outcome.code, outcome.message) == (200, "scheduled switchover deleted")
    assert (await member.store.load()).failover is None


async def test_primary_cut_off_from_the_dcs_demotes_before_its_lease_ends(member: Member,
                                                                          ) -> None:
    assert await member.lease.confirm()
    await member.cycle.run_once()
    assert member.pg.running and member.pg.role is PgRole.PRIMARY
    member.kv.partitioned = True
    member.world.t += 2.0  # lease still confirmed: stays primary
    await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.DCS_UNREACHABLE_LEASE_VALID
    assert member.pg.running
    assert not await member.lease.confirm()  # the keep-alive fails too
    assert member.lease.lease_deadline is not None
    member.world.t = member.lease.lease_deadline + 0.01
    await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.LEASE_UNCONFIRMED
    assert not member.pg.running
    # the store would keep the key until the session's ttl: the demotion came first
    assert member.world.t < member.lease.lease_deadline + member.lease.kv.session_ttl


async def test_leader_cut_off_from_the_dcs_stays_fenced_until_it_demotes(member: Member,
                                                                         ) -> None:
    """While the lease is still valid a leader that cannot read the DCS stays primary, so the
    watchdog device must stay armed: were the agent to die now, nothing else would stop a
    primary that the others may replace once the key expires."""
    device = FakeDevice()
    watchdog = LeaderWatchdog(WatchdogConfig(mode="required", safety_margin=-1),
                              ttl=lambda: member.kv.session_ttl, io=device,
                              clock=member.world.now)
    member.cycle.s = replace(member.cycle.s, watchdog=watchdog)
    member.lease.renewed = watchdog.keepalive
    assert await member.lease.confirm()
    await member.cycle.run_once()  # bootstrap: armed before the promotion
    await member.cycle.run_once()
    assert member.publisher.status.holds_lock and watchdog.armed
    member.kv.partitioned = True
    member.world.t += 2.0
    await member.cycle.run_once()
    assert member.cycle.last_decision is not None
    assert member.cycle.last_decision.reason is Reason.DCS_UNREACHABLE_LEASE_VALID
    assert not member.publisher.status.holds_lock and member.pg.role is PgRole.PRIMARY
    assert watchdog.armed and "write-V" not in device.names()  # still fenced
    assert not await member.lease.confirm()
    assert member.lease.lease_deadline is not None
    member.world.t = member.lease.lease_deadline + 0.01
    await member.cycle.run_once()  # the agent's own deadline: it demotes, then disarms
    assert not member.pg.running and not watchdog.armed
    assert device.names()[-2:] == ["write-V", "close"]


async def test_stopped_decision_loop_lets_the_backstop_stop_the_primary(member: Member) -> None:
    assert await member.lease.confirm()
    await member.cycle.run_once()
    deadline = member.lease.lease_deadline
    assert deadline is not None
    member.world.t = deadline + 1.0  # no cycle ran meanwhile
    await member.lease.backstop()
    assert not member.pg.running


async def test_repeated_decision_without_progress_backs_off(member: Member) -> None:
    """A decision that repeats an action which fails (or changes nothing) must not make the
    loop cycle faster than a growing guard: DCS-change wake-ups are held back, the retry
    timer stretched; an urgent wake (postmaster death, command, stop) still cuts it short."""
    cycle = member.cycle
    assert await member.lease.confirm()
    for _ in range(3):  # bootstrap, then a healthy leader: housekeeping is no repeat
        await cycle.run_once()
    assert cycle.last_decision is not None
    assert cycle.last_decision.reason is Reason.LEADER_HEALTHY
    assert cycle.repeats == 0 and cycle.guard_time() == 0.0

    async def refuse_to_start(role: str, upstream: object) -> bool:
        return False

    member.pg.crash()
    member.pg.start = refuse_to_start  # type: ignore[method-assign]
    guards = []
    for _ in range(6):
        assert not await cycle.run_once()
        assert cycle.last_decision is not None
        assert cycle.last_decision.reason is Reason.RESTART_PRIMARY
        guards.append(cycle.guard_time())
        assert cycle._sleep_time(False) >= guards[-1]  # the retry timer waits as long
    loop_wait = cycle.s.observer.settings.loop_wait
    assert guards == [0.0, 0.25, 0.5, 1.0, 2.0, loop_wait]  # capped at loop_wait
    assert 2.0 < loop_wait < 4.0

    # in real time: a DCS change inside the guard does not start the next cycle early
    cycle.repeats = 1  # guard 0.25 s
    loop = asyncio.get_running_loop()
    cycle.dcs_changed()
    started = loop.time()
    await cycle._sleep(False)
    assert loop.time() - started >= 0.24
    assert not cycle.dcs_wake.is_set()
    # ... while an urgent wake-up does
    cycle.wake.set()
    started = loop.time()
    await cycle._sleep(False)
    assert loop.time() - started < 0.2

    # progress (the start works again) ends the guard; the executor's own backoff of the
    # failed start (RetryGate, on the real clock here) is cleared so it runs at once
    del member.pg.start
    cycle.s.executor.retry.forget_except(())
    assert await cycle.run_once()
    assert cycle.repeats == 0 and cycle.guard_time() == 0.0
    await cycle.run_once()
    assert cycle.last_decision is not None
    assert cycle.last_decision.reason is Reason.LEADER_HEALTHY


async def test_dcs_change_wakes_a_cycle_at_once_without_repeats(member: Member) -> None:
    cycle = member.cycle
    assert await member.lease.confirm()
    await cycle.run_once()
    await cycle.run_once()
    assert cycle.guard_time() == 0.0
    loop = asyncio.get_running_loop()
    cycle.dcs_changed()
    started = loop.time()
    await cycle._sleep(True)
    assert loop.time() - started < 0.2


async def test_published_lock_needs_the_key_bound_to_our_session(member: Member) -> None:
    """GET /primary answers from ``holds_lock``: a leader key that merely holds our name
    (bound to another session, e.g. our previous process's) is not our lock (rule 7)."""
    assert await member.lease.confirm()
    await member.cycle.run_once()
    await member.cycle.run_once()
    assert member.publisher.status.is_primary
    view = await member.store.load()
    assert view.leader is not None and view.leader.session == member.kv.session_id
    decision = member.cycle.last_decision
    assert decision is not None
    stale = replace(view, leader=replace(view.leader, session="another-session"))
    member.publisher.publish(member.pg.state(), member.pg.details(), decision, view=stale,
                             dcs_ok=True, dcs_last_seen=None, tags=Tags(),
                             pending_restart=False, pending_restart_reason=None,
                             scheduled_restart=None)
    assert not member.publisher.status.holds_lock and not member.publisher.status.is_primary


async def test_backstop_acts_when_the_cycle_after_a_late_decision_stalls(member: Member) -> None:
    """Issue 10 B9: a cycle decides and completes 0.4 s before the lease runs out (DCS cut
    off, so the keep-alive cannot renew it); the next cycle stalls before ``decide``. At the
    deadline the keep-alive's backstop must stop the primary: no decision saw the lease as
    run out, however recent the last completed cycle."""
    assert await member.lease.confirm()
    await member.cycle.run_once()
    await member.cycle.run_once()
    assert member.pg.running and member.pg.role is PgRole.PRIMARY
    member.kv.partitioned = True
    deadline = member.lease.lease_deadline
    assert deadline is not None
    member.world.t = deadline - 0.4
    await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.DCS_UNREACHABLE_LEASE_VALID
    assert member.pg.running and member.lease.heartbeat == deadline - 0.4
    member.world.t = deadline  # the next cycle is stuck before decide()
    await member.lease.keepalive_round()
    assert member.lease.lease_deadline == deadline  # the keep-alive could not renew it
    assert not member.pg.running


async def test_backstop_leaves_a_primary_whose_lease_the_keepalive_renewed(
        member: Member) -> None:
    assert await member.lease.confirm()
    await member.cycle.run_once()
    await member.cycle.run_once()
    deadline = member.lease.lease_deadline
    assert deadline is not None
    member.world.t = deadline - 0.4
    await member.cycle.run_once()
    member.world.t = deadline  # the loop is alive: the keep-alive renews the lease
    await member.lease.keepalive_round()
    renewed = member.lease.lease_deadline
    assert renewed is not None and renewed > deadline
    assert member.pg.running


async def test_backstop_acts_after_the_session_expired_under_a_stuck_loop(
        member: Member) -> None:
    """The session expires (our keys are gone, another member may take the lock) while the
    decision loop is stuck: the keep-alive learns it, and its backstop must still stop the
    primary - an expired session is a lease run out, not "no lease to be late on"."""
    assert await member.lease.confirm()
    await member.cycle.run_once()
    await member.cycle.run_once()
    assert member.pg.running and member.pg.role is PgRole.PRIMARY
    session = member.kv.session_id
    assert session is not None
    member.kv.backend.revoke_session(int(session))  # the store dropped it
    member.world.t += 0.5  # the loop is stuck from now on; the keep-alive runs
    await member.lease.keepalive_round()
    deadline = member.lease.lease_deadline
    assert deadline is not None and deadline <= member.world.t
    assert not member.pg.running


async def test_ttl_and_retry_timeout_changes_reach_the_session_and_the_timeouts(
        member: Member, caplog: pytest.LogCaptureFixture) -> None:
    """A ``ttl`` change in the DCS config moves the leader's keys to a new session granted
    for it within the next cycle, the member staying leader (no demotion, the key never
    released); ``retry_timeout`` becomes the DCS client's and the executor's timeout."""
    assert await member.lease.confirm()
    await member.cycle.run_once()
    await member.cycle.run_once()
    old = member.kv.session_id
    config, revision = await member.store.read_config()
    assert config is not None and member.kv.ttl == TTL
    assert await member.store.write_config({**config, "ttl": 24, "retry_timeout": 5},
                                           if_revision=revision)
    caplog.set_level("INFO", logger="pgha.agent")
    assert await member.cycle.run_once()
    decision = member.cycle.last_decision
    assert decision is not None and decision.reason is Reason.LEADER_HEALTHY
    assert member.pg.running and member.pg.role is PgRole.PRIMARY
    assert member.kv.ttl == 24 and member.kv.session_ttl == 24
    assert member.kv.session_id not in (None, old) and member.kv.retired_session_id is None
    view = await member.store.load()
    assert view.leader is not None and view.leader.session == member.kv.session_id
    assert view.members["m0"] is not None
    assert int(old or 0) not in member.kv.backend.sessions()  # the old session is closed
    assert "DCS session renewed with ttl 24 (was 10)" in caplog.text
    assert member.kv.timeout == 5
    assert member.cycle.s.executor.dcs_timeout == 5
    await member.cycle.run_once()  # nothing more to switch
    assert sum("DCS session renewed" in r.message for r in caplog.records) == 1
    assert member.kv.session_id == view.leader.session
