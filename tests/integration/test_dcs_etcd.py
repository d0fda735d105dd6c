"""etcd-specific behaviour of EtcdStore against a real etcd 3.4: lease lapse and renewal,
``if_revision=0``, watch after compaction, endpoint failover, loss of a cluster member, a call
in flight on a client another task drops.

The behaviour every backend shares (locking, expiry, close, compare-and-set, watch, restart,
garbage values, get_prefix, initialize) is in ``test_dcs_contract.py``, which runs against etcd
among the other servers.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aetcd
import pytest
from tests.support.etcd import EtcdCluster, EtcdServer, etcd_available, free_port

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



async def test_lapsed_lease_raises_session_expired_then_renews(make_store: StoreFactory) -> None:
    """A lease etcd dropped is reported once as SessionExpired and forgotten; the next
    keepalive grants a new one."""
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    old = a.kv.session_id
    async with asyncio.timeout(TTL + TOLERANCE + 1):
        while True:  # until etcd dropped the lease
            if (await b.load()).leader is None:
                break
            await asyncio.sleep(0.1)
    with pytest.raises(SessionExpired):
        await a.keepalive()
    assert a.kv.session_id is None
    await a.keepalive()  # a new lease
    assert a.kv.session_id not in (None, old)
    assert await a.acquire_leader()


async def test_put_if_revision_zero_means_absent(make_store: StoreFactory) -> None:
    a = make_store("a")
    k = a.key("x")
    assert await a.kv.put(k, b"1", if_revision=0)
    assert await a.kv.put(k, b"2", if_revision=0) is False
    assert (await a.kv.get_prefix(k)).items[k].value == b"1"

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


async def test_call_in_flight_on_a_dropped_client_fails_with_dcs_error() -> None:
    """The endpoint hangs (SIGSTOP) under two concurrent calls: the first times out and drops
    the shared client, whose channel close makes grpc.aio cancel the second call locally. The
    second task was not cancelled, so it must get DCSError, not CancelledError (the "stray
    cancellation" that used to end the agent's decision loop)."""
    async with EtcdServer() as server:
        kv = EtcdStore(server.endpoints, ttl=5, timeout=1.0)
        await kv.connect()
        assert server.proc is not None
        try:
            await kv.keepalive()

            async def later(delay: float, call: Callable[[], Awaitable[object]]) -> object:
                await asyncio.sleep(delay)
                return await call()

            server.proc.send_signal(signal.SIGSTOP)
            try:
                results = await asyncio.gather(
                    later(0.0, lambda: kv.get_prefix("/x/")), later(0.3, kv.keepalive),
                    return_exceptions=True)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert [type(r) for r in results] == [DCSError, DCSError], results
            assert "timed out" in str(results[0])
            assert "connection was closed" in str(results[1])
            await kv.keepalive()  # a new client, same lease

            # a real cancellation still cancels
            server.proc.send_signal(signal.SIGSTOP)
            try:
                task = asyncio.create_task(kv.get_prefix("/x/"))
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                server.proc.send_signal(signal.SIGCONT)
        finally:
            await kv.close()
