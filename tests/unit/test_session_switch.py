"""A ``ttl`` change moves our keys to a new DCS session (ClusterStore.switch_session, the lease
keeper's conservative count across it, the agent's SessionFollower with its backoff), and the
failsafe TTL rule, on the in-memory DCS with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from pgha.agent.clock import Clock
from pgha.agent.failsafe import Failsafe
from pgha.agent.lease import LeaseKeeper
from pgha.agent.publish import Publisher
from pgha.agent.session import BACKOFF_FIRST, SessionFollower
from pgha.core.model import ClusterView, HaSettings, PgRole, PgState, Tags, safety_margin_for
from pgha.core.status import AgentStatus
from pgha.dcs.base import DCSError, SessionExpired
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

OLD_TTL = 30.0


class Clocked:
    t = 1000.0

    def now(self) -> float:
        return self.t


class CheckedStore(MemoryStore):
    """A client that checks, before every call it makes (so between any two steps of a
    procedure), that the leader key exists and is bound to a live session; ``fail_put`` makes
    the next put of a key raise DCSError, before (``"before"``) or after (``"after"``: the
    outcome the caller cannot know) it is applied."""

    def __init__(self, backend: MemoryBackend, ttl: float, timeout: float) -> None:
        super().__init__(backend, ttl, timeout)
        self.leader_key = ""
        self.checks = 0
        self.fail_put: dict[str, str] = {}

    async def _enter(self) -> MemoryBackend:
        b = await super()._enter()
        if self.leader_key:
            entry = b._data.get(self.leader_key)
            assert entry is not None, "the leader key is absent"
            assert entry.session in b._sessions, "the leader key is bound to a dead session"
            self.checks += 1
        return b

    async def put(self, key: str, value: bytes, *, ephemeral: bool = False,
                  if_revision: int | None = None) -> bool:
        when = self.fail_put.pop(key, None)
        if when == "before":
            raise DCSError("injected: put not applied")
        ok = await super().put(key, value, ephemeral=ephemeral, if_revision=if_revision)
        if when == "after":
            raise DCSError("injected: put applied, answer lost")
        return ok


@dataclass
class Agent:
    clock: Clocked
    backend: MemoryBackend
    kv: CheckedStore
    store: ClusterStore
    lease: LeaseKeeper
    publisher: Publisher


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    clocked = Clocked()
    clock = Clock(monotonic=clocked.now, wall=clocked.now)
    backend = MemoryBackend(clock=clocked.now)
    kv = CheckedStore(backend, ttl=OLD_TTL, timeout=2.0)
    store = ClusterStore(kv, "/service/", "demo", "m0")
    publisher = Publisher(store, AgentStatus("m0", "demo", Tags(), "postgres://m0",
                                             "http://m0/"), clock=clock)
    settings = HaSettings(ttl=OLD_TTL)
    lease = LeaseKeeper(kv, store, SimpleNamespace(), Failsafe("m0", clock=clock),  # type: ignore[arg-type]
                        publisher, settings=lambda: settings, view=lambda: None,
                        wake=asyncio.Event(), clock=clock)
    async with kv:
        assert await store.acquire_leader()
        await store.touch_member({"state": "running"})
        assert await lease.confirm()
        kv.leader_key = store.key("leader")
        yield Agent(clocked, backend, kv, store, lease, publisher)


def leader_entry(a: Agent) -> Any:
    return a.backend._data[a.store.key("leader")]


async def test_switch_moves_the_leader_key_without_a_gap(agent: Agent) -> None:
    a = agent
    old = a.kv.session_id
    deadline = a.lease.lease_deadline
    assert deadline == a.clock.t + OLD_TTL - safety_margin_for(OLD_TTL)
    start = a.backend.revision
    a.clock.t += 1.0
    result = await a.lease.switch_session(10.0, budget=2.0)
    assert a.kv.checks >= 4  # checked before opening, reading, moving and reading the member
    assert result.old == old and result.leader is True and result.new == a.kv.session_id
    entry = leader_entry(a)
    assert str(entry.session) == a.kv.session_id != old
    assert a.backend._sessions[entry.session].ttl == 10.0
    assert a.kv.ttl == 10.0 and a.kv.session_ttl == 10.0 and a.kv.retired_session_id is None
    assert int(old or 0) not in a.backend.sessions()  # closed at once
    member = a.backend._data[a.store.key("members/m0")]
    assert member.session == entry.session
    # the leader key was never deleted (a deletion is an event in the store's log)
    assert not [e for e in a.backend._log if e.revision > start and e.deleted]
    # the lease now counts the shorter session: never later than what it guarantees
    assert a.lease.lease_deadline == a.clock.t + 10.0 - safety_margin_for(10.0)
    assert a.lease.lease_deadline < deadline
    a.clock.t += 9.0
    assert await a.lease.confirm()  # the keep-alive renews the new session
    assert leader_entry(a).session == entry.session


async def test_switch_to_a_longer_ttl_keeps_the_old_deadline_until_renewed(agent: Agent) -> None:
    a = agent
    deadline = a.lease.lease_deadline
    a.clock.t += 20.0
    await a.lease.switch_session(60.0, budget=2.0)
    assert a.lease.lease_deadline == deadline  # min(old, new): the old one is earlier
    assert a.kv.session_ttl == 60.0
    sent = a.clock.t
    assert await a.lease.confirm()
    assert a.lease.lease_deadline == sent + 60.0 - safety_margin_for(60.0)


async def test_a_lost_compare_and_set_reports_the_lock_lost(agent: Agent,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    """The leader key changes between its read and the move (here: rewritten by someone on
    the old session): the move's compare-and-set fails, the switch reports it and does not
    overwrite the key; the key, bound to the retired (then closed) session, is gone."""
    a = agent
    key = a.store.key("leader")
    real_get = a.kv.get_prefix

    async def get_then_interfere(prefix: str) -> Any:
        snapshot = await real_get(prefix)
        if prefix == key:
            entry = a.backend._data[key]
            a.backend._write(key, entry.value, entry.session)  # a new revision
        return snapshot

    a.kv.get_prefix = get_then_interfere  # type: ignore[method-assign]
    a.kv.leader_key = ""  # the key vanishes on purpose here
    result = await a.store.switch_session(10.0)
    assert result.leader is False
    assert "could not move the leader key" in caplog.text
    assert key not in a.backend._data
    assert a.kv.retired_session_id is None and a.kv.ttl == 10.0


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_switch_failing_half_way_keeps_both_sessions_and_resumes(agent: Agent,
                                                                          when: str) -> None:
    """The move of the leader key fails (not applied, or applied with the answer lost): the
    new session is current, the old one retired; keep-alives renew both (the key stays
    whichever it is bound to) and count the shorter TTL; calling again resumes the move
    without opening another session, then closes the retired one."""
    a = agent
    old = a.kv.session_id
    a.kv.fail_put = {a.store.key("leader"): when}
    with pytest.raises(DCSError):
        await a.lease.switch_session(10.0, budget=2.0)
    new = a.kv.session_id
    assert new != old and a.kv.retired_session_id == old
    assert a.kv.session_ttl == 10.0
    for _ in range(8):  # well past both TTLs, renewing every 5 s
        a.clock.t += 5.0
        sent = a.clock.t
        assert await a.lease.confirm()
        assert a.lease.lease_deadline == sent + 10.0 - safety_margin_for(10.0)
    bound = str(leader_entry(a).session)
    assert bound == (old if when == "before" else new)
    result = await a.lease.switch_session(10.0, budget=2.0)
    assert result.old == old and result.new == new == a.kv.session_id
    assert result.leader is (True if when == "before" else None)
    assert str(leader_entry(a).session) == new and a.kv.retired_session_id is None
    assert int(old or 0) not in a.backend.sessions()


async def test_a_retired_session_that_expired_is_reported(agent: Agent) -> None:
    a = agent
    a.kv.fail_put = {a.store.key("leader"): "before"}
    with pytest.raises(DCSError):
        await a.lease.switch_session(10.0, budget=2.0)
    retired = a.kv.retired_session_id
    assert retired is not None
    a.kv.leader_key = ""
    a.backend.revoke_session(int(retired))  # the key bound to it is gone
    assert not await a.lease.confirm()  # reported as an expired session: the lease is void
    deadline = a.lease.lease_deadline  # run out (kept, so that the backstop still acts)
    assert deadline is not None and deadline <= a.clock.t and a.kv.retired_session_id is None
    with pytest.raises(SessionExpired):
        a.kv.fail_put = {}
        await a.store.switch_session(10.0)  # nothing retired: a new switch opens S3 ...
        await a.kv.keepalive()
        a.backend.revoke_session(int(a.kv.session_id or 0))
        await a.kv.keepalive()  # ... and the expiry of the current one is reported too


async def test_follower_switches_once_and_backs_off_after_a_failure(
        agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    a = agent
    follower = SessionFollower(a.kv, a.lease, a.publisher,
                               clock=Clock(monotonic=a.clock.now, wall=a.clock.now))
    settings = HaSettings(ttl=20.0, loop_wait=5.0, retry_timeout=7.0)
    assert not await follower.follow(HaSettings(ttl=OLD_TTL, retry_timeout=4.0), 2.0)
    assert a.kv.timeout == 4.0  # retry_timeout reaches the client without a switch

    a.backend.fail = True
    caplog.set_level("INFO", logger="pgha.agent")
    assert not await follower.follow(settings, 2.0)
    assert "could not renew the DCS session with ttl 20" in caplog.text
    assert a.kv.ttl == OLD_TTL and a.kv.timeout == 7.0
    a.backend.fail = False
    calls = a.backend.calls
    a.clock.t += BACKOFF_FIRST / 2
    assert not await follower.follow(settings, 2.0)  # inside the backoff: not tried
    assert a.backend.calls == calls
    a.backend.fail = True
    a.clock.t += BACKOFF_FIRST
    assert not await follower.follow(settings, 2.0)
    assert follower.retry_at == a.clock.t + 2 * BACKOFF_FIRST  # doubled
    a.backend.fail = False
    a.clock.t += 2 * BACKOFF_FIRST
    assert await follower.follow(settings, 2.0)
    assert "DCS session renewed with ttl 20 (was 30)" in caplog.text
    assert a.kv.ttl == 20.0 and follower.failures == 0
    assert str(leader_entry(a).session) == a.kv.session_id
    assert not await follower.follow(settings, 2.0)  # done: nothing more to do


class Peers:
    """Every listed member confirms."""

    async def failsafe_round(self, members: Mapping[str, str], body: Mapping[str, Any],
                             timeout: float) -> bool:
        return True


@pytest.mark.parametrize(("session_ttl", "ttl", "trusted"), [
    (30.0, 10.0, 10.0),  # replicas promise 10 s: the primary trusts no longer
    (10.0, 30.0, 10.0),  # nor longer than its own session
    (20.0, 20.0, 20.0),
])
async def test_failsafe_deadline_counts_the_shorter_of_session_and_dcs_ttl(
        session_ttl: float, ttl: float, trusted: float) -> None:
    clocked = Clocked()
    failsafe = Failsafe("m0", clock=Clock(monotonic=clocked.now, wall=clocked.now))
    view = ClusterView(settings=HaSettings(ttl=ttl, failsafe_mode=True),
                       failsafe={"m0": "http://m0/", "m1": "http://m1/"})
    pg = PgState(running=True, accepting=True, role=PgRole.PRIMARY)
    t0 = clocked.t
    sent = await failsafe.confirm(Peers(), view, pg, {}, session_ttl,  # type: ignore[arg-type]
                                  ttl)
    assert sent == t0  # what the watchdog device is fed on
    assert failsafe.deadline == t0 + trusted - safety_margin_for(trusted)
    # a replica asked at t0 keeps its promise for the ttl it knows, until t0 + ttl: the
    # primary's deadline ends before
    replica = Failsafe("m1", clock=Clock(monotonic=clocked.now, wall=clocked.now))
    assert replica.accept("m0", view, PgState())[0] == 200
    clocked.t = failsafe.deadline
    assert replica.asking_primary(ttl) == "m0"
    clocked.t = t0 + ttl
    assert replica.asking_primary(ttl) is None
