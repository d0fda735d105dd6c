"""ClusterStore on the in-memory KVStore: the DCS contract without a server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from pgha.core.model import HistoryEntry, Member, SyncKey, Tags
from pgha.dcs.base import DCSError, SessionExpired, WatchEvent
from pgha.dcs.codec import member_from_json, member_to_json
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

TTL = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
async def stores(backend: MemoryBackend) -> AsyncIterator[list[ClusterStore]]:
    kvs = [MemoryStore(backend, ttl=TTL) for _ in range(3)]
    for kv in kvs:
        await kv.connect()
    yield [ClusterStore(kv, "/service/", "demo", f"pg{i}") for i, kv in enumerate(kvs)]
    for kv in kvs:
        await kv.close()


async def next_event(it: AsyncIterator[WatchEvent]) -> WatchEvent:
    async with asyncio.timeout(2):
        return await anext(it)


async def test_prefix_and_keys(stores: list[ClusterStore]) -> None:
    assert stores[0].prefix == "/service/demo/"
    assert stores[0].key("leader") == "/service/demo/leader"
    empty = await stores[0].load()
    assert empty.leader is None and empty.members == {} and empty.initialize is None


async def test_acquire_is_exclusive(stores: list[ClusterStore]) -> None:
    results = await asyncio.gather(*(s.acquire_leader() for s in stores for _ in range(5)))
    assert results.count(True) == 1
    view = await stores[0].load()
    assert view.leader is not None
    winner = stores[results.index(True) // 5]
    assert view.leader.name == winner.name
    assert view.leader.revision > 0
    # the holder cannot create it again either
    assert await winner.acquire_leader() is False


async def test_release_only_by_owner(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    assert await a.acquire_leader()
    assert await b.release_leader() is False
    assert (await b.load()).leader is not None
    assert await a.release_leader() is True
    assert (await b.load()).leader is None
    assert await a.release_leader() is False
    assert await b.acquire_leader()


async def test_leader_key_names_its_session_and_is_rebound_by_compare_and_set(
    backend: MemoryBackend, stores: list[ClusterStore], clock: FakeClock
) -> None:
    """DESIGN.md safety rule 7: a restarted agent (a new client, a new session) finds the key
    holding its name bound to its previous session: it cannot release it, and moves it to its
    own session only by a compare-and-set on the revision it read."""
    old = stores[0]
    assert await old.acquire_leader()
    key = old.key("leader")
    item = (await old.kv.get_prefix(key)).items[key]
    assert item.ephemeral and item.session == old.kv.session_id is not None
    new_kv = MemoryStore(backend, ttl=TTL)
    async with new_kv:
        new = ClusterStore(new_kv, "/service/", "demo", old.name)
        await new.keepalive()
        view = await new.load()
        assert view.leader is not None and view.leader.name == new.name
        assert view.leader.session == old.kv.session_id != new_kv.session_id
        assert await new.release_leader() is False  # merely holds our name
        assert await new.rebind_leader(view.leader.revision + 7) is False  # not as read
        assert (await new.load()).leader == view.leader
        assert await new.rebind_leader(view.leader.revision)
        rebound = (await new.load()).leader
        assert rebound is not None and rebound.name == new.name
        assert rebound.session == new_kv.session_id and rebound.revision > view.leader.revision
        # the previous process (or a duplicate) cannot move it back from a stale read
        assert await old.rebind_leader(view.leader.revision) is False
        assert await old.release_leader() is False
        await old.kv.close()  # its session ends: the key, bound to the new one, stays
        assert (await new.load()).leader == rebound
        # bound to our session, the key lives as long as it does
        clock.advance(TTL * 0.6)
        await new.keepalive()
        clock.advance(TTL * 0.6)
        assert (await new.load()).leader == rebound
        assert await new.release_leader()
        assert (await new.load()).leader is None
        # a key that vanished since it was read cannot be rebound either
        assert await stores[1].acquire_leader()
        gone = (await new.load()).leader
        assert gone is not None
        await stores[1].kv.close()
        assert await new.rebind_leader(gone.revision) is False
        assert (await new.load()).leader is None


async def test_session_expiry_removes_leader_and_member(
    stores: list[ClusterStore], clock: FakeClock
) -> None:
    a, b, _ = stores
    assert await a.acquire_leader()
    await a.touch_member({"role": "primary", "state": "running"})
    await b.touch_member({"role": "replica", "state": "running"})
    clock.advance(TTL * 0.6)
    await b.keepalive()
    clock.advance(TTL * 0.6)  # a's session is past its ttl, b's is not
    view = await b.load()
    assert view.leader is None
    assert set(view.members) == {"pg1"}
    with pytest.raises(SessionExpired):
        await a.keepalive()
    # a new session works
    await a.keepalive()
    assert await a.acquire_leader()
    assert (await b.load()).leader is not None


async def test_keepalive_extends_session(stores: list[ClusterStore], clock: FakeClock) -> None:
    a = stores[0]
    assert await a.acquire_leader()
    for _ in range(5):
        clock.advance(TTL * 0.6)
        await a.keepalive()
    view = await stores[1].load()
    assert view.leader is not None and view.leader.name == "pg0"


async def test_close_removes_ephemeral_keys_at_once(
    backend: MemoryBackend, stores: list[ClusterStore]
) -> None:
    kv = MemoryStore(backend, ttl=TTL)
    async with kv:
        s = ClusterStore(kv, "/service/", "demo", "tmp")
        assert await s.acquire_leader()
        await s.touch_member({"state": "running"})
        assert await s.claim_initialize()
    view = await stores[0].load()
    assert view.leader is None and "tmp" not in view.members
    assert view.initialize == ""  # not ephemeral
    with pytest.raises(DCSError):
        await s.load()


async def test_garbage_is_logged_and_ignored(
    stores: list[ClusterStore], caplog: pytest.LogCaptureFixture
) -> None:
    s = stores[0]
    kv = s.kv
    await s.touch_member({"role": "replica", "state": "running", "xlog_location": 10})
    await kv.put(s.key("members/bad-json"), b"{not json")
    await kv.put(s.key("members/bad-type"), b'{"xlog_location": "abc"}')
    await kv.put(s.key("members/bad-tags"), b'{"tags": {"failover_priority": "x"}}')
    await kv.put(s.key("members/list"), b"[1, 2]")
    await kv.put(s.key("history"), b'{"not": "a list"}')
    await kv.put(s.key("config"), b"[]")
    await kv.put(s.key("status"), b'{"optime": "12"}')
    await kv.put(s.key("failover"), b"NaN")
    await kv.put(s.key("initialize"), b"\xff\xfe")
    await kv.put(s.key("unknown/key"), b"whatever")
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        view = await s.load()
    assert set(view.members) == {"pg0"}
    assert view.members["pg0"].xlog_location == 10
    assert view.history == ()
    assert view.config is None and view.settings.ttl == 30.0
    assert view.optime is None and view.failover is None and view.initialize is None
    warned = "\n".join(r.getMessage() for r in caplog.records if r.name == "pgha.dcs")
    for name in ("members/bad-json", "members/bad-type", "members/bad-tags", "members/list",
                 "history", "config", "status", "failover", "initialize"):
        assert s.key(name) in warned
    assert "unknown/key" not in warned


async def test_bad_history_entries_are_skipped(
    stores: list[ClusterStore], caplog: pytest.LogCaptureFixture
) -> None:
    s = stores[0]
    await s.kv.put(s.key("history"), b'[[1, 100, "no recovery target", "2024-01-01"], '
                                      b'["x", 1], [2, 200, "r", "t", "pg1"], 7]')
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        history = await s.read_history()
    assert history == (HistoryEntry(1, 100, "no recovery target", "2024-01-01"),
                       HistoryEntry(2, 200, "r", "t", "pg1"))
    assert sum(s.key("history") in r.getMessage() for r in caplog.records) == 2


async def test_config_cas(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    assert await a.create_config({"ttl": 20, "loop_wait": 5})
    assert await b.create_config({"ttl": 99}) is False
    view = await a.load()
    assert view.config == {"ttl": 20, "loop_wait": 5}
    assert view.settings.ttl == 20.0 and view.settings.loop_wait == 5.0
    rev = (await a.kv.get_prefix(a.key("config"))).items[a.key("config")].revision
    assert await a.write_config({"ttl": 21}, if_revision=rev)
    assert await b.write_config({"ttl": 22}, if_revision=rev) is False  # stale
    assert (await b.load()).settings.ttl == 21.0
    assert await b.write_config({"ttl": 23})
    assert (await b.load()).settings.ttl == 23.0


async def test_kv_cas_conflicts(stores: list[ClusterStore]) -> None:
    kv = stores[0].kv
    assert await kv.put("/k", b"1", if_revision=0)  # 0: only if absent
    assert await kv.put("/k", b"2", if_revision=0) is False
    rev = (await kv.get_prefix("/k")).items["/k"].revision
    assert await kv.delete("/k", if_revision=rev + 1) is False
    assert await kv.delete("/k", if_value=b"2") is False
    assert await kv.delete("/k", if_value=b"1", if_revision=rev) is True
    assert await kv.delete("/k") is False


async def test_status_failover_and_legacy_optime(stores: list[ClusterStore]) -> None:
    s = stores[0]
    await s.kv.put(s.key("optime/leader"), b"555")
    assert (await s.load()).optime == 555
    await s.write_status(1234, {"pg1": 1000}, ["pg0", "pg1"])
    view = await s.load()
    assert (view.optime, view.status_slots, view.retain_slots) == (
        1234, {"pg1": 1000}, ("pg0", "pg1"))
    await s.kv.put(s.key("failover"), b'{"leader": "pg0", "member": "pg1"}')
    assert (await s.load()).failover == {"leader": "pg0", "member": "pg1"}
    assert await s.delete_failover()
    assert (await s.load()).failover is None
    assert await s.delete_failover() is False


async def test_delete_failover_compare_and_set(stores: list[ClusterStore]) -> None:
    s = stores[0]
    await s.write_failover({"leader": "pg0", "scheduled_at": "2099-01-01T00:00:00+00:00"})
    rev = (await s.load()).key_revisions["failover"]
    await s.write_failover({"leader": "pg0"})  # changed after our read
    assert await s.delete_failover(if_revision=rev) is False
    assert (await s.load()).failover == {"leader": "pg0"}
    assert await s.delete_failover(if_revision=(await s.load()).key_revisions["failover"])


async def test_config_compare_and_set_against_a_read(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    assert await a.compare_and_set_config({"ttl": 20}, None)  # absent: create
    assert await b.compare_and_set_config({"ttl": 99}, None) is False  # exists now
    rev = (await a.load()).key_revisions["config"]
    assert await a.compare_and_set_config({"ttl": 21}, rev)
    assert await b.compare_and_set_config({"ttl": 22}, rev) is False  # stale revision
    assert (await b.load()).config == {"ttl": 21}


async def test_key_revisions_list_every_key_read(stores: list[ClusterStore]) -> None:
    s = stores[0]
    await s.create_config({"ttl": 30})
    await s.kv.put(s.key("failover"), b"{broken")
    await s.kv.put(s.key("unknown/key"), b"x")
    await s.touch_member({"state": "running"})
    view = await s.load()
    raw = (await s.kv.get_prefix(s.prefix)).items
    assert view.key_revisions == {k[len(s.prefix):]: kv.revision for k, kv in raw.items()}
    assert set(view.key_revisions) == {"config", "failover", "unknown/key", "members/pg0"}
    assert view.failover is None  # unparseable, yet its revision is known


@pytest.mark.parametrize(("value", "leader", "standbys", "quorum"), [
    (b'{"leader": "pg0", "sync_standby": "pg1, pg2,"}', "pg0", {"pg1", "pg2"}, 0),
    (b'{"leader": "pg0", "sync_standby": ["pg1"], "quorum": 1}', "pg0", {"pg1"}, 1),
    (b'{"leader": "pg0", "sync_standby": null, "quorum": null}', "pg0", set(), 0),
    (b'{}', None, set(), 0),
])
async def test_sync_key_is_parsed(stores: list[ClusterStore], value: bytes, leader: str | None,
                                  standbys: set[str], quorum: int) -> None:
    s = stores[0]
    assert (await s.load()).sync is None
    await s.kv.put(s.key("sync"), value)
    assert (await s.load()).sync == SyncKey(leader, frozenset(standbys), quorum)


async def test_sync_key_round_trips_in_patronis_layout(stores: list[ClusterStore]) -> None:
    s = stores[0]
    await s.write_sync(["pg2", "pg1"], 1)
    raw = (await s.kv.get_prefix(s.key("sync"))).items[s.key("sync")].value
    assert json.loads(raw) == {"leader": s.name, "sync_standby": "pg1,pg2", "quorum": 1}
    assert (await s.load()).sync == SyncKey(s.name, frozenset({"pg1", "pg2"}), 1)
    await s.write_sync([], 0)
    assert json.loads((await s.kv.get_prefix(s.key("sync"))).items[s.key("sync")].value) == {
        "leader": s.name, "sync_standby": None, "quorum": 0}
    assert await s.delete_sync()
    assert (await s.load()).sync is None


@pytest.mark.parametrize("value", [b"[]", b'{"leader": 1}', b'{"sync_standby": 5}',
                                   b'{"sync_standby": ["pg1", 2]}', b"{bad",
                                   b'{"leader": "pg0", "quorum": -1}',
                                   b'{"leader": "pg0", "quorum": "2"}'])
async def test_bad_sync_key_is_logged_and_ignored(stores: list[ClusterStore], value: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    s = stores[0]
    await s.kv.put(s.key("sync"), value)
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        assert (await s.load()).sync is None
    assert any(s.key("sync") in r.getMessage() for r in caplog.records)


async def test_history_append(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    e1 = HistoryEntry(1, 0x3000060, "no recovery target specified", "2024-05-01T10:00:00+00:00",
                      "pg1")
    e2 = HistoryEntry(2, 0x5000000, "switchover", "2024-05-02T10:00:00+00:00")
    assert await a.append_history(e1)
    assert await a.append_history(e2)
    assert await a.append_history(e1)  # same timeline: idempotent
    assert await b.read_history() == (e1, e2)
    assert (await b.load()).history == (e1, e2)
    raw = (await a.kv.get_prefix(a.key("history"))).items[a.key("history")].value
    assert raw.startswith(b'[[1,50331744,"no recovery target specified",')
    # concurrent appends by different members both land (CAS retries)
    ok = await asyncio.gather(*(s.append_history(HistoryEntry(tl, tl * 10))
                                for s, tl in zip(stores, (3, 4, 5), strict=True)))
    assert ok == [True, True, True]
    assert [e.timeline for e in await a.read_history()] == [1, 2, 3, 4, 5]
    assert await a.append_history(HistoryEntry(6, 60), max_entries=3)
    assert [e.timeline for e in await a.read_history()] == [4, 5, 6]


async def test_history_overwrites_garbage(stores: list[ClusterStore]) -> None:
    s = stores[0]
    await s.kv.put(s.key("history"), b"garbage")
    assert await s.append_history(HistoryEntry(1, 10))
    assert await s.read_history() == (HistoryEntry(1, 10),)


async def test_initialize_semantics(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    assert await a.claim_initialize()
    assert await b.claim_initialize() is False
    assert (await b.load()).initialize == ""
    assert await a.cancel_initialize()
    assert (await b.load()).initialize is None
    assert await a.cancel_initialize() is False
    assert await b.claim_initialize()
    assert await b.set_initialize("7290000000000000001")
    assert (await a.load()).initialize == "7290000000000000001"
    assert await a.set_initialize("7290000000000000001")  # same sysid: fine
    assert await a.set_initialize("7290000000000000002") is False
    assert await a.cancel_initialize() is False  # holds a sysid
    assert await a.claim_initialize() is False


async def test_set_initialize_when_absent(stores: list[ClusterStore]) -> None:
    a = stores[0]
    assert await a.set_initialize("42")
    assert (await a.load()).initialize == "42"


async def test_watch_sees_leader_deleted(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    assert await a.acquire_leader()
    start = (await b.load()).revision
    it = b.watch(start).__aiter__()
    assert await a.release_leader()
    ev = await next_event(it)
    assert ev == WatchEvent(ev.revision, a.key("leader"), deleted=True)
    assert ev.revision > start
    await a.touch_member({"state": "running"})
    ev = await next_event(it)
    assert ev.key == a.key("members/pg0") and not ev.deleted


async def test_watch_replays_from_revision(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    start = (await a.load()).revision
    await a.write_status(1)
    await a.write_status(2)
    await a.kv.put("/other/key", b"x")  # outside the prefix
    it = b.watch(start).__aiter__()
    assert (await next_event(it)).key == a.key("status")
    second = await next_event(it)
    assert second.key == a.key("status") and second.revision == start + 2


async def test_watch_reports_expiry_and_disconnect(
    stores: list[ClusterStore], backend: MemoryBackend, clock: FakeClock
) -> None:
    a, b, _ = stores
    assert await a.acquire_leader()
    it = b.watch((await b.load()).revision).__aiter__()
    clock.advance(TTL + 1)
    backend.expire_sessions()
    ev = await next_event(it)
    assert ev.key == a.key("leader") and ev.deleted
    backend.disconnect_watches()
    assert (await next_event(it)).key is None


async def test_watch_after_compaction(stores: list[ClusterStore], backend: MemoryBackend) -> None:
    a, b, _ = stores
    start = (await a.load()).revision
    await a.write_status(1)
    backend.compact()
    it = b.watch(start).__aiter__()
    ev = await next_event(it)
    assert ev.key is None and ev.revision == backend.revision
    await a.write_status(2)
    assert (await next_event(it)).key == a.key("status")


async def test_watch_ends_on_close(backend: MemoryBackend) -> None:
    kv = MemoryStore(backend, ttl=TTL)
    await kv.connect()
    events: list[WatchEvent] = []

    async def consume() -> None:
        async for ev in kv.watch("/", 0):
            events.append(ev)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    await kv.close()
    async with asyncio.timeout(2):
        await task
    assert events == []


async def test_injected_faults(stores: list[ClusterStore], backend: MemoryBackend,
                               clock: FakeClock) -> None:
    a, b, _ = stores
    assert await a.acquire_leader()
    start = (await b.load()).revision
    it = b.watch(start).__aiter__()
    first = asyncio.ensure_future(next_event(it))  # the watch is registered from here on
    await asyncio.sleep(0)
    backend.fail = True
    for call in (a.load(), a.keepalive(), a.acquire_leader(), a.touch_member({})):
        with pytest.raises(DCSError):
            await call
    clock.advance(TTL + 1)  # the server keeps expiring sessions during the outage
    with pytest.raises(DCSError):
        await b.load()
    backend.fail = False
    assert (await b.load()).leader is None
    # the watch missed the deletion: told to re-read at the next event it can see
    await b.write_status(5)
    assert (await first).key is None
    assert (await next_event(it)).key == b.key("status")
    # one partitioned client
    assert isinstance(b.kv, MemoryStore)
    b.kv.partitioned = True
    with pytest.raises(DCSError):
        await b.load()
    assert (await a.load()).optime == 5
    b.kv.partitioned = False
    await b.load()


async def test_session_revoked_server_side(
    stores: list[ClusterStore], backend: MemoryBackend
) -> None:
    a = stores[0]
    assert await a.acquire_leader()
    sid = a.kv.session_id
    assert sid is not None
    backend.revoke_session(int(sid))
    with pytest.raises(SessionExpired):
        await a.touch_member({"state": "running"})
    assert a.kv.session_id is None
    await a.touch_member({"state": "running"})  # new session
    assert "pg0" in (await a.load()).members


async def test_remove_cluster(stores: list[ClusterStore]) -> None:
    a, b, _ = stores
    other = ClusterStore(a.kv, "/service/", "other", "x")
    assert await other.claim_initialize()
    assert await a.claim_initialize()
    assert await a.acquire_leader()
    await b.touch_member({"state": "running"})
    assert await a.remove_cluster() == 3  # initialize, leader, members/pg1
    assert (await a.kv.get_prefix(a.prefix)).items == {}
    assert await a.remove_cluster() == 0
    assert (await other.load()).initialize == ""


def test_member_json_round_trip() -> None:
    member = Member(
        name="pg1",
        conn_url="postgres://10.0.0.1:5432/postgres",
        api_url="http://10.0.0.1:8008/patroni",
        role="replica",
        state="running",
        xlog_location=123456,
        timeline=3,
        replication_state="streaming",
        version="0.1.0",
        pending_restart=True,
        tags=Tags(nofailover=True, custom={"zone": "a"}),
    )
    data = member_to_json(member)
    assert data["tags"] == {"zone": "a", "nofailover": True}
    assert member_from_json("pg1", data) == member
    minimal = member_to_json(Member(name="pg2"))
    assert set(minimal) == {"conn_url", "api_url", "state", "role", "version"}
    assert member_from_json("pg2", minimal) == Member(name="pg2")
    assert member_from_json("old", {"role": "master"}).role == "primary"


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"xlog_location": "1"},
        {"xlog_location": True},
        {"timeline": 1.5},
        {"role": 3},
        {"conn_url": None},
        {"tags": []},
        {"tags": {"replicatefrom": 5}},
        {"pending_restart": "yes"},
        {"replication_state": 1},
    ],
)
def test_member_from_json_rejects_bad_types(data: object) -> None:
    with pytest.raises(ValueError):
        member_from_json("x", data)


async def test_history_is_kept_in_timeline_order(stores: list[ClusterStore]) -> None:
    s = stores[0]
    assert await s.append_history(HistoryEntry(5, 50))
    assert await s.append_history(HistoryEntry(3, 30))
    assert [e.timeline for e in await s.read_history()] == [3, 5]


async def test_a_second_live_agent_with_our_name_is_reported(
    backend: MemoryBackend, stores: list[ClusterStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Two live agents under one name take the key from each other's session: the one that
    must rebind again a key it had bound to its current session says so (CRITICAL)."""
    first = stores[0]
    assert await first.acquire_leader()
    twin_kv = MemoryStore(backend, ttl=TTL)
    async with twin_kv:
        twin = ClusterStore(twin_kv, "/service/", "demo", first.name)
        await twin.keepalive()
        seen = (await twin.load()).leader
        assert seen is not None and await twin.rebind_leader(seen.revision)
        seen = (await first.load()).leader
        assert seen is not None and await first.rebind_leader(seen.revision)  # back: first time
        assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]
        seen = (await twin.load()).leader
        assert seen is not None and await twin.rebind_leader(seen.revision)
        critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert critical and "another agent named 'pg0' is running" in critical[0]


async def test_status_fields_of_the_wrong_type_are_left_out(
        stores: list[ClusterStore], caplog: pytest.LogCaptureFixture) -> None:
    s = stores[0]
    await s.kv.put(s.key("status"), b'{"optime": 7, "slots": {"a": 1, "b": "x"}, '
                                    b'"retain_slots": "pg1"}')
    with caplog.at_level(logging.WARNING):
        view = await s.load()
    assert (view.optime, view.status_slots, view.retain_slots) == (7, {"a": 1}, ())
    assert "slots.b: expected an LSN" in caplog.text
    assert "retain_slots must be a list" in caplog.text
