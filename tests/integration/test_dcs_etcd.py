"""The DCS contract against a real etcd 3.4 (EtcdStore + ClusterStore)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aetcd
import pytest
from tests.support.etcd import EtcdCluster, EtcdServer, etcd_available, free_port

from pgha.core.model import HistoryEntry
from pgha.dcs.base import DCSError, SessionExpired, WatchEvent
from pgha.dcs.etcd import EtcdStore
from pgha.dcs.store import ClusterStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not etcd_available(), reason="etcd binary not available"),
]

TTL = 2.0
TOLERANCE = 1.5

StoreFactory = Callable[..., ClusterStore]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
async def make_store(etcd: EtcdServer) -> AsyncIterator[StoreFactory]:
    """``make_store(name, endpoints=..., ttl=...)``: a ClusterStore on a fresh EtcdStore, all
    in one scope unique to the test; every store is closed at the end."""
    scope = f"t-{uuid.uuid4().hex[:8]}"
    opened: list[EtcdStore] = []

    def factory(name: str, endpoints: list[tuple[str, int]] | None = None,
                ttl: float = TTL, timeout: float = 2.0) -> ClusterStore:
        kv = EtcdStore(endpoints or etcd.endpoints, ttl=ttl, timeout=timeout)
        opened.append(kv)
        return ClusterStore(kv, "/service/", scope, name)

    yield factory
    for kv in opened:
        await kv.close()


async def collect(it: AsyncIterator[WatchEvent], into: asyncio.Queue[WatchEvent]) -> None:
    async for event in it:
        await into.put(event)


async def wait_for_event(
    queue: asyncio.Queue[WatchEvent], pred: Callable[[WatchEvent], bool], limit: float = 10.0
) -> list[WatchEvent]:
    """Events up to and including the first matching ``pred``."""
    seen: list[WatchEvent] = []
    async with asyncio.timeout(limit):
        while True:
            event = await queue.get()
            seen.append(event)
            if pred(event):
                return seen


async def test_acquire_is_exclusive_under_concurrency(make_store: StoreFactory) -> None:
    stores = [make_store(f"pg{i}") for i in range(3)]
    for s in stores:
        await s.kv.connect()
    attempts = [stores[i % 3] for i in range(20)]
    results = await asyncio.gather(*(s.acquire_leader() for s in attempts))
    assert results.count(True) == 1
    winner = attempts[results.index(True)]
    view = await stores[0].load()
    assert view.leader is not None and view.leader.name == winner.name
    # each client used one session for all its attempts
    assert all(s.kv.session_id is not None for s in stores)
    assert await winner.acquire_leader() is False


async def test_release_only_by_owner(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    assert await b.release_leader() is False
    assert await a.release_leader() is True
    assert (await b.load()).leader is None
    assert await b.acquire_leader()


async def test_keys_vanish_when_keepalive_stops(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    await a.touch_member({"role": "primary", "state": "running"})
    await b.touch_member({"role": "replica", "state": "running"})
    t0 = time.monotonic()

    async def keep_b_alive() -> None:
        while True:
            await b.keepalive()
            await asyncio.sleep(0.4)

    keeper = asyncio.create_task(keep_b_alive())
    try:
        while True:
            view = await b.load()
            if view.leader is None and "a" not in view.members:
                break
            assert time.monotonic() - t0 < TTL + TOLERANCE, "a's keys outlived its lease"
            await asyncio.sleep(0.1)
        assert "b" in view.members  # b kept its session alive
    finally:
        keeper.cancel()
    with pytest.raises(SessionExpired):
        await a.keepalive()
    assert a.kv.session_id is None
    await a.keepalive()  # a new session
    assert await a.acquire_leader()


async def test_keepalive_holds_the_lease(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    session = a.kv.session_id
    end = time.monotonic() + TTL * 2
    while time.monotonic() < end:
        await a.keepalive()
        await asyncio.sleep(0.5)
    view = await b.load()
    assert view.leader is not None and view.leader.name == "a"
    assert a.kv.session_id == session


async def test_close_removes_ephemeral_keys_at_once(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    assert await a.claim_initialize()
    await a.kv.close()
    view = await b.load()
    assert view.leader is None and view.members == {}
    assert view.initialize == ""
    with pytest.raises(DCSError):
        await a.load()


async def test_cas_conflicts(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.create_config({"ttl": 20})
    assert await b.create_config({"ttl": 30}) is False
    key = a.key("config")
    rev = (await a.kv.get_prefix(key)).items[key].revision
    assert await a.write_config({"ttl": 21}, if_revision=rev)
    assert await b.write_config({"ttl": 22}, if_revision=rev) is False
    assert (await b.load()).settings.ttl == 21.0
    kv = a.kv
    k = a.key("x")
    assert await kv.put(k, b"1", if_revision=0)
    assert await kv.put(k, b"2", if_revision=0) is False
    rev = (await kv.get_prefix(k)).items[k].revision
    assert await kv.delete(k, if_value=b"2") is False
    assert await kv.delete(k, if_revision=rev + 1) is False
    assert await kv.delete(k, if_value=b"1", if_revision=rev)
    assert await kv.delete(k) is False
    # initialize and history
    assert await a.claim_initialize()
    assert await b.claim_initialize() is False
    assert await b.set_initialize("7300000000000000001")
    assert await a.set_initialize("7300000000000000002") is False
    assert await a.cancel_initialize() is False
    results = await asyncio.gather(a.append_history(HistoryEntry(1, 100, "r", "t")),
                                   b.append_history(HistoryEntry(2, 200, "r", "t", "b")))
    assert list(results) == [True, True]
    assert [e.timeline for e in await a.read_history()] == [1, 2]


async def test_garbage_values_are_ignored(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_store("a")
    await a.touch_member({"role": "replica", "state": "running", "timeline": 2})
    await a.kv.put(a.key("members/junk"), b"\x00\x01 not json")
    await a.kv.put(a.key("members/typed"), b'{"timeline": "two"}')
    await a.kv.put(a.key("history"), b'"nope"')
    await a.kv.put(a.key("config"), b'{"ttl": "x"}')  # ill-typed setting keeps its default
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        view = await a.load()
    assert set(view.members) == {"a"} and view.members["a"].timeline == 2
    assert view.history == () and view.settings.ttl == 30.0
    text = caplog.text
    assert a.key("members/junk") in text and a.key("members/typed") in text
    assert a.key("history") in text


async def test_watch_sees_leader_deleted(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    view = await b.load()
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watcher = asyncio.create_task(collect(b.watch(view.revision), queue))
    try:
        assert await a.release_leader()
        seen = await wait_for_event(queue, lambda e: e.key == a.key("leader"))
        assert seen[-1].deleted and seen[-1].revision > view.revision
        await a.write_status(7)
        seen = await wait_for_event(queue, lambda e: e.key == a.key("status"))
        assert not seen[-1].deleted
    finally:
        watcher.cancel()


async def test_watch_ends_when_store_closes(make_store: StoreFactory) -> None:
    b = make_store("b")
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watcher = asyncio.create_task(collect(b.watch((await b.load()).revision), queue))
    await asyncio.sleep(0.3)
    await b.kv.close()
    async with asyncio.timeout(5):
        await watcher


async def test_watch_after_compaction(make_store: StoreFactory, etcd: EtcdServer) -> None:
    a, b = make_store("a"), make_store("b")
    start = (await a.load()).revision
    await a.write_status(1)
    await a.write_status(2)
    host, port = etcd.endpoints[0]
    async with aetcd.Client(host, port) as raw:
        current = (await raw.get_prefix(b"/")).header.revision
        await raw.compact(current)
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watcher = asyncio.create_task(collect(b.watch(start), queue))
    try:
        first = await wait_for_event(queue, lambda e: True)
        assert first[0].key is None and first[0].revision >= current
        await a.write_status(3)
        await wait_for_event(queue, lambda e: e.key == a.key("status"))
    finally:
        watcher.cancel()


async def test_next_endpoint_after_connection_error(make_store: StoreFactory,
                                                    etcd: EtcdServer) -> None:
    dead = ("127.0.0.1", free_port())
    a = make_store("a", endpoints=[dead, *etcd.endpoints])
    assert isinstance(a.kv, EtcdStore)
    with pytest.raises(DCSError):
        await a.load()
    assert a.kv.endpoint == etcd.endpoints[0]
    await a.load()
    assert await a.acquire_leader()
    assert a.kv.endpoint == etcd.endpoints[0]  # a good endpoint is kept


async def test_client_survives_etcd_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.dcs")
    async with EtcdServer() as server:
        a = ClusterStore(EtcdStore(server.endpoints, ttl=3, timeout=1.5), "/service/", "r", "a")
        b = ClusterStore(EtcdStore(server.endpoints, ttl=3, timeout=1.5), "/service/", "r", "b")
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watcher: asyncio.Task[None] | None = None
        try:
            assert await a.acquire_leader()
            view = await b.load()
            watcher = asyncio.create_task(collect(b.watch(view.revision), queue))
            await a.write_status(1)
            await wait_for_event(queue, lambda e: e.key == a.key("status"))

            await server.astop()
            with pytest.raises(DCSError):
                await a.keepalive()
            with pytest.raises(DCSError):
                await b.load()
            await server.astart()

            # the session may have survived the restart or not; either way a working one
            # is available within a few attempts
            deadline = time.monotonic() + 15
            while True:
                try:
                    await a.keepalive()
                    break
                except DCSError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            await a.touch_member({"state": "running"})
            view = await b.load()
            assert "a" in view.members

            await a.write_status(2)
            seen = await wait_for_event(
                queue, lambda e: e.key == a.key("status"), limit=20
            )
            keys = [e.key for e in seen]
            assert None in keys, keys  # told to re-read after the reconnect
        finally:
            if watcher is not None:
                watcher.cancel()
            await a.kv.close()
            await b.kv.close()


async def test_cluster_member_loss() -> None:
    async with EtcdCluster(3) as cluster:
        store = ClusterStore(EtcdStore(cluster.endpoints, ttl=3, timeout=2), "/service/", "c", "a")
        try:
            assert await store.acquire_leader()
            first = store.kv.endpoint  # type: ignore[attr-defined]
            index = cluster.endpoints.index(first)
            cluster.members[index].kill()
            # the survivors may first have to elect a new raft leader (etcd refuses requests
            # without one): keep retrying, as the agent does, for a bounded time
            ok = False
            deadline = asyncio.get_running_loop().time() + 15
            while not ok and asyncio.get_running_loop().time() < deadline:
                try:
                    await store.keepalive()
                    ok = True
                except DCSError:
                    await asyncio.sleep(0.2)
            assert ok
            assert store.kv.endpoint != first  # type: ignore[attr-defined]
            view = await store.load()
            assert view.leader is not None and view.leader.name == "a"
            await cluster.members[index].astart()
            await store.keepalive()
        finally:
            await store.kv.close()
