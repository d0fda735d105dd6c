"""ZooKeeperStore against a real standalone ZooKeeper 3.8 (tickTime 250 ms).

Besides the backend-parametrized contract suite (tests/integration/test_dcs_contract.py), these
tests cover what is specific to ZooKeeper: session timeout negotiation, kazoo's background pings
(kept for clients that hold no lease, suppressed once a session is used as a lease), the death
of a client *process* (SIGKILL: its socket closes, its session is not closed and must expire)
and of a stuck event loop (process and kazoo threads alive), endpoint failover and a server
restart. Every test also asserts that the event loop is never blocked: a heartbeat task ticks
every 50 ms and no gap may reach 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from tests.support.zookeeper import ZooKeeperServer, free_port, zookeeper_unavailable

from pgha.core.model import HistoryEntry
from pgha.dcs.base import DCSError, SessionExpired, WatchEvent
from pgha.dcs.store import ClusterStore
from pgha.dcs.zookeeper import ZooKeeperStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(zookeeper_unavailable() is not None,
                       reason=str(zookeeper_unavailable())),
]

TTL = 3.0
TOLERANCE = 1.5
SRC = str(Path(__file__).resolve().parents[2] / "src")

StoreFactory = Callable[..., ClusterStore]
T = TypeVar("T")


@pytest.fixture(scope="module")
def zk() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture(autouse=True)
async def loop_never_blocked() -> AsyncIterator[None]:
    """A 50 ms heartbeat runs during the whole test; its largest gap must stay under 0.5 s."""
    gaps: list[float] = []
    last = [time.monotonic()]

    async def beat() -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now

    task = asyncio.create_task(beat())
    yield
    task.cancel()
    gaps.append(time.monotonic() - last[0])
    assert max(gaps) < 0.5, f"event loop blocked for {max(gaps):.3f}s"


@pytest.fixture
async def make_store(zk: ZooKeeperServer) -> AsyncIterator[StoreFactory]:
    """``make_store(name, hosts=..., ttl=...)``: a ClusterStore on a fresh ZooKeeperStore (not
    yet connected), all in one scope unique to the test; every store is closed at the end."""
    scope = f"t-{uuid.uuid4().hex[:8]}"
    opened: list[ZooKeeperStore] = []

    def factory(name: str, hosts: list[tuple[str, int]] | None = None,
                ttl: float = TTL, timeout: float = 2.0, scope_: str = scope) -> ClusterStore:
        kv = ZooKeeperStore(hosts or zk.hosts, ttl=ttl, timeout=timeout)
        opened.append(kv)
        return ClusterStore(kv, "/service/", scope_, name)

    factory.scope = scope  # type: ignore[attr-defined]
    yield factory
    for kv in opened:
        await kv.close()


async def connected(*stores: ClusterStore) -> None:
    for s in stores:
        await s.kv.connect()


async def collect(it: AsyncIterator[WatchEvent], into: asyncio.Queue[WatchEvent]) -> None:
    try:
        async for event in it:
            await into.put(event)
    except Exception as exc:  # handed to wait_for_event
        into.put_nowait(exc)  # type: ignore[arg-type]


async def wait_for_event(queue: asyncio.Queue[WatchEvent], pred: Callable[[WatchEvent], bool],
                         limit: float = 10.0) -> list[WatchEvent]:
    """Events up to and including the first matching ``pred``."""
    seen: list[WatchEvent] = []
    try:
        async with asyncio.timeout(limit):
            while True:
                seen.append(await queue.get())
                if isinstance(seen[-1], Exception):
                    raise AssertionError(f"the watch failed: {seen[-1]!r}") from seen[-1]
                if pred(seen[-1]):
                    return seen
    except TimeoutError:
        raise AssertionError(f"no matching watch event within {limit}s; saw {seen}") from None


async def retry(fn: Callable[[], Awaitable[T]], limit: float = 15.0) -> T:
    """``await fn()`` until it does not raise DCSError (AssertionError after ``limit`` s)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await fn()
        except DCSError as exc:
            assert time.monotonic() < deadline, f"still failing after {limit}s: {exc!r}"
            await asyncio.sleep(0.2)


async def keep_alive(store: ClusterStore, interval: float = 0.3) -> None:
    while True:
        with contextlib.suppress(DCSError):
            await store.keepalive()
        await asyncio.sleep(interval)


async def wait_gone(observer: ClusterStore, name: str, limit: float) -> float:
    """Seconds until neither the leader key nor the member key of ``name`` is visible."""
    t0 = time.monotonic()
    while True:
        view = await observer.load()
        if (view.leader is None or view.leader.name != name) and name not in view.members:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit, f"{name}'s keys still there after {limit}s"
        await asyncio.sleep(0.05)


# A client in a process of its own: acquires the leader key and its member key, prints "ready",
# then either keeps renewing until it is SIGKILLed ("renew") or blocks its event loop ("stuck",
# kazoo's threads keep running) and afterwards reports what its next keepalive says.
CHILD = """
import asyncio, sys, time
from pgha.dcs.store import ClusterStore
from pgha.dcs.zookeeper import ZooKeeperStore
port, scope, mode, ttl = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
async def main():
    kv = ZooKeeperStore([("127.0.0.1", port)], ttl=ttl, timeout=2.0)
    await kv.connect()
    s = ClusterStore(kv, "/service/", scope, "child")
    assert await s.acquire_leader()
    await s.touch_member({"state": "running", "role": "primary"})
    await s.keepalive()
    print("ready", flush=True)
    if mode == "stuck":
        time.sleep(3 * ttl)  # the whole event loop is stuck, the process is alive
        try:
            await s.keepalive()
            print("renewed", flush=True)
        except Exception as exc:
            print(type(exc).__name__, flush=True)
        await kv.close()
        return
    while True:
        await s.keepalive()
        await asyncio.sleep(0.2)
asyncio.run(main())
"""


async def spawn_child(zk: ZooKeeperServer, scope: str, mode: str
                      ) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(zk.port), scope, mode, str(TTL),
        stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    assert line.strip() == b"ready", line
    return proc


# -- sessions -------------------------------------------------------------------------------


async def test_session_timeout_negotiation(zk: ZooKeeperServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    kv = ZooKeeperStore(zk.hosts, ttl=TTL, timeout=2)
    big = ZooKeeperStore(zk.hosts, ttl=120, timeout=2)  # asks 80 s, the server allows 60 s
    small = ZooKeeperStore(zk.hosts, ttl=0.6, timeout=2)  # asks 0.4 s, the server grants 0.5 s
    try:
        with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
            for store in (kv, big, small):
                await store.connect()
                await store.keepalive()
        assert kv.session_ttl == pytest.approx(TTL * 2 / 3, abs=0.002)
        assert big.session_ttl == pytest.approx(60.0)
        assert small.session_ttl == pytest.approx(0.5)
        assert "granted a 0.500s session" in caplog.text
    finally:
        for store in (kv, big, small):
            await store.close()


async def test_pings_only_without_a_lease(make_store: StoreFactory) -> None:
    """A client that never adopted its session (a reader) is kept alive by kazoo's pings; once
    the session is used as a lease only explicit requests renew it."""
    reader, leaser = make_store("reader"), make_store("leaser")
    await connected(reader, leaser)
    await reader.load()
    session = reader.kv._current_session()  # type: ignore[attr-defined]
    await leaser.keepalive()
    await asyncio.sleep(reader.kv.session_ttl * 2 + 0.5)
    assert reader.kv._current_session() == session  # type: ignore[attr-defined]
    await reader.load()
    with pytest.raises(SessionExpired):
        await leaser.keepalive()
    assert leaser.kv.session_id is None
    await leaser.keepalive()  # a new session
    assert leaser.kv.session_id is not None
    assert await leaser.acquire_leader()


async def test_killed_client_process_loses_its_keys(zk: ZooKeeperServer,
                                                    make_store: StoreFactory) -> None:
    observer = make_store("observer")
    await connected(observer)
    proc = await spawn_child(zk, make_store.scope, "renew")  # type: ignore[attr-defined]
    try:
        view = await observer.load()
        assert view.leader is not None and view.leader.name == "child"
        assert view.members["child"].role == "primary"
        await asyncio.sleep(1.0)  # the child renews meanwhile
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await proc.wait()
        gone = await wait_gone(observer, "child", TTL + TOLERANCE)
        # the child renewed at most ~0.2 s before it was killed; its session may not expire
        # before session_ttl (2 s) after that renewal
        assert gone > TTL * 2 / 3 - 0.5
        print(f"\nephemeral keys gone {gone:.2f}s after SIGKILL (ttl {TTL})")
        assert await observer.acquire_leader()
        assert time.monotonic() - killed < TTL + TOLERANCE
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_stuck_event_loop_lets_the_session_expire(zk: ZooKeeperServer,
                                                        make_store: StoreFactory) -> None:
    observer = make_store("observer")
    await connected(observer)
    proc = await spawn_child(zk, make_store.scope, "stuck")  # type: ignore[attr-defined]
    try:
        gone = await wait_gone(observer, "child", TTL + TOLERANCE)
        assert proc.returncode is None  # still alive, only its loop is stuck
        print(f"\nkeys of a stuck client gone after {gone:.2f}s (ttl {TTL})")
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert line.strip() == b"SessionExpired"
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_abandoned_client_and_closed_client(make_store: StoreFactory) -> None:
    a, b, c = make_store("a"), make_store("b"), make_store("c")
    await connected(a, b, c)
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    await c.touch_member({"state": "running"})
    await a.keepalive()  # last renewal; then a is simply never used again
    await c.kv.close()
    view = await b.load()
    assert "c" not in view.members  # closing removes the keys at once
    assert view.leader is not None and view.leader.name == "a" and "a" in view.members
    gone = await wait_gone(b, "a", TTL + TOLERANCE)
    print(f"\nkeys of an abandoned client gone {gone:.2f}s after its last keepalive")
    with pytest.raises(SessionExpired):
        await a.keepalive()


# -- key/value semantics ---------------------------------------------------------------------


async def test_acquire_is_exclusive_under_concurrency(make_store: StoreFactory) -> None:
    stores = [make_store(f"pg{i}") for i in range(3)]
    await connected(*stores)
    attempts = [stores[i % 3] for i in range(20)]
    results = await asyncio.gather(*(s.acquire_leader() for s in attempts))
    assert results.count(True) == 1
    winner = attempts[results.index(True)]
    view = await stores[0].load()
    assert view.leader is not None and view.leader.name == winner.name
    assert await winner.acquire_leader() is False
    leader = winner.key("leader")
    kv = (await stores[1].kv.get_prefix(leader)).items[leader]
    assert kv.ephemeral and kv.value == winner.name.encode()


async def test_cas_conflicts_and_owner_change(make_store: StoreFactory) -> None:
    a, b = make_store("a"), make_store("b")
    await connected(a, b)
    k = a.key("x")
    assert await a.kv.put(k, b"1", if_revision=0)
    assert await b.kv.put(k, b"2", if_revision=0) is False
    rev = (await a.kv.get_prefix(k)).items[k].revision
    assert await a.kv.put(k, b"3", if_revision=rev)
    assert await b.kv.put(k, b"4", if_revision=rev) is False
    assert await b.kv.delete(k, if_revision=rev) is False
    assert await b.kv.delete(k, if_value=b"1") is False
    # a persistent key rewritten as ephemeral changes owner atomically, and back
    assert await a.kv.put(k, b"5", ephemeral=True)
    item = (await b.kv.get_prefix(k)).items[k]
    assert item.ephemeral and item.value == b"5"
    assert await b.kv.put(k, b"6")
    item = (await a.kv.get_prefix(k)).items[k]
    assert not item.ephemeral and item.value == b"6"
    assert await a.kv.delete(k, if_value=b"6", if_revision=item.revision)
    assert await a.kv.delete(k) is False
    # domain operations
    assert await a.claim_initialize()
    assert await b.claim_initialize() is False
    assert await b.set_initialize("7300000000000000001")
    assert await a.set_initialize("7300000000000000002") is False
    results = await asyncio.gather(a.append_history(HistoryEntry(1, 100, "r", "t")),
                                   b.append_history(HistoryEntry(2, 200, "r", "t", "b")))
    assert list(results) == [True, True]
    assert [e.timeline for e in await a.read_history()] == [1, 2]
    # directories are not keys, even once empty
    await a.touch_member({"state": "running"})
    await a.kv.close()
    snap = await b.kv.get_prefix(b.prefix)
    assert not any(key.endswith("/members") for key in snap.items), snap.items


async def test_garbage_values_are_ignored(make_store: StoreFactory,
                                          caplog: pytest.LogCaptureFixture) -> None:
    a = make_store("a")
    await connected(a)
    await a.touch_member({"role": "replica", "state": "running", "timeline": 2})
    await a.kv.put(a.key("members/junk"), b"\x00\x01 not json")
    await a.kv.put(a.key("history"), b'"nope"')
    await a.kv.put(a.key("config"), b"{")
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        view = await a.load()
    assert set(view.members) == {"a"} and view.history == () and view.config is None
    assert a.key("members/junk") in caplog.text and a.key("history") in caplog.text


# -- watch ------------------------------------------------------------------------------------


async def test_watch_sees_leader_deleted_and_expired(make_store: StoreFactory) -> None:
    a, b, c = make_store("a"), make_store("b"), make_store("c")
    await connected(a, b, c)
    assert await a.acquire_leader()
    view = await b.load()
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watcher = asyncio.create_task(collect(b.watch(view.revision), queue))
    try:
        assert await a.release_leader()
        seen = await wait_for_event(queue, lambda e: e.key in (None, a.key("leader")))
        assert seen[-1].key is None or seen[-1].deleted
        await c.touch_member({"state": "running"})  # a new directory and key
        await wait_for_event(queue, lambda e: e.key == c.key("members/c"))
        await c.keepalive()  # c's session is a lease now: left alone, it expires
        seen = await wait_for_event(queue, lambda e: e.key == c.key("members/c"),
                                    limit=TTL + TOLERANCE)
        assert seen[-1].deleted and seen[-1].revision > view.revision
    finally:
        watcher.cancel()


async def test_watch_ends_when_store_closes(make_store: StoreFactory) -> None:
    b = make_store("b")
    await connected(b)
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watcher = asyncio.create_task(collect(b.watch((await b.load()).revision), queue))
    await asyncio.sleep(0.3)
    await b.kv.close()
    async with asyncio.timeout(5):
        await watcher


# -- endpoints and server restart ---------------------------------------------------------------


async def test_dead_endpoint_in_hosts_list(zk: ZooKeeperServer, make_store: StoreFactory) -> None:
    dead = ("127.0.0.1", free_port())
    for hosts in ([dead, *zk.hosts], [*zk.hosts, dead]):
        a = make_store("a", hosts=hosts, timeout=4.0)
        await connected(a)
        await a.keepalive()
        assert await a.acquire_leader()
        assert await a.release_leader()


async def test_hung_server_is_detected() -> None:
    """A server that stops answering (SIGSTOP: connections stay open) fails calls after
    ``timeout``; kazoo is made to drop the silent connection (its own pings are off for a
    leased session) and reconnects once the server answers again."""
    async with ZooKeeperServer() as server:
        a = ClusterStore(ZooKeeperStore(server.hosts, ttl=TTL, timeout=1.0), "/service/", "h", "a")
        try:
            await connected(a)
            assert await a.acquire_leader()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(DCSError):
                    await a.keepalive()
                assert time.monotonic() - t0 < 1.5
                dropped_by = time.monotonic() + 2  # kazoo noticed (it got told) the dead socket
                while a.kv._client.connected:  # type: ignore[attr-defined]
                    assert time.monotonic() < dropped_by
                    await asyncio.sleep(0.05)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            await retry(a.keepalive)  # the session may have expired: then a new one is adopted
            await a.touch_member({"state": "running"})
            assert "a" in (await a.load()).members
        finally:
            await a.kv.close()


async def test_client_survives_server_restart() -> None:
    async with ZooKeeperServer() as server:
        a = ClusterStore(ZooKeeperStore(server.hosts, ttl=TTL, timeout=1.5), "/service/", "r", "a")
        b = ClusterStore(ZooKeeperStore(server.hosts, ttl=TTL, timeout=1.5), "/service/", "r", "b")
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watcher: asyncio.Task[None] | None = None
        keeper: asyncio.Task[None] | None = None
        try:
            await connected(a, b)
            assert await a.acquire_leader()
            view = await b.load()
            watcher = asyncio.create_task(collect(b.watch(view.revision), queue))
            await a.write_status(1)
            # reported as such, or (a reconnect on a loaded machine) folded into a re-read
            # notice
            await wait_for_event(queue, lambda e: e.key in (a.key("status"), None))
            assert (await retry(b.load)).optime == 1

            await server.astop()
            with pytest.raises(DCSError):
                await a.keepalive()
            with pytest.raises(DCSError):
                await b.load()
            await server.astart()

            # the session survived (within its timeout) or a new one is adopted; b's client
            # reconnects on its own schedule
            await retry(a.keepalive)
            keeper = asyncio.create_task(keep_alive(a))  # as the agent does
            await a.touch_member({"state": "running"})
            assert "a" in (await retry(b.load)).members
            # told to re-read after the reconnect (a change racing that re-read may be
            # reported by it only), then changes are reported one by one again
            await wait_for_event(queue, lambda e: e.key is None)
            await asyncio.sleep(0.5)
            await a.write_status(2)
            await wait_for_event(queue, lambda e: e.key == a.key("status"))
        finally:
            for task in (watcher, keeper):
                if task is not None:
                    task.cancel()
            await a.kv.close()
            await b.kv.close()
